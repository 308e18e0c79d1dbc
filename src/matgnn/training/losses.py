"""Masked losses: entries whose label is NaN (missing) do not count."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, huber_delta: float = 1.0) -> torch.Tensor:
    """Mean loss over labelled entries; 0 (with gradient) when none is labelled."""
    mask = ~torch.isnan(target)
    if not bool(mask.any()):
        return pred.sum() * 0.0
    p, t = pred[mask], target[mask]
    if kind == "l1":
        return F.l1_loss(p, t)
    if kind == "mse":
        return F.mse_loss(p, t)
    if kind == "huber":
        return F.huber_loss(p, t, delta=huber_delta)
    raise ValueError(f"unknown loss {kind!r}")
