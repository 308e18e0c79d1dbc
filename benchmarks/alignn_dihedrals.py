"""Does the nested line graph (``model: {name: alignn, dihedrals: true}``: dihedral angles about each short
bond, coNGN-style) help on the JARVIS dft_2d band gap? The plain and the nested ALIGNN-style model trained
side by side on the first ``--first-folds`` of ``dft2d_bandgap.py``'s 5 folds, with that benchmark's settings
(``run_one``: L1, AdamW lr 2e-3 one-cycle, batch 32, 100 epochs, patience 40, seed 42), each run in its own
process on one thread, two at a time. Reports each fold's test MAE, the mean per model, the paired
difference, the seconds per epoch and the nested graph's size per batch.

Usage: python benchmarks/alignn_dihedrals.py [--first-folds 2] [--epochs 100]
Writes benchmarks/results/alignn_dihedrals.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, write_result  # noqa: E402

MODELS = ("alignn", "alignn+dihedrals")


def one(job: tuple[str, int, int, int]) -> dict:
    import torch

    torch.set_num_threads(1)
    from dft2d_bandgap import run_one

    fam, fold, folds, epochs = job
    out = str(ROOT / "benchmarks" / "runs" / "alignn_dihedrals")
    mae, secs, _ = run_one(fam, {"kind": "kfold", "folds": folds, "fold": fold, "val": 0.1, "seed": 42}, epochs, out)
    run = max(Path(out).glob(f"{fam}-kfold{fold}-*"), key=lambda p: p.stat().st_mtime)
    m = json.loads((run / "metrics.json").read_text())
    n_epochs = int(m.get("epochs_run", epochs))
    return {"model": fam, "fold": fold, "mae": mae, "seconds": secs, "epochs": n_epochs,
            "seconds_per_epoch": secs / max(n_epochs, 1), "run": str(run.relative_to(ROOT))}


def graph_sizes() -> dict:
    """Bonds, short-bond pairs (line graph edges) and pairs of pairs (nested edges) per 32-structure batch."""
    import torch
    from _common import SHARED_DATA

    from matgnn import keys
    from matgnn.config import RunConfig
    from matgnn.data.sources import make_source
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.graphs.geometry import edge_lengths, edge_vectors
    from matgnn.graphs.packed import PackedGraphs
    from matgnn.models.alignn import dihedrals, line_graph

    cfg = RunConfig.model_validate({"source": {"kind": "jarvis", "dataset": "dft_2d",
                                               "store_dir": str(SHARED_DATA / "jarvis")},
                                    "graphs": {"cutoff": 8.0, "max_neighbors": 12}})
    cache = build_graph_cache(make_source(cfg.source), cfg.graphs, progress=False)
    graphs = PackedGraphs(cache, list(range(len(cache))), ["optb88vdw_bandgap"], [], extras=["triplets"])
    counts = []
    for start in range(0, len(cache) - 31, 32):
        b = graphs.batch(torch.arange(start, start + 32))
        kj, ji, nodes, line_index = line_graph(edge_lengths(b), b[keys.TRIPLET_KJ], b[keys.TRIPLET_JI], 3.5)
        index, _ = dihedrals(edge_vectors(b), kj, ji, line_index, len(nodes))
        counts.append((b[keys.EDGE_INDEX].size(1), len(kj), index.size(1)))
    c = np.array(counts, float).mean(0)
    return {"bonds_per_batch": c[0], "bond_pairs_per_batch": c[1], "dihedrals_per_batch": c[2]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--first-folds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    started = time.time()
    jobs = [(fam, k, 5, args.epochs) for k in range(args.first_folds) for fam in MODELS]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(one, jobs))
    metrics: dict[str, float] = {}
    for fam in MODELS:
        mine = [r for r in rows if r["model"] == fam]
        metrics[f"{fam}.dft2d_gap.folds{args.first_folds}.mae_mean"] = float(np.mean([r["mae"] for r in mine]))
        metrics[f"{fam}.seconds_per_epoch"] = float(np.mean([r["seconds_per_epoch"] for r in mine]))
    diffs = [next(r["mae"] for r in rows if r["model"] == MODELS[1] and r["fold"] == k)
             - next(r["mae"] for r in rows if r["model"] == MODELS[0] and r["fold"] == k) for k in range(args.first_folds)]
    metrics["dihedrals_minus_plain.mae_mean"] = float(np.mean(diffs))
    metrics["dihedrals.cost_ratio_per_epoch"] = metrics[f"{MODELS[1]}.seconds_per_epoch"] / metrics[
        f"{MODELS[0]}.seconds_per_epoch"]
    sizes = graph_sizes()
    metrics.update({f"graph.{k}": v for k, v in sizes.items()})
    write_result("alignn_dihedrals", started,
                 data={"source": "jarvis:dft_2d", "target": "optb88vdw_bandgap (eV)",
                       "split": f"the first {args.first_folds} of dft2d_bandgap.py's 5 folds (seed 42, val 10 %)",
                       "models": {"alignn": "dft2d_bandgap.FAMILIES['alignn']",
                                  "alignn+dihedrals": "the same with dihedrals: true"},
                       "epochs": args.epochs, "threads_each": 1, "jobs_at_once": args.jobs, "per_run": rows},
                 metrics=metrics,
                 anchors={"alignn.cv5.mae_mean (dft2d_bandgap.json)": 0.540},
                 targets={})


if __name__ == "__main__":
    main()
