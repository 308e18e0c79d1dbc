"""Regression metrics, over labelled entries only (NaN labels are ignored)."""

from __future__ import annotations

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R², max |error| and count, ignoring entries whose label is NaN."""
    y_true = np.asarray(y_true, float)
    y_pred = np.asarray(y_pred, float)
    mask = ~np.isnan(y_true)
    t, p = y_true[mask], y_pred[mask]
    if len(t) == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "r2": float("nan"), "max_error": float("nan"), "count": 0}
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": float(1.0 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "max_error": float(np.abs(err).max()),
        "count": int(len(t)),
    }


def metrics_without(elements, y_true: np.ndarray, y_pred: np.ndarray, exclude: list[str],
                    node: bool = True) -> dict[str, float]:
    """:func:`regression_metrics` without the elements ``exclude`` (the atoms of them for per-atom
    values, whose ``elements`` are atomic numbers; the structures containing any of them for
    per-structure values, whose ``elements`` are each structure's atomic numbers), keyed
    ``without_<A>-<B>.<metric>``; empty when nothing is excluded."""
    from ase.data import atomic_numbers

    if not exclude or not len(y_true):
        return {}
    gone = {atomic_numbers[e] for e in exclude}
    keep = np.array([(int(z) not in gone) if node else not (set(z) & gone) for z in elements])
    return {f"without_{'-'.join(exclude)}.{k}": v
            for k, v in regression_metrics(np.asarray(y_true)[keep], np.asarray(y_pred)[keep]).items()}


def binned_errors(y_true: np.ndarray, y_pred: np.ndarray, edges: list[float]) -> list[dict[str, float]]:
    """MAE and count of the entries whose ``|label|`` falls in each ``[edges[k], edges[k+1])``
    (the last bin is open above)."""
    y_true = np.asarray(y_true, float)
    y_pred = np.asarray(y_pred, float)
    mask = ~np.isnan(y_true)
    t, p = y_true[mask], y_pred[mask]
    a = np.abs(t)
    rows = []
    for k, lo in enumerate(edges):
        hi = edges[k + 1] if k + 1 < len(edges) else np.inf
        sel = (a >= lo) & (a < hi)
        rows.append({"lo": lo, "hi": hi, "count": int(sel.sum()),
                     "mae": float(np.abs(p[sel] - t[sel]).mean()) if sel.any() else float("nan"),
                     "mean_true": float(t[sel].mean()) if sel.any() else float("nan"),
                     "mean_pred": float(p[sel].mean()) if sel.any() else float("nan")})
    return rows
