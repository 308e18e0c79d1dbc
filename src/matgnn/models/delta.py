"""Delta learning: a frozen base model plus a model of its residuals; prediction = base + delta.

A :class:`DeltaModel` holds both (its saved folder carries both sets of weights and both
constructor specs), so ``load_model`` and ``matgnn predict`` use it like any model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from matgnn.models.base import MatgnnModel
from matgnn.models.registry import build_from_spec, model_spec, register_model_class


@register_model_class
class DeltaModel(nn.Module):
    """``base(batch) + delta(batch)`` for every head of ``delta`` (each must be a head of
    ``base`` with the same level). The base is kept frozen."""

    VERSION = 1

    def __init__(self, base: dict[str, Any], delta: dict[str, Any]) -> None:
        super().__init__()
        self.init_args = {"base": base, "delta": delta}
        self.base = build_from_spec(base)
        self.delta = build_from_spec(delta)
        base_heads = {(s["name"], s["level"]) for s in self.base.head_specs}
        missing = [s["name"] for s in self.delta.head_specs if (s["name"], s["level"]) not in base_heads]
        if missing:
            raise ValueError(f"delta heads {missing} are not heads of the base model (same name and level)")
        for p in self.base.parameters():
            p.requires_grad_(False)

    @classmethod
    def of(cls, base: MatgnnModel, delta: MatgnnModel) -> DeltaModel:
        """Combine trained models (weights copied)."""
        m = cls(model_spec(base), model_spec(delta))
        m.base.load_state_dict(base.state_dict())
        m.delta.load_state_dict(delta.state_dict())
        return m.eval()

    @property
    def head_specs(self) -> list[dict[str, Any]]:
        return self.delta.head_specs

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            b = self.base(batch)
        d = self.delta(batch)
        return {s["name"]: b[s["name"]] + d[s["name"]] for s in self.head_specs}

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        return MatgnnModel.save(self, path, extra)  # same files: model.json (specs) + state.pt (both)
