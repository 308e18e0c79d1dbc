"""JARVIS dft_2d exfoliation energy (meV/atom, the 748 labelled monolayers) for every model family,
5-fold, for comparison with the pretrained backbones of ``benchmarks/backbones_2d.py``.

Folds: the same as ``backbones_2d.py``'s ``dft2d_exfoliation`` task (``kfold_split`` over the
labelled entries, seed 42, validation 10 % drawn from the training folds). Each family at its
``benchmarks/dft2d_bandgap.py`` settings and budget (L1, AdamW lr 2e-3 one-cycle, batch 32,
weight decay 1e-4, early-stopping patience 40, 150 epochs or the family's cap). Every run goes
through ``matgnn.training.run.train`` (the code path of ``matgnn train``); ``--jobs`` runs that many
(family, fold) runs at once in separate processes (``--threads`` torch threads each), so a GPU
machine's cores are used; results are written after each family completes.

``--merge`` keeps the committed file's other families (each with the commit and settings that measured it).

``--transform log_per_area`` trains the same families on log(energy / in-plane area per atom) (the head's
``transform``), labelled ``<family>+area`` beside the plain ones.

Usage: python benchmarks/dft2d_exfoliation.py [--models cgcnn,pna] [--folds 5] [--jobs 1] [--threads 2]
       [--device auto|cpu|cuda] [--max-minutes M] [--transform none|log|log_per_area] [--merge]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, SHARED_DATA, target, write_result  # noqa: E402
from dft2d_bandgap import FAMILIES  # noqa: E402

TARGET = "exfoliation_energy"
TASK = "dft2d_exfoliation"
OUT = ROOT / "benchmarks" / "runs" / "dft2d_exfoliation"
JARVIS = {"kind": "jarvis", "dataset": "dft_2d", "store_dir": str(SHARED_DATA / "jarvis")}
#: --transform -> the suffix of the family's label (``pna+area``: PNA with ``transform: log_per_area``)
LABEL = {"none": "", "log": "+log", "log_per_area": "+area"}


def base_family(label: str) -> str:
    """The family of a label (``pna+area`` → ``pna``; ``dimenet++`` stays)."""
    for suffix in ("+log", "+area"):
        if label.endswith(suffix):
            return label[: -len(suffix)]
    return label


def folds(n_folds: int) -> tuple[list[str], list[dict[str, list[str]]], dict[str, float]]:
    from matgnn.data.sources import JarvisSource
    from matgnn.training.splits import kfold_split

    keep = [s for s in JarvisSource("dft_2d", store_dir=str(SHARED_DATA / "jarvis"), targets=[TARGET])
            if np.isfinite(s.graph_targets[TARGET])]
    ids = [s.id for s in keep]
    return ids, [{k: [ids[i] for i in v] for k, v in kfold_split(len(ids), 5, f, 0.1, 42).items()}
                 for f in range(n_folds)], {s.id: float(s.graph_targets[TARGET]) for s in keep}


def run_one(family: str, fold: int, split_file: str, epochs: int, device: str, threads: int,
            max_minutes: float | None, transform: str = "none") -> dict:
    from rich.console import Console

    from matgnn.config import RunConfig
    from matgnn.training.run import train

    cfg = RunConfig.model_validate({
        "source": JARVIS, "graphs": {"cutoff": 8.0, "max_neighbors": 12},
        "targets": [{"name": TARGET, "level": "graph", "loss": "l1", "transform": transform}],
        "model": {k: v for k, v in FAMILIES[family].items() if k != "epochs"},
        "train": {"epochs": min(epochs, FAMILIES[family].get("epochs", epochs)), "batch_size": 32, "lr": 0.002,
                  "weight_decay": 1e-4, "patience": 40, "scheduler": "onecycle", "seed": 42, "device": device,
                  "threads": threads, "tensorboard": False, "max_minutes": max_minutes},
        "split": {"kind": "ids", "ids_file": split_file},
        "output_dir": str(OUT), "name": f"{family.replace(':', '-')}{LABEL.get(transform, '')}-fold{fold}",
    })
    run = train(cfg, progress=False, console=Console(stderr=True, quiet=True))
    m = json.loads((run / "metrics.json").read_text())
    return {"mae": m[f"test.{TARGET}.mae"], "seconds": m["wall_seconds"], "epochs_run": m["epochs_run"],
            "epochs": cfg.train.epochs, "run": str(run.relative_to(ROOT))}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=",".join(FAMILIES))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--jobs", type=int, default=1, help="runs at once (separate processes)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-minutes", type=float, default=None, help="time budget per run (train.max_minutes)")
    p.add_argument("--merge", action="store_true", help="keep the committed file's other families")
    p.add_argument("--transform", default="none", choices=list(LABEL),
                   help="the head's target transform; the families are then labelled <family>+log / +area")
    args = p.parse_args()
    started = time.time()
    models = args.models.split(",")
    fams = [m + LABEL[args.transform] for m in models]
    family_of = dict(zip(fams, models))
    ids, parts, labels = folds(args.folds)  # the labelled entries, read once
    OUT.mkdir(parents=True, exist_ok=True)
    files = []
    for k, part in enumerate(parts):
        files.append(OUT / f"fold{k}.json")
        files[-1].write_text(json.dumps(part))
    base = [float(np.mean(np.abs(np.array([labels[i] for i in part["test"]])
                                 - np.mean([labels[i] for i in part["train"]])))) for part in parts]
    import multiprocessing as mp

    from matgnn.config import RunConfig
    from matgnn.data.sources import make_source
    from matgnn.graphs.cache import build_graph_cache

    cfg = RunConfig.model_validate({"source": JARVIS, "graphs": {"cutoff": 8.0, "max_neighbors": 12}})
    build_graph_cache(make_source(cfg.source), cfg.graphs, progress=False)  # once, before the runs share it
    results: dict[str, list[dict | None]] = {f: [None] * args.folds for f in fams}
    metrics: dict[str, float] = {}
    base_mae = float(np.mean(base))
    done: list[str] = []
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {(f, k): pool.submit(run_one, family_of[f], k, str(files[k]), args.epochs, args.device,
                                       args.threads, args.max_minutes, args.transform)
                   for f in fams for k in range(args.folds)}  # family-major: families finish in order
        for fam in fams:
            for k in range(args.folds):
                results[fam][k] = futures[(fam, k)].result()
                print(f"{fam} fold {k}: MAE {results[fam][k]['mae']:.2f} meV/atom "
                      f"({results[fam][k]['epochs_run']} epochs, {results[fam][k]['seconds']:.0f} s)", flush=True)
            maes = [r["mae"] for r in results[fam]]
            metrics[f"{fam}.{TASK}.mae_mean"] = float(np.mean(maes))
            metrics[f"{fam}.{TASK}.mae_std"] = float(np.std(maes))
            metrics[f"{fam}.{TASK}.fold_seconds_max"] = float(max(r["seconds"] for r in results[fam]))
            done.append(fam)
            from _common import COMMIT_AT_START, RESULTS

            how = (f"{args.epochs} epochs or the family's cap" + (f", at most {args.max_minutes} min per run"
                                                                  if args.max_minutes else "")
                   + f"; {args.jobs} run(s) at once, {args.threads} thread(s) each, device {args.device}"
                   + (f"; head transform {args.transform}" if args.transform != "none" else ""))
            fams, all_metrics = list(done), {"predict_mean.dft2d_exfoliation.mae_mean": base_mae, **metrics}
            per_fold = {f: results[f] for f in done}
            measured = {f: {"commit": COMMIT_AT_START, "budget": how} for f in done}
            old_path = RESULTS / "dft2d_exfoliation.json"
            if args.merge and old_path.is_file():  # the committed file's other families stay, with their provenance
                old = json.loads(old_path.read_text())
                kept = [f for f in old["data"]["families"] if f not in done]
                fams = kept + done
                all_metrics = {"predict_mean.dft2d_exfoliation.mae_mean": base_mae,
                               **{k: v for k, v in old["metrics"].items() if k.split(".")[0] in kept}, **metrics}
                per_fold = {**{f: old["data"]["per_fold"][f] for f in kept}, **per_fold}
                old_measured = old["data"].get("measured", {})
                measured = {**{f: old_measured.get(f, {"commit": old["git_commit"], "budget": old["data"]["training"]})
                               for f in kept}, **measured}
            best = min(fams, key=lambda f: all_metrics[f"{f}.{TASK}.mae_mean"])
            path = write_result(
                "dft2d_exfoliation", started,
                data={"source": "jarvis:dft_2d", "target": f"{TARGET} (meV/atom)", "n_structures": len(ids),
                      "split": f"{args.folds} of the 5 folds of backbones_2d.py's dft2d_exfoliation task (kfold over "
                               "the labelled entries, seed 42, val 10 %)",
                      "families": fams, "best_family": best, "settings": {f: FAMILIES[base_family(f)] for f in fams},
                      "training": "L1, AdamW lr 2e-3 one-cycle, batch 32, weight decay 1e-4, early stopping "
                                  f"patience 40; {how}",
                      "measured": measured, "per_fold": per_fold},
                metrics={**all_metrics, "best.dft2d_exfoliation.mae_mean": all_metrics[f"{best}.{TASK}.mae_mean"]},
                anchors={"matbench_jdft2d.modnet.mae": 33.2, "matbench_jdft2d.coNGN.mae": 36.2,
                         "matbench_jdft2d.alignn.mae": 43.4, "matbench_jdft2d.cgcnn.mae": 49.2,
                         "issue16.chgnet_frozen_gbm.mae": 47.7},
                targets={"best.dft2d_exfoliation.mae_mean": target(33.0, "<=", all_metrics[f"{best}.{TASK}.mae_mean"])},
            )
            print(f"{fam}: {np.mean(maes):.2f} ± {np.std(maes):.2f} meV/atom → {path}", flush=True)


if __name__ == "__main__":
    main()
