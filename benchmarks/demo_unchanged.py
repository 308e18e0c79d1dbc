"""``make demo`` (``matgnn train`` on the embedded EMT alloy set) trained by this commit's code and by an earlier
commit's code on this machine, every validation and test metric compared: a refactoring that should change
nothing must give the same numbers.

Both runs use one thread (``OMP_NUM_THREADS=1``). With two threads the demo's numbers vary from run to run of the
same code on a busy machine (measured: 0.00922 and 0.00938 eV/atom test MAE from one commit), so only one thread
compares code, not scheduling. The earlier commit's code runs from a temporary git worktree (its ``src`` first on
``PYTHONPATH``, the installed ``matgnn`` executable).

Usage: python benchmarks/demo_unchanged.py --reference-from COMMIT
Writes benchmarks/results/demo_unchanged.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, target, write_result  # noqa: E402


def demo(src: Path, folder: Path) -> dict:
    folder.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(src), MATGNN_CACHE_DIR=str(folder / "cache"))
    matgnn = Path(sys.executable).parent / "matgnn"
    t0 = time.perf_counter()
    subprocess.run([str(matgnn), "-q", "train"], cwd=folder, env=env, check=True)
    (metrics,) = (folder / "runs").glob("*/metrics.json")
    m = json.loads(metrics.read_text())
    m["_seconds"] = time.perf_counter() - t0
    return m


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reference-from", required=True, metavar="COMMIT")
    args = p.parse_args()
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="demo-unchanged-"))
    tree = work / "reference"
    subprocess.run(["git", "worktree", "add", "--detach", "-f", str(tree), args.reference_from], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        ref = demo(tree / "src", work / "then")
        now = demo(ROOT / "src", work / "now")
        commit = subprocess.check_output(["git", "rev-parse", args.reference_from], cwd=ROOT, text=True).strip()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    keys = sorted(k for k in ref if k.startswith(("val.", "test.")) and isinstance(ref[k], (int, float)))
    differing = [k for k in keys if ref[k] != now.get(k)]
    metrics = {"now.test.mixing_energy.mae": now["test.mixing_energy.mae"],
               "before.test.mixing_energy.mae": ref["test.mixing_energy.mae"],
               "metrics_compared": len(keys), "metrics_differing": len(differing),
               "now.epochs_run": now["epochs_run"], "before.epochs_run": ref["epochs_run"]}
    write_result("demo_unchanged", started,
                 data={"reference_commit": commit, "job": "matgnn train (the embedded default, make demo)",
                       "threads": 1, "differing": differing},
                 metrics=metrics, anchors={},
                 targets={"metrics_differing": target(0, "<=", len(differing))})
    print(f"{len(keys)} metrics compared, {len(differing)} differ: {differing}")


if __name__ == "__main__":
    main()
