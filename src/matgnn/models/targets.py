"""Heads as typed specifications, and the way from a head's labels to the space its network output learns in as
modules the head owns.

A head is a :class:`HeadSpec` (its name, level, components, transform, baseline; training adds the loss and the
weight, and the units are its target's). Each head of a :class:`~matgnn.models.base.MatgnnModel` owns one
:class:`HeadTarget`: a :class:`Standardize` step (the training labels' mean and std, per value) followed by at
most one of

- :class:`ElementReference` (``baseline: element_mean``): a per-element reference added to each atom's answer;
- :class:`BackboneResidual` (``baseline: backbone``): the learned residual on top of a pretrained backbone's own
  per-atom answer, for the elements the training set labelled;
- :class:`LogBound` + :class:`Log1p` (``transform: log``) or :class:`LogPerArea` (``transform: log_per_area``):
  a log space whose answers are held within :data:`LOG_RANGE_MARGIN` of the training labels' range.

Every step keeps its own statistics as buffers, so a head's state travels with the head. ``encode`` maps labels
into the learned space (before standardising), ``decode`` maps a network output back to the target's units.
Weights saved before the steps existed (one concatenated ``target_mean``/``target_std``/``target_low``/
``target_high`` and an ``element_baseline`` table per model) load through :func:`upgrade_legacy_state`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, NotRequired, TypedDict

import torch
from torch import nn

from matgnn import keys
from matgnn.data.structure import MAX_Z

#: how far (in the learned log space) a log-transformed head may answer beyond its training labels' range: a
#: factor 2 on y / area (``log_per_area``) or on 1 + y (``log``). The exponential is unbounded, and a head that
#: extrapolates wildly (CGCNN on one exfoliation fold: 644,466 meV/atom for a 2-atom layer) would otherwise say so.
LOG_RANGE_MARGIN = math.log(2.0)

TRANSFORMS = ("none", "log", "log_per_area")
BASELINES = ("none", "element_mean", "backbone")


class HeadSpec(TypedDict):
    """What a head answers: ``name`` (the target's), ``level`` (``graph``: one value per structure; ``node``: one
    per atom), ``transform`` and ``baseline`` (the steps of its :class:`HeadTarget`), ``components`` for a
    vector head (one value per named component) and ``units`` when the config names them. A model's
    ``head_specs`` are these, made by :meth:`matgnn.config.HeadConfig.spec` from the typed head of the config,
    which also holds how the head is trained (loss, its weight)."""

    name: str
    level: Literal["graph", "node"]
    transform: Literal["none", "log", "log_per_area"]
    baseline: Literal["none", "element_mean", "backbone"]
    components: NotRequired[list[str]]
    units: NotRequired[str]


def head_spec(h: dict[str, Any]) -> HeadSpec:
    """A head's specification from a constructor's ``heads`` entry (defaults filled in, checked)."""
    spec: HeadSpec = {"name": h["name"], "level": h.get("level", "graph"), "transform": h.get("transform", "none"),
                      "baseline": h.get("baseline", "none")}
    if h.get("components"):
        spec["components"] = list(h["components"])
    if h.get("units") is not None:
        if not isinstance(h["units"], str):
            raise ValueError(f"head {h['name']!r}: units must be a string, not {h['units']!r}")
        spec["units"] = h["units"]
    name = spec["name"]
    if spec.get("components") and spec["level"] != "graph":
        raise ValueError("vector heads (components) are graph-level heads")
    if spec["baseline"] not in BASELINES or (spec["baseline"] != "none" and spec["level"] != "node"):
        raise ValueError(f"head {name!r}: baseline must be 'none' or, for node heads, 'element_mean' or 'backbone'")
    if spec["transform"] not in TRANSFORMS:
        raise ValueError(f"unknown target transform {spec['transform']!r}; use 'none', 'log' or 'log_per_area'")
    if spec["transform"] == "log_per_area" and (spec["level"] != "graph" or spec.get("components")):
        raise ValueError(f"head {name!r}: transform 'log_per_area' is for scalar graph-level heads")
    if spec["transform"] != "none" and spec["baseline"] != "none":
        raise ValueError(f"head {name!r}: baseline and transform {spec['transform']!r} cannot be combined")
    return spec


def head_dim(spec: dict[str, Any]) -> int:
    """Values a head predicts per graph or atom (its components, else 1)."""
    return len(spec["components"]) if spec.get("components") else 1


def per_head(values: torch.Tensor, specs: list[dict[str, Any]]) -> list[torch.Tensor]:
    """A tensor of every head's values concatenated (one entry per scalar head, one per component of a vector
    head, heads in order) split into each head's part."""
    dims = [head_dim(s) for s in specs]
    if values.dim() != 1 or values.shape[0] != sum(dims):
        raise RuntimeError(f"{tuple(values.shape)} values given; the heads have {sum(dims)}")
    return list(torch.split(values, dims))


def head_value(buffer: torch.Tensor) -> torch.Tensor:
    """A per-value buffer as a head uses it: a scalar for a one-value head, the vector of a vector head's."""
    return buffer[0] if buffer.shape[0] == 1 else buffer


class TargetStep(nn.Module):
    """One step between a head's labels and its learned space."""

    def encode(self, y: torch.Tensor, batch: Any) -> torch.Tensor:
        """Labels (or answers) into the learned space."""
        return y

    def decode(self, v: torch.Tensor, batch: Any) -> torch.Tensor:
        """Learned-space values back to the target's units."""
        return v


class Standardize(TargetStep):
    """The training labels' mean and std in the learned space, per value (``normalize: false``: 0 and 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def encode(self, y: torch.Tensor, batch: Any) -> torch.Tensor:
        return (y - head_value(self.mean)) / head_value(self.std)

    def decode(self, v: torch.Tensor, batch: Any) -> torch.Tensor:
        return v * head_value(self.std) + head_value(self.mean)


class ElementReference(TargetStep):
    """``baseline: element_mean``: each atom's answer is its element's mean training label plus what is learned."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("element_reference", torch.zeros(MAX_Z + 1))

    def encode(self, y: torch.Tensor, batch: Any) -> torch.Tensor:
        return y - self.element_reference[batch[keys.Z]]

    def decode(self, v: torch.Tensor, batch: Any) -> torch.Tensor:
        return v + self.element_reference[batch[keys.Z]]


class BackboneResidual(TargetStep):
    """``baseline: backbone``: a residual on a pretrained backbone's own per-atom answer (``reference``, the
    owning model's); an atom of an element the training set never labelled gets the backbone's answer unchanged."""

    def __init__(self, reference: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        object.__setattr__(self, "reference", reference)  # the owning model's method: not a submodule
        self.register_buffer("labelled_elements", torch.zeros(MAX_Z + 1))

    def encode(self, y: torch.Tensor, batch: Any) -> torch.Tensor:
        return y - self.reference(batch)

    def decode(self, v: torch.Tensor, batch: Any) -> torch.Tensor:
        return v * self.labelled_elements[batch[keys.Z]] + self.reference(batch)


class LogBound(TargetStep):
    """The training labels' lowest and highest value in the learned log space, per value: answers are held within
    :data:`LOG_RANGE_MARGIN` of them (±inf: no bound, as in models saved before it was stored)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("learned_low", torch.full((dim,), -math.inf))
        self.register_buffer("learned_high", torch.full((dim,), math.inf))

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return head_value(self.learned_low) - LOG_RANGE_MARGIN, head_value(self.learned_high) + LOG_RANGE_MARGIN

    def decode(self, v: torch.Tensor, batch: Any) -> torch.Tensor:
        return torch.clamp(v, *self.bounds())  # the exponential of a head extrapolating far: bounded


class Log1p(TargetStep):
    """``transform: log``: learns log(1 + y) (positive, skewed targets)."""

    def encode(self, y: torch.Tensor, batch: Any) -> torch.Tensor:
        return torch.log1p(y)

    def decode(self, v: torch.Tensor, batch: Any) -> torch.Tensor:
        return torch.expm1(v)


class LogPerArea(TargetStep):
    """``transform: log_per_area``: learns log(y / A), A the in-plane area per atom of a slab or monolayer (an
    energy per atom that scales with the layer's area)."""

    @staticmethod
    def _area(batch: Any, like: torch.Tensor) -> torch.Tensor:
        from matgnn.graphs.geometry import area_per_atom

        return area_per_atom(batch[keys.CELL], batch[keys.PBC], batch[keys.N_ATOMS]).to(like.dtype)

    def encode(self, y: torch.Tensor, batch: Any) -> torch.Tensor:
        return torch.log(torch.clamp(y / self._area(batch, y), min=1e-12))

    def decode(self, v: torch.Tensor, batch: Any) -> torch.Tensor:
        return torch.exp(v) * self._area(batch, v)


class HeadTarget(nn.Module):
    """A head's way between labels and learned values: :class:`Standardize`, then its steps (see the module)."""

    def __init__(self, spec: HeadSpec, reference: Callable[[Any], torch.Tensor] | None = None) -> None:
        super().__init__()
        dim = head_dim(spec)
        self.standardize = Standardize(dim)
        steps: list[TargetStep] = []
        if spec["baseline"] == "element_mean":
            steps.append(ElementReference())
        elif spec["baseline"] == "backbone":
            if reference is None:
                raise ValueError(f"head {spec['name']!r}: baseline 'backbone' needs a model with a pretrained "
                                 "backbone that predicts it itself")
            steps.append(BackboneResidual(reference))
        if spec["transform"] != "none":
            steps += [LogBound(dim), Log1p() if spec["transform"] == "log" else LogPerArea()]
        self.steps = nn.ModuleList(steps)

    def step(self, kind: type[TargetStep]) -> TargetStep | None:
        """This head's step of that kind, if it has one."""
        return next((s for s in self.steps if isinstance(s, kind)), None)

    def encode(self, y: torch.Tensor, batch: Any) -> torch.Tensor:
        """A label in the learned space, before standardising (the steps in reverse)."""
        for s in reversed(self.steps):
            y = s.encode(y, batch)
        return y

    def decode(self, v: torch.Tensor, batch: Any) -> torch.Tensor:
        """A standardised network output in the target's units."""
        v = self.standardize.decode(v, batch)
        for s in self.steps:
            v = s.decode(v, batch)
        return v


#: buffers of the targets' steps that may hold ±inf or NaN by design (open ends of a range, unfilled references)
STEP_BUFFERS_MAY_BE_NON_FINITE = ("learned_low", "learned_high", "element_reference", "labelled_elements")
#: buffers of the steps that weights saved before a step existed may lack (they keep their neutral default)
STEP_BUFFERS_OPTIONAL = ("learned_low", "learned_high", "element_reference", "labelled_elements")


def upgrade_legacy_state(model: Any, state: dict[str, torch.Tensor], prefix: str) -> None:
    """Weights saved before heads owned their steps, in place: the concatenated ``target_mean``/``target_std``
    (one entry per value, heads in order), ``target_low``/``target_high`` and the ``element_baseline`` table
    (one row per head) become each head's step buffers. Buffers the file lacks are left out (optional ones keep
    their defaults; a missing mean or std is reported by the load as usual)."""
    if not any(f"{prefix}{k}" in state for k in ("target_mean", "target_std", "target_low", "target_high",
                                                  "element_baseline")):
        return
    def split(name: str) -> list[torch.Tensor] | None:
        t = state.pop(prefix + name, None)
        if t is None:
            return None
        try:
            return per_head(t, model.head_specs)
        except RuntimeError as e:
            raise RuntimeError(f"{prefix}{name}: {e}") from None

    mean, std, low, high = split("target_mean"), split("target_std"), split("target_low"), split("target_high")
    table = state.pop(prefix + "element_baseline", None)
    for k, target in enumerate(model.targets):
        here = f"{prefix}targets.{k}."
        if mean is not None:
            state[here + "standardize.mean"] = mean[k]
        if std is not None:
            state[here + "standardize.std"] = std[k]
        for j, s in enumerate(target.steps):
            if isinstance(s, LogBound) and low is not None and high is not None:
                state[f"{here}steps.{j}.learned_low"], state[f"{here}steps.{j}.learned_high"] = low[k], high[k]
            elif isinstance(s, ElementReference) and table is not None:
                state[f"{here}steps.{j}.element_reference"] = table[k]
            elif isinstance(s, BackboneResidual) and table is not None:
                state[f"{here}steps.{j}.labelled_elements"] = table[k]
