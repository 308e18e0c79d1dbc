"""An ensemble's σ recalibration: ``σ'² = (s σ)² + σ₀²`` per bin of the predicted value, fitted on a validation
set by :mod:`matgnn.evaluation.uncertainty` and kept by :class:`~matgnn.models.ensemble.EnsembleModel`."""

from __future__ import annotations

import numpy as np


def recalibrate(sigma: np.ndarray, params: tuple[float, float]) -> np.ndarray:
    s, floor = params
    return np.sqrt((s * np.asarray(sigma, float)) ** 2 + floor**2)


class Recalibration:
    """``σ'² = (s_b σ)² + σ₀_b²`` with ``(s_b, σ₀_b)`` of the bin ``b`` of the predicted value that
    ``edges`` (inner bin edges, ascending) put a prediction in; no edges: one pair for all."""

    def __init__(self, edges: list[float], params: list[tuple[float, float]]) -> None:
        if len(params) != len(edges) + 1:
            raise ValueError(f"{len(edges)} bin edges need {len(edges) + 1} (scale, floor) pairs, got {len(params)}")
        self.edges = [float(e) for e in edges]
        self.params = [(float(a), float(b)) for a, b in params]

    def __call__(self, sigma: np.ndarray, pred: np.ndarray | None = None) -> np.ndarray:
        sigma = np.asarray(sigma, float)
        if not self.edges:
            return recalibrate(sigma, self.params[0])
        if pred is None:
            raise ValueError("this recalibration depends on the predicted value; pass pred")
        which = np.digitize(np.asarray(pred, float), self.edges)
        out = np.empty_like(sigma)
        for b, p in enumerate(self.params):
            out[which == b] = recalibrate(sigma[which == b], p)
        return out

    def to_dict(self) -> dict:
        return {"edges": self.edges, "params": self.params}

    @classmethod
    def from_dict(cls, d: dict | list | tuple) -> "Recalibration":
        if isinstance(d, (list, tuple)):  # ensembles written before binning: one (scale, floor)
            return cls([], [tuple(d)])
        return cls(d["edges"], [tuple(p) for p in d["params"]])
