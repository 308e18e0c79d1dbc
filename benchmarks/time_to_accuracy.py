"""Time to accuracy on MEGNet-MP at 10,000 training structures: validation MAE against training seconds for the
default model and the ALIGNN-style family, beside ALIGNN's own release, on CPU.

Data and split are those of ``benchmarks/alignn_compare_megnet.py``: the JARVIS leaderboard's MEGNet-MP task
(``megnet_e_form``, eV/atom, by default), a seed-42 subset of 10,000 of its training ids, 1,000 of its validation
ids, all 2,238 held test ids. Each family trains through ``matgnn train`` (a subprocess, as users run it) at its
defaults (the default model: a config without a model section; ``alignn``: ``model: {name: alignn}``; the
training defaults: L1 loss, at most 100 epochs, early stopping after 20 without improvement) with one CPU thread
and a time budget (``train.max_minutes``, ``--minutes``; the schedule is planned over the epochs that fit it). The curve is each epoch's validation MAE against the seconds trained so far (the run's
``history.csv``: each epoch's seconds, its validation pass included). The families run side by side, one thread
each, so each has one of the two cores.

ALIGNN's release trains at about 2 MP structures per second on one thread, so one epoch of 10,000 takes about an
hour and a half; its curve is the point of its one-epoch run in ``results/alignn_compare_megnet_10k.json`` (same
split, ALIGNN 2026.8.11 through its own ``train_alignn.py``, 4 + 4 layers at width 256; quoted as an anchor with
that file's commit and hardware, not rerun here): the training seconds of that epoch and the validation MAE after
it. Each of our curves then says when it first reached that validation MAE. When that file was measured on another
CPU than this run, the seconds compare across machines: ``hardware`` of both files says which.

Usage: python benchmarks/time_to_accuracy.py [--minutes 20] [--task megnet_e_form] [--families default,alignn]
Writes benchmarks/results/time_to_accuracy.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, write_result  # noqa: E402
from alignn_compare import _matgnn_command  # noqa: E402
from alignn_compare_megnet import subsets  # noqa: E402
from mp_megnet import UNITS, source_config  # noqa: E402

OUT = ROOT / "benchmarks" / "runs" / "time_to_accuracy"
ALIGNN_RESULT = ROOT / "benchmarks" / "results" / "alignn_compare_megnet_10k.json"
#: family -> its model section (None: the default model, no model section)
FAMILIES = {"default": None, "alignn": {"name": "alignn"}}


def split(n_train: int = 10_000, n_val: int = 1_000) -> tuple[str, Path, dict[str, list[str]]]:
    """alignn_compare_megnet.py's subsets: the data file, the ids file and the ids."""
    data, parts = subsets(n_train, n_val)
    OUT.mkdir(parents=True, exist_ok=True)
    split_file = OUT / f"split_{n_train}_{n_val}.json"
    split_file.write_text(json.dumps(parts))
    return data, split_file, parts


def train_curve(family: str, task: str, data: str, split_file: Path, minutes: float) -> dict:
    """One ``matgnn train`` of ``family`` within ``minutes``: its curve, test MAE, epochs and model."""
    import yaml

    cfg = {"source": source_config(data), "graphs": {"cutoff": 8.0, "max_neighbors": 12},
           "targets": [{"name": task, "level": "graph"}],
           "train": {"max_minutes": minutes, "threads": 1, "tensorboard": False},
           "split": {"kind": "ids", "ids_file": str(split_file)},
           "output_dir": str(OUT / "runs"), "name": f"{task}-{family}-{minutes:g}min"}
    if FAMILIES[family] is not None:
        cfg["model"] = FAMILIES[family]
    path = OUT / f"{task}-{family}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="1000")
    t0 = time.perf_counter()
    proc = subprocess.run([*_matgnn_command(), "train", str(path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{family}: matgnn train failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    run = Path(re.search(r"run folder: (\S+)", proc.stdout + proc.stderr).group(1))
    rows = list(csv.DictReader(open(run / "history.csv")))
    seconds = np.cumsum([float(r["seconds"]) for r in rows])
    curve = [[round(float(s), 2), float(r[f"val_mae.{task}"])] for s, r in zip(seconds, rows)]
    m = json.loads((run / "metrics.json").read_text())
    model = json.loads((run / "model" / "model.json").read_text())
    return {"curve_seconds_val_mae": curve, "test_mae": m[f"test.{task}.mae"], "epochs": len(rows),
            "train_structures_per_s": m["train_structures_per_s"], "model": model["class"],
            "model_settings": {k: v for k, v in model["init_args"].items() if k != "heads"},
            "n_parameters": m["n_parameters"], "wall_s": time.perf_counter() - t0,
            "run_folder": str(run.relative_to(ROOT))}


def first_time_at(curve: list[list[float]], mae: float) -> float | None:
    """The seconds at which the curve first reaches ``mae`` or lower (None: never within the budget)."""
    return next((s for s, v in curve if v <= mae), None)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=20.0, help="each family's training budget")
    p.add_argument("--task", default="megnet_e_form", choices=sorted(UNITS))
    p.add_argument("--families", default=",".join(FAMILIES))
    args = p.parse_args()
    families = args.families.split(",")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        sys.exit(f"unknown family: {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
    started = time.time()
    data, split_file, parts = split()
    # the graphs built once, before the clocks start (the two trainings then read the same cache)
    from matgnn.data.sources import CifJsonlConfig, make_source
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.graphs.neighbors import GraphSettings

    build_graph_cache(make_source(CifJsonlConfig(**source_config(data))), GraphSettings(cutoff=8.0, max_neighbors=12),
                      progress=False)
    with ThreadPoolExecutor(max_workers=len(families)) as pool:  # side by side, one thread each
        runs = dict(zip(families, pool.map(lambda f: train_curve(f, args.task, data, split_file, args.minutes),
                                           families)))
    quoted = json.loads(ALIGNN_RESULT.read_text())
    a = quoted["data"]["results"][args.task]["alignn"]
    alignn_seconds = len(parts["train"]) / a["train_structures_per_s"]  # its one epoch's training pass
    # where ALIGNN's run was measured: that file's, or the file it was quoted from in turn
    origin = a.get("quoted_from") or {"file": str(ALIGNN_RESULT.relative_to(ROOT)), "commit": quoted["git_commit"],
                                      "hardware": quoted.get("hardware")}
    metrics: dict[str, float] = {}
    for fam, r in runs.items():
        curve = r["curve_seconds_val_mae"]
        metrics[f"{fam}.{args.task}.test_mae"] = float(r["test_mae"])
        metrics[f"{fam}.{args.task}.best_val_mae"] = float(min(v for _, v in curve))
        metrics[f"{fam}.{args.task}.epochs"] = float(r["epochs"])
        metrics[f"{fam}.{args.task}.train_structures_per_s"] = float(r["train_structures_per_s"])
        for t in (300, 600, 1200):
            before = [v for s, v in curve if s <= t]
            if before:
                metrics[f"{fam}.{args.task}.val_mae_by_{t}s"] = float(min(before))
        reached = first_time_at(curve, a["val_mae"])
        if reached is not None:
            metrics[f"{fam}.{args.task}.seconds_to_alignn_epoch1_val_mae"] = float(reached)
            metrics[f"{fam}.{args.task}.time_to_accuracy_speedup_vs_alignn"] = alignn_seconds / reached
    write_result(
        "time_to_accuracy", started,
        data={"source": "MEGNet-MP (JARVIS leaderboard split) on ../shared/data/mp_cgcnn structures",
              "task": f"{args.task} ({UNITS[args.task]})", "split": {k: len(v) for k, v in parts.items()},
              "split_rule": "alignn_compare_megnet.py's: seed-42 subsets of the leaderboard train and val ids, every "
                            "held test id",
              "budget_minutes_each": args.minutes, "threads_each": 1,
              "concurrency": "the families trained side by side, one thread each on the 2 cores",
              "families": {f: FAMILIES[f] or "the default model (no model section)" for f in families},
              "runs": runs,
              "alignn_release": {"quoted_from": origin["file"], "commit": origin["commit"],
                                 "hardware": origin["hardware"],
                                 "alignn_version": quoted["data"]["alignn_version"],
                                 "settings": quoted["data"]["alignn_settings"],
                                 "curve_seconds_val_mae": [[round(alignn_seconds, 2), a["val_mae"]]],
                                 "test_mae": a["mae"], "epochs": a["epochs"],
                                 "why_one_point": "one epoch of 10,000 MP structures takes ALIGNN's release about 1.5 "
                                                  "hours on one CPU thread; more points need more epochs (a GPU, "
                                                  "or hours per point on CPU)"}},
        metrics=metrics,
        anchors={f"alignn.{args.task}.epoch1.val_mae": float(a["val_mae"]),
                 f"alignn.{args.task}.epoch1.train_seconds": float(alignn_seconds),
                 f"alignn.{args.task}.epoch1.test_mae": float(a["mae"])},
        targets={},
    )


if __name__ == "__main__":
    main()
