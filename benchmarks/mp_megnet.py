"""JARVIS leaderboard MEGNet-MP tasks (formation energy ``megnet_e_form``, eV/atom; PBE band gap
``megnet_gappbe``, eV) on the ids we hold structures for (../shared/data/mp_cgcnn: train 31,624 /
val 2,615 / test 2,238 of the leaderboard's 60,000 / 5,000 / 4,239), with the leaderboard's labels
and split.

For each task: CGCNN (cutoff 8 Å, 12 neighbours) trained from scratch on the train ids with an
epoch budget, early stopping and LR schedule on the val ids, scored on the test ids, beside
ALIGNN's leaderboard predictions on exactly those test ids (trained on the full 60,000). The
budget is reported in CPU core-hours (wall × cores). A learning curve — validation MAE against
epochs (from history.csv) and test MAE against training-set size (random subsets of the train ids
at the same epoch budget) — with a power-law fit ``MAE = a·n^-b`` of the size points says how far
more data would go.

Every run goes through ``matgnn.training.run.train`` (the code path of ``matgnn train``); run
folders land in benchmarks/runs/mp_megnet/. Writes benchmarks/results/mp_megnet.json.

``--family alignn`` runs our ALIGNN-style model instead (its dft2d_bandgap settings) and writes
``mp_megnet_alignn.json`` (``--result`` names another file); ``--jobs`` runs the trainings at once in
separate processes (a GPU machine), ``--max-minutes`` gives each a time budget (train.max_minutes:
the one-cycle schedule is planned over the epochs that fit it).

Usage: python benchmarks/mp_megnet.py [--epochs 30] [--tasks megnet_e_form,megnet_gappbe]
       [--sizes 3000,10000] [--hidden 64] [--family cgcnn|alignn] [--device auto|cpu|cuda]
       [--jobs 1] [--max-minutes M] [--result NAME]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, SHARED_DATA, target, write_result  # noqa: E402

from matgnn.config import RunConfig  # noqa: E402
from matgnn.training.run import train  # noqa: E402

OUT = ROOT / "benchmarks" / "runs" / "mp_megnet"
ALIGNN = {"megnet_e_form": 0.0195, "megnet_gappbe": 0.192}  # on the same 2,238 test ids (data README)
UNITS = {"megnet_e_form": "eV/atom", "megnet_gappbe": "eV"}


def prepare() -> tuple[str, dict[str, list[str]]]:
    """The structures of the split's ids with the leaderboard's labels, as CIF JSON lines."""
    split_rows = [json.loads(line) for line in gzip.open(SHARED_DATA / "mp_cgcnn" / "megnet_leaderboard_split.jsonl.gz", "rt")]
    labels = {r["material_id"]: r for r in split_rows}
    path = OUT / "megnet_mp.jsonl.gz"
    OUT.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with gzip.open(SHARED_DATA / "mp_cgcnn" / "mp_cgcnn.jsonl.gz", "rt") as f, gzip.open(tmp, "wt") as g:
            for line in f:
                rec = json.loads(line)
                lab = labels.get(rec["material_id"])
                if lab is not None:
                    g.write(json.dumps({"material_id": rec["material_id"], "cif": rec["cif"],
                                        "megnet_e_form": lab["megnet_e_form"], "megnet_gappbe": lab["megnet_gappbe"]}) + "\n")
        tmp.rename(path)
    split = {k: [r["material_id"] for r in split_rows if r["split"] == k] for k in ("train", "val", "test")}
    return str(path), split


#: the model of each family (``--hidden`` sets the width)
MODELS = {"cgcnn": {"name": "cgcnn", "layers": 3},
          "alignn": {"name": "alignn", "layers": 4, "gcn_layers": 2, "angle_cutoff": 3.5}}


def source_config(data: str) -> dict:
    return {"kind": "cif_jsonl", "path": data, "targets": ["megnet_e_form", "megnet_gappbe"]}


def run(task: str, data: str, split_file: str, epochs: int, hidden: int, name: str, family: str = "cgcnn",
        device: str = "auto", max_minutes: float | None = None, threads: int | None = None,
        loader_workers: int = 0) -> dict[str, float]:
    cfg = RunConfig.model_validate({
        "source": source_config(data),
        "graphs": {"cutoff": 8.0, "max_neighbors": 12},
        "targets": [{"name": task, "level": "graph", "loss": "l1"}],
        "model": {**MODELS[family], "hidden": hidden},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-5, "scheduler": "onecycle",
                  "patience": epochs, "tensorboard": False, "device": device, "max_minutes": max_minutes,
                  "threads": threads, "loader_workers": loader_workers},
        "split": {"kind": "ids", "ids_file": split_file},
        "output_dir": str(OUT), "name": f"{family}-{name}" if family != "cgcnn" else name, "workers": 2,
    })
    t0 = time.perf_counter()
    run_dir = train(cfg, progress=False)
    wall = time.perf_counter() - t0
    m = json.loads((run_dir / "metrics.json").read_text())
    hist = [{"epoch": int(r["epoch"]), "val_mae": float(r[f"val_mae.{task}"])}
            for r in __import__("csv").DictReader(open(run_dir / "history.csv"))]
    return {"test_mae": m[f"test.{task}.mae"], "n_train": m["n_train"], "n_test": m["n_test"],
            "epochs": m["epochs_run"], "train_seconds": m["train_seconds"], "wall_seconds": wall,
            "structures_per_s": m["train_structures_per_s"], "run": str(run_dir.relative_to(ROOT)), "history": hist}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--tasks", default="megnet_e_form,megnet_gappbe")
    p.add_argument("--sizes", default="3000,10000", help="training-set sizes for the learning curve ('' for none)")
    p.add_argument("--curve-tasks", default="megnet_e_form", help="tasks that get the size learning curve")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--family", default="cgcnn", choices=sorted(MODELS))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (separate processes)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per training")
    p.add_argument("--loader-workers", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None, help="time budget per training (train.max_minutes)")
    p.add_argument("--result", default=None, help="results file name (default mp_megnet, or mp_megnet_<family>)")
    args = p.parse_args()
    started = time.time()
    fam = args.family
    data, split = prepare()
    from matgnn.data.sources import make_source
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.graphs.neighbors import GraphSettings

    build_graph_cache(make_source(RunConfig.model_validate({"source": source_config(data)}).source),
                      GraphSettings(cutoff=8.0, max_neighbors=12), progress=False)  # once, on every core
    cores = os.cpu_count() or 1
    split_file = OUT / "split_full.json"
    split_file.write_text(json.dumps(split))
    metrics: dict[str, float] = {}
    per_run: dict[str, dict] = {}
    targets: dict[str, dict] = {}
    jobs: dict[str, tuple] = {}
    for task in args.tasks.split(","):
        jobs[f"{task}.full"] = (task, str(split_file), f"{task}-full")
        for n in ([int(x) for x in args.sizes.split(",") if x] if task in args.curve_tasks.split(",") else []):
            rng = np.random.default_rng(42)
            sub = dict(split, train=sorted(rng.choice(split["train"], size=n, replace=False).tolist()))
            f = OUT / f"split_{n}.json"
            f.write_text(json.dumps(sub))
            jobs[f"{task}.n{n}"] = (task, str(f), f"{task}-n{n}")
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {key: pool.submit(run, task, data, f, args.epochs, args.hidden, name, fam, args.device,
                                    args.max_minutes, args.threads, args.loader_workers)
                   for key, (task, f, name) in jobs.items()}
        failed = {}
        for key, fut in futures.items():
            try:
                per_run[key] = fut.result()
                print(f"{key}: test MAE {per_run[key]['test_mae']:.4f} ({per_run[key]['epochs']} epochs)", flush=True)
            except Exception as e:  # one failed training does not lose the others
                failed[key] = f"{type(e).__name__}: {e}"
                print(f"{key} failed: {failed[key]}", flush=True)
    for task in args.tasks.split(","):
        r = per_run.get(f"{task}.full")
        if r is None:
            continue
        metrics[f"{fam}.{task}.test_mae"] = r["test_mae"]
        metrics[f"{fam}.{task}.core_hours"] = r["wall_seconds"] * cores / 3600
        metrics[f"{fam}.{task}.structures_per_s"] = r["structures_per_s"]
        metrics[f"{fam}.{task}.ratio_to_alignn"] = r["test_mae"] / ALIGNN[task]
        targets[f"{task}.test_mae_at_or_below_alignn"] = target(ALIGNN[task], "<=", r["test_mae"])
        points = []
        for key, rs in per_run.items():
            if key.startswith(f"{task}.n"):
                metrics[f"{fam}.{task}.{key.split('.')[-1]}.test_mae"] = rs["test_mae"]
                points.append((rs["n_train"], rs["test_mae"]))
        if points:
            points.append((r["n_train"], r["test_mae"]))
            ln, lm = np.log([x for x, _ in points]), np.log([y for _, y in points])
            slope, icept = np.polyfit(ln, lm, 1)
            metrics[f"{fam}.{task}.size_exponent"] = float(-slope)
            if slope < 0:  # n at which the fitted curve reaches ALIGNN's MAE
                metrics[f"{fam}.{task}.n_train_to_reach_alignn_fit"] = float(np.exp((np.log(ALIGNN[task]) - icept) / slope))
    model = MODELS[fam]
    write_result(
        args.result or ("mp_megnet" if fam == "cgcnn" else f"mp_megnet_{fam}"), started,
        data={"source": "mp_cgcnn structures with the JARVIS leaderboard megnet_e_form / megnet_gappbe labels",
              "split": "leaderboard MEGNet split restricted to ids with structures: train 31,624 / val 2,615 / test 2,238",
              "model": f"{fam} width {args.hidden}, {model}, cutoff 8 Å, 12 neighbours, batch 64, AdamW one-cycle "
                       f"lr 2e-3, {args.epochs} epochs" + (f", at most {args.max_minutes} min each (train.max_minutes)"
                                                           if args.max_minutes else ""),
              "units": UNITS, "cores": cores, "device": args.device, "jobs_at_once": args.jobs,
              "threads_each": args.threads, "loader_workers": args.loader_workers, "runs": per_run,
              **({"failed": failed} if failed else {})},
        metrics=metrics,
        anchors={f"alignn_full60k.{k}.test_mae": v for k, v in ALIGNN.items()},
        targets=targets,
    )


if __name__ == "__main__":
    main()
