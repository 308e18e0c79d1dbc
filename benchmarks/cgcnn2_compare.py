"""Our CGCNN beside the PyPI reference ``cgcnn2`` ("Reproduction of CGCNN") on the same folds and CPU.

JARVIS dft_2d ``optb88vdw_bandgap`` (eV), 5 folds: fold k is the test set (1/5), 10 % of all
entries from the other folds is the validation set, the rest (~70 %) trains. Both tools get the
same ids. cgcnn2 runs through its own CLI (``cgcnn-tr``) at its defaults (radius 8 Å, 12
neighbours, 41 Gaussians, width 64, 3 convolutions, Adam lr 0.01, batch 256, both CPU threads)
with early stopping after 30 epochs without improvement; it reads the same structures written as
CIF files (``atom_init.json`` = CGCNN's 92 features, our table). matgnn runs ``train()`` (the code
path of ``matgnn train``) with cutoff 8 Å, 12 neighbours, CGCNN width 64 × 3 layers, at the
defaults of ``matgnn train`` otherwise (batch 64, AdamW lr 1e-3, plateau schedule, patience 20),
and once more at cgcnn2's batch size (256) for the throughput at equal batches.

Throughput = training structures per second over whole epochs (training pass + validation pass +
the tool's own bookkeeping), from cgcnn2's per-epoch log timestamps (its first epoch, which parses
the CIFs, is left out) and from matgnn's history.csv.

Needs ``cgcnn-tr`` on PATH (``pip install cgcnn2``, Python ≥ 3.11).
Usage: python benchmarks/cgcnn2_compare.py [--folds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _cgcnn2 import train_cli, write_cifs  # noqa: E402
from _common import ROOT, SHARED_DATA, target, write_result  # noqa: E402

from matgnn.config import RunConfig  # noqa: E402
from matgnn.data.sources import JarvisSource  # noqa: E402
from matgnn.training.run import train  # noqa: E402
from matgnn.training.splits import kfold_split  # noqa: E402

TARGET = "optb88vdw_bandgap"
OUT = ROOT / "benchmarks" / "runs" / "cgcnn2_compare"


def export_cifs(folder: Path) -> tuple[list[str], dict[str, float]]:
    """dft_2d as ``<id>.cif`` files (pymatgen writer) and the labels."""
    keep = [s for s in JarvisSource("dft_2d", store_dir=str(SHARED_DATA / "jarvis"), targets=[TARGET])
            if np.isfinite(s.graph_targets[TARGET])]
    write_cifs(((s.id, s) for s in keep), folder)
    return [s.id for s in keep], {s.id: float(s.graph_targets[TARGET]) for s in keep}


def cgcnn2_fold(cifs: Path, parts: dict[str, list[str]], labels: dict[str, float], work: Path) -> dict[str, float]:
    return train_cli(cifs, parts, labels, work, ["-sp", "30"])


def matgnn_fold(split_file: Path, name: str, batch_size: int) -> dict[str, float]:
    cfg = RunConfig.model_validate({
        "source": {"kind": "jarvis", "dataset": "dft_2d", "store_dir": str(SHARED_DATA / "jarvis")},
        "graphs": {"cutoff": 8.0, "max_neighbors": 12},
        "targets": [{"name": TARGET, "level": "graph", "loss": "l1"}],
        "model": {"name": "cgcnn", "hidden": 64, "layers": 3},
        "train": {"batch_size": batch_size},
        "split": {"kind": "ids", "ids_file": str(split_file)},
        "output_dir": str(OUT / "matgnn"), "name": name,
    })
    t0 = time.perf_counter()
    run = train(cfg, progress=False)
    wall = time.perf_counter() - t0
    m = json.loads((run / "metrics.json").read_text())
    return {"mae": m[f"test.{TARGET}.mae"], "structures_per_s": m["train_structures_per_s"],
            "epochs": m["epochs_run"], "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--folds", type=int, default=5)
    args = p.parse_args()
    from _cgcnn2 import cgcnn_tr

    if cgcnn_tr() is None:
        sys.exit("cgcnn-tr not found: pip install cgcnn2")
    started = time.time()
    cifs = OUT / "cifs"
    ids, labels = export_cifs(cifs)
    res: dict[str, list[dict[str, float]]] = {"cgcnn2": [], "matgnn": [], "matgnn_bs256": []}
    for fold in range(args.folds):
        parts = {k: [ids[i] for i in v] for k, v in kfold_split(len(ids), args.folds, fold, 0.1, 42).items()}
        split_file = OUT / f"fold{fold}.json"
        split_file.write_text(json.dumps(parts))
        res["cgcnn2"].append(cgcnn2_fold(cifs, parts, labels, OUT / "cgcnn2" / f"fold{fold}"))
        res["matgnn"].append(matgnn_fold(split_file, f"cgcnn-fold{fold}", 64))
        res["matgnn_bs256"].append(matgnn_fold(split_file, f"cgcnn-bs256-fold{fold}", 256))
        print(f"fold {fold}: " + "  ".join(f"{k} MAE {v[-1]['mae']:.3f} eV, {v[-1]['structures_per_s']:.0f}/s"
                                           for k, v in res.items()), flush=True)
    metrics: dict[str, float] = {}
    for k, rows in res.items():
        for key in ("mae", "structures_per_s", "epochs", "wall_s"):
            vals = [r[key] for r in rows]
            metrics[f"{k}.{key}_mean"] = float(np.mean(vals))
            metrics[f"{k}.{key}_std"] = float(np.std(vals))
    base = metrics["cgcnn2.structures_per_s_mean"]
    metrics["matgnn.speedup_vs_cgcnn2"] = metrics["matgnn.structures_per_s_mean"] / base
    metrics["matgnn_bs256.speedup_vs_cgcnn2"] = metrics["matgnn_bs256.structures_per_s_mean"] / base
    best_speed = max(metrics["matgnn.speedup_vs_cgcnn2"], metrics["matgnn_bs256.speedup_vs_cgcnn2"])
    noise = float(np.hypot(metrics["cgcnn2.mae_std"], metrics["matgnn.mae_std"]))
    write_result(
        "cgcnn2_compare",
        started,
        data={"source": "jarvis:dft_2d", "target": TARGET, "n_structures": len(ids),
              "split": f"{args.folds}-fold CV, seed 42, val 10 % of all from the training folds",
              "per_fold": res},
        metrics=metrics,
        anchors={"cgcnn2.issue_quoted.mae": 0.619, "cgcnn2.issue_quoted.structures_per_s": 1900},
        targets={
            "mae_difference_within_fold_noise": target(
                noise, "<=", abs(metrics["matgnn.mae_mean"] - metrics["cgcnn2.mae_mean"])),
            "speedup_vs_cgcnn2": target(3.0, ">=", best_speed),
        },
    )


if __name__ == "__main__":
    main()
