"""Ensembles as ordinary models: the members' mean per head and their spread σ (recalibrated per
head when the ensemble was fitted on a validation set), saved and loaded with one call like any
model — ``model.json`` holds each member's class and constructor arguments (nested, as MatGL
saves composites) and ``state.pt`` every member's weights. ``load_model`` of an ensemble folder
(``ensemble.json`` + members) builds the same object from the member folders.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from matgnn.models.calibration import Recalibration
from matgnn.models.registry import build_from_spec, model_spec
from matgnn.models.saved import SavedModel


class EnsembleModel(SavedModel):
    """Members with the same heads; ``forward`` gives the mean, :meth:`predict_with_std` the mean
    and σ (the members' standard deviation, recalibrated where ``recalibration`` has the head)."""

    def __init__(self, members: list[dict[str, Any]], recalibration: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(members, list) or len(members) < 2:
            raise ValueError("an ensemble needs a list of at least 2 member specs")
        self.members = nn.ModuleList(build_from_spec(m, "an ensemble member's spec") for m in members)
        first = [(s["name"], s["level"]) for s in self.members[0].head_specs]
        for k, m in enumerate(self.members[1:], 1):
            if [(s["name"], s["level"]) for s in m.head_specs] != first:
                raise ValueError(f"ensemble member {k} has heads {[s['name'] for s in m.head_specs]}, member 0 "
                                 f"{[n for n, _ in first]}; an ensemble needs the same heads")
        self.recalibration = {h: Recalibration.from_dict(v) for h, v in (recalibration or {}).items()}

    @classmethod
    def of(cls, models: list[nn.Module], recalibration: dict[str, Recalibration | dict | list] | None = None
           ) -> EnsembleModel:
        """An ensemble of trained models, used as they are (not copied); members that are
        ensembles are flattened. ``recalibration``: per head, a :class:`Recalibration` or its saved form (an
        ensemble folder's, :func:`matgnn.artifacts.ensemble_members`)."""
        flat: list[nn.Module] = []
        for m in models:
            flat += list(m.members) if isinstance(m, EnsembleModel) else [m]
        ens = cls([model_spec(m) for m in flat], {h: (r if isinstance(r, Recalibration) else Recalibration.from_dict(r)).to_dict()
                                                 for h, r in (recalibration or {}).items()})
        ens.members = nn.ModuleList(flat)
        return ens.eval()

    @property
    def head_specs(self) -> list[dict[str, Any]]:
        return self.members[0].head_specs

    def bounded_heads(self) -> list[str]:
        """Heads for which some member's answer can sit at its log transform's bound."""
        named = {n for m in self.members for n in m.bounded_heads()}
        return [s["name"] for s in self.head_specs if s["name"] in named]

    def at_bound(self, batch: Any, out: dict[str, torch.Tensor] | None = None,
                 outs: list[dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Per graph, for each of :meth:`bounded_heads`: whether any member's answer sat at its bound
        (``outs``: the members' answers for ``batch``, when already computed)."""
        flags: dict[str, torch.Tensor] = {}
        for k, m in enumerate(self.members):
            for name, hit in m.at_bound(batch, outs[k] if outs is not None else None).items():
                flags[name] = flags[name] | hit if name in flags else hit
        return flags

    def predict_with_std(self, batch: Any, bound: dict[str, torch.Tensor] | None = None
                         ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The members' mean and σ per head; ``bound``, when given, receives :meth:`at_bound`'s flags
        (from the same member answers)."""
        outs = [m(batch) for m in self.members]
        if bound is not None:
            bound.update(self.at_bound(batch, outs=outs))
        res = {}
        for s in self.head_specs:
            stack = torch.stack([o[s["name"]].float() for o in outs])
            mean, std = stack.mean(0), stack.std(0, unbiased=False)
            rec = self.recalibration.get(s["name"])
            if rec is not None:
                std = torch.as_tensor(rec(std.detach().cpu().numpy(), mean.detach().cpu().numpy()), dtype=mean.dtype,
                                      device=mean.device)
            res[s["name"]] = (mean, std)
        return res

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return {name: mean for name, (mean, _) in self.predict_with_std(batch).items()}
