"""Delta learning: a frozen base model plus a model of its residuals; prediction = base + delta.

A :class:`DeltaModel` holds both (its saved folder carries both sets of weights and both
constructor specs), so ``load_model`` and ``matgnn predict`` use it like any model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from matgnn.models.base import MatgnnModel
from matgnn.models.registry import build_from_spec, model_spec
from matgnn.models.saved import SavedModel


class DeltaModel(SavedModel):
    """``base(batch) + delta(batch)`` for every head of ``delta`` (each must be a head of
    ``base`` with the same level). The base is kept frozen."""

    def __init__(self, base: dict[str, Any], delta: dict[str, Any], base_heads: dict[str, str] | None = None) -> None:
        super().__init__()
        self.base = build_from_spec(base)
        self.delta = build_from_spec(delta)
        self.base_heads = dict(base_heads or {})
        have = {(s["name"], s["level"]) for s in self.base.head_specs}
        missing = [s["name"] for s in self.delta.head_specs
                   if (self.base_heads.get(s["name"], s["name"]), s["level"]) not in have]
        if missing:
            raise ValueError(f"delta heads {missing} are not heads of the base model (same name and level, "
                             "or named in base_heads)")
        for p in self.base.parameters():
            p.requires_grad_(False)

    @classmethod
    def of(cls, base: MatgnnModel, delta: MatgnnModel, base_heads: dict[str, str] | None = None) -> DeltaModel:
        """Combine trained models (weights copied); a :class:`BaseView` base brings its head names."""
        if isinstance(base, BaseView):
            base, base_heads = base.model, {**base.names, **(base_heads or {})}
        m = cls(model_spec(base), model_spec(delta), base_heads)
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
        return {s["name"]: b[self.base_heads.get(s["name"], s["name"])] + d[s["name"]] for s in self.head_specs}

    def bounded_heads(self) -> list[str]:
        """Heads whose base or correction answer can sit at a log transform's bound."""
        of_delta, of_base = set(self.delta.bounded_heads()), set(self.base.bounded_heads())
        return [s["name"] for s in self.head_specs
                if s["name"] in of_delta or self.base_heads.get(s["name"], s["name"]) in of_base]

    def at_bound(self, batch: Any, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per graph, for each of :meth:`bounded_heads`: whether the base's or the correction's answer sat at
        its bound."""
        if not self.bounded_heads():
            return {}
        of_delta, of_base = self.delta.at_bound(batch), self.base.at_bound(batch)
        flags = {}
        for name in self.bounded_heads():
            parts = [f for f in (of_delta.get(name), of_base.get(self.base_heads.get(name, name))) if f is not None]
            flags[name] = parts[0] | parts[1] if len(parts) == 2 else parts[0]
        return flags


class BaseView(nn.Module):
    """A delta run's base whose outputs answer to the targets' names (``names``: target -> base head);
    while training it stands in for the base; :meth:`DeltaModel.of` saves the base itself with the names."""

    def __init__(self, model: nn.Module, names: dict[str, str]) -> None:
        super().__init__()
        self.model, self.names = model, dict(names)
        by_name = {s["name"]: s for s in model.head_specs}
        back = {b: t for t, b in self.names.items()}
        self._specs = [{**s, "name": back.get(s["name"], s["name"])} for s in by_name.values()]

    @property
    def head_specs(self) -> list[dict[str, Any]]:
        return self._specs

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        out = self.model(batch)
        back = {b: t for t, b in self.names.items()}
        return {back.get(k, k): v for k, v in out.items()}
