"""Ensembles of one config: N members with different seeds (and optionally bootstrap resamples of
the training split), scored as members (mean ± std of their metrics) and as an ensemble (the
members' mean prediction with σ = their spread), with calibration metrics of σ before and after
recalibration on the validation set (a scale and a floor per bin of the predicted value,
:func:`matgnn.evaluation.uncertainty.fit_binned_recalibration`; the one-pair version is
reported beside it).

An ensemble folder holds ``members/`` (ordinary run folders), ``predictions_{val,test}.csv``
(and ``_atoms.csv`` for per-atom heads) with ``<head>_true``, ``<head>_pred``, ``<head>_std``,
``metrics.json``, ``calibration_<head>.png`` and ``ensemble.json`` (members, recalibration).
``matgnn predict ENSEMBLE_FOLDER`` predicts new structures with the members' mean and the
recalibrated σ (``matgnn predict MEMBER1,MEMBER2,...``: the raw spread), and ``matgnn report``
draws the calibration plot from the predictions.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from matgnn.artifacts import ENSEMBLE_FILE, ensemble_members, safe_file_part  # noqa: F401 - re-exported
from matgnn.config import RunConfig
from matgnn.evaluation.metrics import metrics_without, regression_metrics
from matgnn.evaluation.uncertainty import (
    Recalibration,
    calibration_metrics,
    fit_binned_recalibration,
    fit_recalibration,
    recalibrate,
)


def _read(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    with open(path) as f:
        r = csv.DictReader(f)
        return list(r), list(r.fieldnames or [])


def train_ensemble(cfg: RunConfig, members: int = 5, bootstrap: bool = False, out: str | Path | None = None,
                   **train_kw: Any) -> Path:
    """Train ``members`` runs of ``cfg`` (seeds ``train.seed + k``; with ``bootstrap`` each also
    trains on a resample of the training split) and write the ensemble folder; returns it."""
    from matgnn.training.run import train

    if members < 2:
        raise ValueError("an ensemble needs at least 2 members")
    name = cfg.name or f"ensemble-{cfg.model.name}-{'+'.join(h.name for h in cfg.targets)}"
    folder = Path(out) if out else Path(cfg.output_dir) / f"{safe_file_part(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    (folder / "members").mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(folder / "config.yaml")
    from matgnn.progress import Progress

    runs = []
    with Progress("ensemble", total=members, unit="members") as progress:
        for k in range(members):
            member = cfg.model_copy(update={
                "train": cfg.train.model_copy(update={"seed": cfg.train.seed + k}),
                "split": cfg.split.model_copy(update={"bootstrap": (cfg.split.seed + k) if bootstrap else None}),
                "output_dir": str(folder / "members"), "name": f"member{k}"})
            runs.append(train(member, **train_kw))
            progress.advance()
    return score_ensemble(folder, runs, bootstrap)


def combine_runs(runs: list[str | Path], out: str | Path) -> Path:
    """An ensemble folder over runs trained already — e.g. different architectures on one
    split; they must share the split (same train/validation/test ids) and the heads. The
    members stay where they are (``ensemble.json`` points at them by relative path)."""
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise ValueError("an ensemble needs at least 2 members")
    first = None
    for r in runs:
        if not (r / "metrics.json").is_file() or not (r / "split.json").is_file():
            raise FileNotFoundError(f"{r}: not a finished run folder (no metrics.json / split.json)")
        split = json.loads((r / "split.json").read_text())
        heads = [(h.name, h.level) for h in RunConfig.from_yaml(r / "config.yaml").targets]
        if first is None:
            first = (r, split, heads)
            continue
        for k in ("train", "val", "test"):
            if sorted(split[k]) != sorted(first[1][k]):
                raise ValueError(f"{r}: its {k} split differs from {first[0]}'s; members of an ensemble "
                                 "must be trained and scored on the same structures")
        if heads != first[2]:
            raise ValueError(f"{r}: its heads {heads} differ from {first[0]}'s {first[2]}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    RunConfig.from_yaml(runs[0] / "config.yaml").to_yaml(folder / "config.yaml")
    return score_ensemble(folder, runs)


def score_ensemble(folder: Path, runs: list[Path], bootstrap: bool = False) -> Path:
    """Combine trained members' predictions into the ensemble folder's predictions, metrics,
    calibration and plots (rerun it to rescore without retraining)."""
    from matgnn.evaluation.plots import calibration_plot

    members = len(runs)
    exclude = RunConfig.from_yaml(runs[0] / "config.yaml").evaluation.exclude_elements
    metrics: dict[str, Any] = {"members": members, "bootstrap": bootstrap}
    member_metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    for key in member_metrics[0]:
        vals = [m[key] for m in member_metrics if isinstance(m.get(key), (int, float))]
        if key.startswith(("val.", "test.")) and len(vals) == members:
            metrics[f"members.{key}.mean"] = float(np.mean(vals))
            metrics[f"members.{key}.std"] = float(np.std(vals))
    factors: dict[str, tuple[float, float]] = {}
    binned: dict[str, Recalibration] = {}
    for split in ("val", "test"):
        for suffix in ("", "_atoms"):
            files = [r / f"predictions_{split}{suffix}.csv" for r in runs]
            if not files[0].is_file():
                continue
            tables = [_read(f) for f in files]
            rows, cols = tables[0]
            heads = [c[:-5] for c in cols if c.endswith("_pred")]
            keys = [c for c in cols if not c.endswith(("_pred", "_true"))]
            for t, _ in tables[1:]:
                if [[r[k] for k in keys] for r in t] != [[r[k] for k in keys] for r in rows]:
                    raise RuntimeError(f"{files}: members predicted different rows; cannot combine")
            combined = [{k: r[k] for k in keys} for r in rows]
            for h in heads:
                preds = np.array([[float(r[f"{h}_pred"]) for r in t] for t, _ in tables])
                true = np.array([float(r[f"{h}_true"]) for r in rows])
                mean, std = preds.mean(0), preds.std(0)
                for i, row in enumerate(combined):
                    row.update({f"{h}_true": f"{true[i]:.6g}", f"{h}_pred": f"{mean[i]:.6g}", f"{h}_std": f"{std[i]:.6g}"})
                metrics.update({f"{split}.{h}.{k}": v for k, v in regression_metrics(true, mean).items()})
                if suffix == "_atoms":  # per-atom rows carry the atom's Z
                    metrics.update({f"{split}.{h}.{k}": v for k, v in
                                    metrics_without([r["z"] for r in rows], true, mean, exclude).items()})
                best = min(member_metrics, key=lambda m: m.get(f"{split}.{h}.mae", np.inf))
                metrics[f"{split}.{h}.best_member_mae"] = best.get(f"{split}.{h}.mae")
                err = mean - true
                metrics.update({f"{split}.{h}.{k}": v for k, v in calibration_metrics(err, std).items()})
                if split == "val":
                    factors[h] = fit_recalibration(err, std)
                    binned[h] = fit_binned_recalibration(err, std, mean)
                elif h in factors:
                    s, floor = factors[h]
                    metrics[f"test.{h}.recalibration_factor"] = s
                    metrics[f"test.{h}.recalibration_floor"] = floor
                    metrics.update({f"test.{h}.recalibrated_global.{k}": v
                                    for k, v in calibration_metrics(err, recalibrate(std, factors[h])).items()})
                    rec_std = binned[h](std, mean)
                    metrics[f"test.{h}.recalibration_bins"] = len(binned[h].params)
                    metrics.update({f"test.{h}.recalibrated.{k}": v for k, v in calibration_metrics(err, rec_std).items()})
                    for i, row in enumerate(combined):
                        row[f"{h}_std_recalibrated"] = f"{rec_std[i]:.6g}"
                    calibration_plot(err, rec_std, folder / f"calibration_{h}.png",
                                     f"{h}, test, σ recalibrated ({len(binned[h].params)} bins)")
            with open(folder / f"predictions_{split}{suffix}.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(combined[0]))
                w.writeheader()
                w.writerows(combined)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    members_rel = [os.path.relpath(Path(r).resolve(), folder.resolve()) for r in runs]
    (folder / ENSEMBLE_FILE).write_text(json.dumps({
        "members": members_rel, "bootstrap": bootstrap,
        "recalibration": {h: r.to_dict() for h, r in binned.items()},
        "recalibration_global": factors}, indent=1))
    _save_as_one_model(folder, runs, binned)
    return folder


def _save_as_one_model(folder: Path, runs: list[Path], recalibration: dict[str, Recalibration]) -> None:
    """``model/``: the ensemble as one model folder (an :class:`EnsembleModel`: every member's
    arguments and weights), so the ensemble folder works without its members beside it."""
    from matgnn.artifacts import read_model_info
    from matgnn.models.ensemble import EnsembleModel
    from matgnn.models.loading import load_model

    infos = [read_model_info(Path(r) / "model") for r in runs]
    seen = [set(i.get("train_elements") or []) for i in infos]
    extra = {k: infos[0][k] for k in ("graphs", "targets") if k in infos[0]}
    if all(seen):
        extra["train_elements"] = sorted(set.intersection(*seen))
    EnsembleModel.of([load_model(r) for r in runs], recalibration).save(folder / "model", extra=extra)
