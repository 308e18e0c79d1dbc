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
