"""Delta learning: a frozen base model plus a model of its residuals; prediction = base + delta.

A :class:`DeltaModel` holds both (its saved folder carries both sets of weights and both
constructor specs), so ``load_model`` and ``matgnn predict`` use it like any model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from matgnn.models.base import MatgnnModel, answers_at_bound, bounded_heads
from matgnn.models.registry import build_from_spec, model_spec, register_model_class


@register_model_class
class DeltaModel(nn.Module):
    """``base(batch) + delta(batch)`` for every head of ``delta`` (each must be a head of
    ``base`` with the same level). The base is kept frozen."""

    VERSION = 1

    def __init__(self, base: dict[str, Any], delta: dict[str, Any], base_heads: dict[str, str] | None = None) -> None:
        super().__init__()
        self.init_args = {"base": base, "delta": delta, **({"base_heads": base_heads} if base_heads else {})}
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
        of_delta, of_base = set(bounded_heads(self.delta)), set(bounded_heads(self.base))
        return [s["name"] for s in self.head_specs
                if s["name"] in of_delta or self.base_heads.get(s["name"], s["name"]) in of_base]

    def at_bound(self, batch: Any) -> dict[str, torch.Tensor]:
        """Per graph, for each of :meth:`bounded_heads`: whether the base's or the correction's answer sat at
        its bound."""
        of_delta, of_base = answers_at_bound(self.delta, batch), answers_at_bound(self.base, batch)
        flags = {}
        for name in self.bounded_heads():
            parts = [f for f in (of_delta.get(name), of_base.get(self.base_heads.get(name, name))) if f is not None]
            flags[name] = parts[0] | parts[1] if len(parts) == 2 else parts[0]
        return flags

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        return MatgnnModel.save(self, path, extra)  # same files: model.json (specs) + state.pt (both)


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
