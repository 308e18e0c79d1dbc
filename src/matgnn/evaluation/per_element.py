"""Error broken down by element: for per-atom targets by each atom's element, for
graph-level targets over the structures that contain the element."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from matgnn.evaluation.metrics import regression_metrics


def per_element_table(elements: Sequence[Sequence[int]] | np.ndarray, true: np.ndarray, pred: np.ndarray,
                      node_level: bool) -> list[dict]:
    """Rows ``{element, count, mae, rmse, r2}`` sorted by MAE (largest first).

    ``elements``: for node-level targets the atomic number of each atom (one per value);
    for graph-level targets the atomic numbers present in each structure."""
    from ase.data import chemical_symbols

    true = np.asarray(true, float)
    pred = np.asarray(pred, float)
    groups: dict[int, list[int]] = {}
    for k, zs in enumerate(elements):
        for z in ([int(zs)] if node_level else set(int(x) for x in zs)):
            groups.setdefault(z, []).append(k)
    rows = []
    for z, idx in groups.items():
        m = regression_metrics(true[idx], pred[idx])
        if m["count"]:
            rows.append({"element": chemical_symbols[z], "z": z, "count": m["count"], "mae": m["mae"],
                         "rmse": m["rmse"], "r2": m["r2"]})
    return sorted(rows, key=lambda r: -r["mae"])


def write_per_element(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["element", "z", "count", "mae", "rmse", "r2"])
        w.writeheader()
        w.writerows(rows)
    return path
