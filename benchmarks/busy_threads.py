"""CPU threads on an idle and on a busy machine: does the default collapse?

Trains the embedded EMT demo with a PNA 64 × 3 (``matgnn train --set model.name=pna``, 4 epochs)
through the installed ``matgnn`` command, idle and while another job runs (a 2-thread matrix
product loop, like a second training), under: torch's default OpenMP spin-waiting on all cores
(``OMP_WAIT_POLICY=ACTIVE``), yielding threads (``PASSIVE``), one thread, and matgnn's own
default (no variable set: the command picks PASSIVE when another task is runnable as it starts); and
``python_api_default``: the same training through the Python API (``train(cfg)`` in a process that imported
torch first, so its threads spin; a run that starts beside other work trains on the cores left over).
Metric: the median seconds of epochs 2..4 (epoch 1 warms up), per scenario; each scenario twice.

    python benchmarks/busy_threads.py          # ~3 min on 2 cores -> results/busy_threads.json
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import target, write_result  # noqa: E402

MATGNN = str(Path(sys.executable).parent / "matgnn")
SCENARIOS = {"spin_all_cores": {"OMP_WAIT_POLICY": "ACTIVE"}, "yield_all_cores": {"OMP_WAIT_POLICY": "PASSIVE"},
             "one_thread": {"OMP_NUM_THREADS": "1"}, "matgnn_default": {}, "python_api_default": {"API": "1"}}
#: the same training through the Python API, torch imported first (as in a notebook: its threads spin)
API = """
import sys, torch
from rich.console import Console
from matgnn.config import RunConfig
from matgnn.training.run import train
cfg = RunConfig().with_overrides(["train.epochs=4", "model.name=pna", "train.tensorboard=false",
                                  f"output_dir={sys.argv[1]}"])
train(cfg, progress=False, console=Console(stderr=False, width=200))
"""
COMPETITOR = "import torch\nx = torch.randn(600, 600)\nwhile True:\n    x @ x\n"


def epoch_seconds(env: dict[str, str], work: Path) -> float:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    full.update(env, MATGNN_CACHE_DIR=str(work / "cache"))
    threads = ["--set", "train.threads=1"] if env.get("OMP_NUM_THREADS") == "1" else []
    command = ([sys.executable, "-c", API, str(work / "runs")] if env.get("API") else
               [MATGNN, "train", "--epochs", "4", "--set", "model.name=pna", "--set", "train.tensorboard=false",
                "--output-dir", str(work / "runs"), *threads])
    out = subprocess.run(command, env=full, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(out.stdout + out.stderr)
    secs = [float(m) for m in re.findall(r"^epoch \d+/\d+ .* ([\d.]+) s$", out.stdout + out.stderr, re.M)]
    return statistics.median(secs[1:])


def main() -> None:
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="busy-threads-"))
    epoch_seconds({}, work)  # graph cache built once
    metrics: dict[str, float] = {}
    for load in ("idle", "busy"):
        comp = None
        if load == "busy":
            comp = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=dict(os.environ, OMP_NUM_THREADS="2"))
            time.sleep(2)
        try:
            for name, env in SCENARIOS.items():
                runs = [epoch_seconds(env, work) for _ in range(2)]
                metrics[f"{load}.{name}.epoch_s_median"] = round(statistics.median(runs), 3)
                metrics[f"{load}.{name}.epoch_s_worst"] = round(max(runs), 3)
                print(load, name, runs, flush=True)
        finally:
            if comp is not None:
                comp.kill()
    slow = metrics["busy.matgnn_default.epoch_s_worst"] / metrics["idle.matgnn_default.epoch_s_median"]
    metrics["busy_over_idle.matgnn_default"] = round(slow, 2)
    metrics["busy_over_idle.spin_all_cores"] = round(metrics["busy.spin_all_cores.epoch_s_worst"]
                                                     / metrics["idle.spin_all_cores.epoch_s_median"], 2)
    api = metrics["busy.python_api_default.epoch_s_worst"] / metrics["idle.python_api_default.epoch_s_median"]
    metrics["busy_over_idle.python_api_default"] = round(api, 2)
    write_result("busy_threads", started,
                 data={"source": "emt (embedded demo, 1,000 structures)", "model": "pna 64 x 3, 4 epochs",
                       "competitor": "a 2-thread 600x600 matrix-product loop (OMP_NUM_THREADS=2)"},
                 metrics=metrics, anchors={},
                 targets={"busy_over_idle.matgnn_default": target(2.0, "<=", slow),
                          "busy_over_idle.python_api_default": target(2.0, "<=", api)})


if __name__ == "__main__":
    main()
