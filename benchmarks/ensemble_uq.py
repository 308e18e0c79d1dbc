"""5-member ensembles with calibrated uncertainty: dft_2d band gap and mp_magmoms per-atom moments.

dft_2d: ``optb88vdw_bandgap`` (eV), fold 0 of the dft_2d benchmark's 5 folds (seed 42, val 10 %),
CGCNN 64 × 3 at that benchmark's settings (batch 32, AdamW one-cycle lr 2e-3, wd 1e-4, ``--epochs``
(150), patience 40). mp_magmoms: |m| per atom (μB), the first ``--magmom-structures`` (8,000)
entries, composition-grouped 80/10/10 split, CGCNN 64 × 3 with the per-element-mean residual,
one-cycle lr 2e-3, ``--magmom-epochs`` (10). Each ensemble: ``--members`` (5) seeds of one config
(``matgnn ensemble``); metrics: members' test MAE mean ± std, the best member, the ensemble mean's
MAE, and σ's calibration on the test set (miscalibration area, mean squared z-score, Spearman of σ
with |error|) before and after recalibrating σ on the validation set.

σ recalibration: ``σ'² = (s σ)² + σ₀²`` fitted on the validation set to its interval coverage,
one pair per quantile bin of the predicted value (up to 4 bins of ≥ 30 validation points,
:func:`matgnn.evaluation.uncertainty.fit_binned_recalibration`), applied unchanged to the test
set; the one-pair version (:func:`~matgnn.evaluation.uncertainty.fit_recalibration`) is reported
beside it as ``recalibrated_global_*``.
``--rescore`` recombines the latest trained ensembles of ``benchmarks/runs/ensemble_uq`` without
retraining (their training wall times are kept from the previous results file).

Usage: python benchmarks/ensemble_uq.py [--members 5] [--tasks dft2d,magmom] [--rescore]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, ROOT, SHARED_DATA, target, write_result  # noqa: E402

from matgnn.config import RunConfig  # noqa: E402
from matgnn.training.ensemble import score_ensemble, train_ensemble  # noqa: E402

OUT = ROOT / "benchmarks" / "runs" / "ensemble_uq"
HEADS = {"dft2d": "optb88vdw_bandgap", "magmom": "magmom"}


def config(task: str, args) -> RunConfig:
    if task == "dft2d":
        return RunConfig.model_validate({
            "source": {"kind": "jarvis", "dataset": "dft_2d", "store_dir": str(SHARED_DATA / "jarvis")},
            "graphs": {"cutoff": 8.0, "max_neighbors": 12},
            "targets": [{"name": "optb88vdw_bandgap", "level": "graph", "loss": "l1"}],
            "model": {"name": "cgcnn", "hidden": 64, "layers": 3},
            "train": {"epochs": args.epochs, "batch_size": 32, "lr": 0.002, "weight_decay": 1e-4, "patience": 40,
                      "scheduler": "onecycle", "tensorboard": False},
            "split": {"kind": "kfold", "folds": 5, "fold": 0, "val": 0.1, "seed": 42},
            "output_dir": str(OUT), "name": "dft2d"})
    return RunConfig.model_validate({
        "source": {"kind": "magmoms", "path": str(SHARED_DATA / "mp_magmoms" / "mp_magmoms.jsonl.gz"),
                   "limit": args.magmom_structures},
        "graphs": {"cutoff": 8.0, "max_neighbors": 12},
        "targets": [{"name": "magmom", "level": "node", "loss": "l1", "baseline": "element_mean"}],
        "model": {"name": "cgcnn", "hidden": 64, "layers": 3},
        "train": {"epochs": args.magmom_epochs, "batch_size": 64, "lr": 0.002, "scheduler": "onecycle",
                  "patience": 1000, "tensorboard": False},
        "split": {"kind": "grouped", "seed": 42},
        "output_dir": str(OUT), "name": "magmom"})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--tasks", default="dft2d,magmom")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--magmom-structures", type=int, default=8000)
    p.add_argument("--magmom-epochs", type=int, default=10)
    p.add_argument("--rescore", action="store_true")
    args = p.parse_args()
    started = time.time()
    metrics: dict[str, float] = {}
    previous = RESULTS / "ensemble_uq.json"
    old = json.loads(previous.read_text())["metrics"] if args.rescore and previous.is_file() else {}
    targets: dict[str, dict] = {}
    data: dict[str, str] = {}
    for task in args.tasks.split(","):
        t0 = time.perf_counter()
        if args.rescore:
            folder = sorted(OUT.glob(f"{task}-*"))[-1]
            folder = score_ensemble(folder, sorted((folder / "members").iterdir()))
        else:
            folder = train_ensemble(config(task, args), args.members, progress=False)
        m = json.loads((folder / "metrics.json").read_text())
        h = HEADS[task]
        keep = {
            "ensemble_mae": f"test.{h}.mae", "best_member_mae": f"test.{h}.best_member_mae",
            "members_mae_mean": f"members.test.{h}.mae.mean", "members_mae_std": f"members.test.{h}.mae.std",
            "miscalibration_area": f"test.{h}.miscalibration_area", "mean_squared_z": f"test.{h}.mean_squared_z",
            "spearman_sigma_abs_error": f"test.{h}.spearman_sigma_abs_error",
            "recalibration_global_factor": f"test.{h}.recalibration_factor",
            "recalibration_global_floor": f"test.{h}.recalibration_floor",
            "recalibrated_miscalibration_area": f"test.{h}.recalibrated.miscalibration_area",
            "recalibrated_mean_squared_z": f"test.{h}.recalibrated.mean_squared_z",
            "recalibrated_spearman_sigma_abs_error": f"test.{h}.recalibrated.spearman_sigma_abs_error",
            "recalibration_bins": f"test.{h}.recalibration_bins",
            "recalibrated_global_miscalibration_area": f"test.{h}.recalibrated_global.miscalibration_area",
            "test_count": f"test.{h}.count"}
        metrics.update({f"{task}.{k}": m[v] for k, v in keep.items() if v in m})
        metrics[f"{task}.wall_s"] = old.get(f"{task}.wall_s", time.perf_counter() - t0)
        metrics[f"{task}.ensemble_vs_best_member"] = m[f"test.{h}.mae"] - m[f"test.{h}.best_member_mae"]
        targets[f"{task}.recalibrated_miscalibration_area"] = target(
            0.05, "<=", metrics[f"{task}.recalibrated_miscalibration_area"])
        targets[f"{task}.spearman_sigma_abs_error"] = target(0.4, ">=", metrics[f"{task}.spearman_sigma_abs_error"])
        data[task] = str(folder)
        print(task, {k: metrics[f"{task}.{k}"] for k in keep if f"{task}.{k}" in metrics}, flush=True)
        write_result("ensemble_uq", started,
                     data={"members": args.members, "folders": data,
                           "dft2d": "optb88vdw_bandgap, fold 0 of the dft2d_bandgap folds, CGCNN 64×3",
                           "magmom": f"|m| per atom, first {args.magmom_structures} mp_magmoms, grouped split, "
                                     "CGCNN 64×3 element-mean residual"},
                     metrics=metrics, anchors={}, targets=targets)


if __name__ == "__main__":
    main()
