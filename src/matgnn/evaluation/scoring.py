"""Scoring a model on a split: predictions (per graph and per atom), metrics per head (with and
without an exclusion set), per-element tables, error bins and parity plots. Used by training runs,
``matgnn evaluate`` and baselines alike (no training code needed)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matgnn import keys
from matgnn.artifacts import safe_file_part
from matgnn.config import EvaluationConfig, HeadConfig
from matgnn.evaluation.metrics import binned_errors, metrics_without, regression_metrics
from matgnn.evaluation.per_element import per_element_table, write_per_element
from matgnn.evaluation.plots import parity_plot
from matgnn.models import MatgnnModel
from matgnn.models.base import model_device


@torch.no_grad()
def predict_dataset(model: MatgnnModel, loader) -> dict[str, Any]:
    """Per-head predictions and labels, ids, each graph's elements and each atom's Z."""
    model.eval()
    device = model_device(model)
    node_heads = any(s["level"] == "node" for s in model.head_specs)
    res: dict[str, Any] = {"ids": [], "graph_z": [], "heads": {s["name"]: {"true": [], "pred": []} for s in model.head_specs},
                           "atoms": {"id": [], "index": [], "z": []}}
    for batch in loader:
        out = model(batch.to(device))
        batch = batch.cpu()
        res["ids"].extend(batch[keys.STRUCTURE_ID])
        for name, p in out.items():
            res["heads"][name]["pred"].append(p.float().cpu().numpy())
            res["heads"][name]["true"].append(batch[keys.target(name)].numpy())
        counts = batch[keys.N_ATOMS].tolist()
        zs = batch[keys.Z].tolist()
        start = 0
        for sid, n in zip(batch[keys.STRUCTURE_ID], counts):
            res["graph_z"].append(sorted(set(zs[start:start + n])))
            if node_heads:
                res["atoms"]["id"].extend([sid] * n)
                res["atoms"]["index"].extend(range(n))
            start += n
        if node_heads:
            res["atoms"]["z"].extend(zs)
    for name in res["heads"]:
        for k in ("true", "pred"):
            res["heads"][name][k] = np.concatenate(res["heads"][name][k]) if res["heads"][name][k] else np.zeros(0)
    return res


def columns(h: HeadConfig, true: np.ndarray, pred: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """A head's values as named columns: the head itself, or one ``<head>.<component>`` per
    component of a vector head."""
    if not h.components:
        return [(h.name, true, pred)]
    true, pred = true.reshape(-1, h.dim), pred.reshape(-1, h.dim)
    return [(f"{h.name}.{c}", true[:, j], pred[:, j]) for j, c in enumerate(h.components)]


def _write_predictions(run_dir: Path, split: str, res: dict[str, Any], heads: list[HeadConfig]) -> None:
    graph = [c for h in heads if h.level == "graph"
             for c in columns(h, res["heads"][h.name]["true"], res["heads"][h.name]["pred"])]
    node = [h.name for h in heads if h.level == "node"]
    if graph:
        with open(run_dir / f"predictions_{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id"] + [f"{n}_{k}" for n, _, _ in graph for k in ("true", "pred")])
            for r, sid in enumerate(res["ids"]):
                w.writerow([sid] + [f"{v[r]:.6g}" for _, t, p in graph for v in (t, p)])
    if node:
        with open(run_dir / f"predictions_{split}_atoms.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "atom", "z"] + [f"{n}_{k}" for n in node for k in ("true", "pred")])
            a = res["atoms"]
            for r in range(len(a["id"])):
                w.writerow([a["id"][r], a["index"][r], a["z"][r]] +
                           [f"{res['heads'][n][k][r]:.6g}" for n in node for k in ("true", "pred")])


def evaluate_split(model: MatgnnModel, loader, heads: list[HeadConfig], run_dir: Path, split: str,
                   plots: bool = True, evaluation: EvaluationConfig | None = None) -> dict[str, float]:
    """Predictions CSV, metrics, per-element table and parity plot of one split."""
    return evaluate_predictions(predict_dataset(model, loader), heads, run_dir, split, plots, evaluation)


#: scores of a split, structured: value name (a head, or ``<head>.<component>``) -> metric -> value
Scores = dict[str, dict[str, float]]


def flat(split: str, scores: Scores) -> dict[str, float]:
    """``<split>.<value>.<metric>`` keys (the flat layout of ``metrics.json`` and of earlier runs)."""
    return {f"{split}.{name}.{key}": v for name, table in scores.items() for key, v in table.items()}


def evaluate_predictions(res: dict[str, Any], heads: list[HeadConfig], run_dir: Path, split: str,
                         plots: bool = True, evaluation: EvaluationConfig | None = None) -> dict[str, float]:
    """Everything :func:`evaluate_split` writes, from predictions in the layout of
    :func:`predict_dataset` (so baselines that are not models are scored the same way); the
    metrics flat (:func:`flat` of :func:`score_predictions`)."""
    return flat(split, score_predictions(res, heads, run_dir, split, plots, evaluation))


def score_predictions(res: dict[str, Any], heads: list[HeadConfig], run_dir: Path, split: str,
                      plots: bool = True, evaluation: EvaluationConfig | None = None) -> Scores:
    """Predictions CSV, per-element tables and parity plots of a split written; its metrics returned
    structured (value -> metric -> value)."""
    from ase.data import chemical_symbols

    evaluation = evaluation or EvaluationConfig()
    _write_predictions(run_dir, split, res, heads)
    scores: Scores = {}
    for h in heads:
        node = h.level == "node"
        elements = res["atoms"]["z"] if node else res["graph_z"]
        head_true, head_pred = res["heads"][h.name]["true"], res["heads"][h.name]["pred"]
        if h.components:  # a vector head: pooled over its components, then each component
            scores[h.name] = regression_metrics(head_true.ravel(), head_pred.ravel())
        for name, true, pred in columns(h, head_true, head_pred):
            mt = regression_metrics(true, pred)
            scores[name] = {**mt, **metrics_without(elements, true, pred, evaluation.exclude_elements, node)}
            if split == "test" and mt["count"]:
                write_per_element(per_element_table(elements, true, pred, node), run_dir / f"per_element_{safe_file_part(name)}.csv")
                if node:
                    rows = binned_errors(true, pred, evaluation.error_bins)
                    with open(run_dir / f"errors_by_bin_{safe_file_part(name)}.csv", "w", newline="") as f:
                        w = csv.DictWriter(f, fieldnames=list(rows[0]))
                        w.writeheader()
                        w.writerows(rows)
                if plots:
                    groups = [chemical_symbols[z] for z in elements] if node else None
                    parity_plot(true, pred, run_dir / f"parity_{safe_file_part(name)}.png", f"{name} (test)",
                                unit=h.units or "", groups=groups)
    return scores
