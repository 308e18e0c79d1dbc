"""The network base class: a trunk, pooling, one head per target, target normalisation inside the model. Saving,
loading, registration and the heads contract are :class:`~matgnn.models.saved.SavedModel`'s, shared with the
composites.

Loading is data, never code: ``model.json`` may only name a class of matgnn's own registry
(every model class defined in the package registers itself); anything else is refused
before any module is imported, and weights load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch_geometric.nn.aggr import AttentionalAggregation
from torch_geometric.utils import scatter

from matgnn import keys
from matgnn.data.structure import MAX_Z
from matgnn.models.saved import SavedModel

#: how far (in the learned log space) a log-transformed head may answer beyond its training labels' range: a
#: factor 2 on y / area (``log_per_area``) or on 1 + y (``log``). The exponential is unbounded, and a head that
#: extrapolates wildly (CGCNN on one exfoliation fold: 644,466 meV/atom for a 2-atom layer) would otherwise say so.
LOG_RANGE_MARGIN = math.log(2.0)


class ModelSettings(BaseModel):
    """Settings every model takes; each model's own config class (``config_class``) adds its
    fields and fixes ``name``, so a setting a model does not use is an error, never dropped."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("cgcnn", description="the model (each config class fixes it)")
    hidden: int = Field(64, ge=1, description="trunk width (CGCNN's published atom_fea_len is 64)")
    layers: int = Field(3, ge=1, description="message-passing layers (interaction blocks)")
    dropout: float = Field(0.0, ge=0, lt=1)
    pooling: Literal["mean", "sum", "attention"] = "mean"
    head_hidden: int = Field(128, ge=1)

    def constructor_args(self) -> dict[str, Any]:
        """Keyword arguments of the model class (everything but ``name``)."""
        return self.model_dump(exclude={"name"})


class Head(nn.Module):
    """An MLP mapping trunk features to one value per graph (after pooling) or per atom, or to
    ``out_dim`` values (a vector head: shape ``[n, out_dim]``)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0, out_dim: int = 1) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.Softplus(), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.mlp(h)
        return out.squeeze(-1) if self.out_dim == 1 else out


def head_dim(spec: dict[str, Any]) -> int:
    """Values a head predicts per graph or atom (its components, else 1)."""
    return len(spec["components"]) if spec.get("components") else 1


def batch_fields_of(*models: Any) -> tuple[str, ...]:
    """The extra batch fields ``models`` (and the models inside composites: delta, ensembles)
    declare, each once."""
    fields: dict[str, None] = {}
    for model in models:
        if model is not None:
            for m in model.modules():
                fields.update(dict.fromkeys(getattr(m, "batch_fields", ())))  # a class's, or an instance's own
    return tuple(fields)


def model_device(model: nn.Module) -> torch.device:
    """The device a model's weights are on (batches are moved there); a fitted regressor holds buffers only, a
    model without any tensor answers on the CPU."""
    held = next(iter([*model.parameters(), *model.buffers()]), None)
    return held.device if held is not None else torch.device("cpu")


def value_names(spec: dict[str, Any]) -> list[str]:
    """The names a head's values are written under: its name, or ``<head>.<component>`` for
    each component of a vector head (prediction columns, metrics)."""
    return [f"{spec['name']}.{c}" for c in spec["components"]] if spec.get("components") else [spec["name"]]


class MatgnnModel(SavedModel, abstract=True):
    """A shared trunk (``node_features``) and one head per target.

    Subclasses implement :meth:`node_features` (per-atom trunk features of a batch) and
    call ``super().__init__(heads=..., trunk_dim=..., ...)``. ``heads`` is a list of
    dicts ``{"name", "level": "graph"|"node"}``. Targets are predicted in normalised
    units and converted back with the per-head mean/std stored as buffers.
    """

    #: the pydantic class of ``model:`` settings this model takes (see :mod:`matgnn.models`)
    config_class: type[ModelSettings] = ModelSettings
    #: layer groups (freeze policies, transfer, weight shift) by top-level module name: modules
    #: with one entry per layer (group ``conv_<k>``), the input embedding, the readout; the heads
    #: are group ``head``
    block_modules: tuple[str, ...] = ("convs", "norms")
    embedding_modules: tuple[str, ...] = ("embed", "atom_features", "edge_features")
    readout_modules: tuple[str, ...] = ("attention_pool",)

    def parameter_group(self, name: str) -> str:
        """The layer group of a parameter, buffer or module name (``other``: none of them)."""
        first, _, rest = name.partition(".")
        if first == "heads":
            return "head"
        layer = rest.split(".", 1)[0]
        if first in self.block_modules and layer.isdigit():
            return f"conv_{layer}"
        if first in self.readout_modules:
            return "readout"
        if first in self.embedding_modules:
            return "embedding"
        return "other"

    def fixed_groups(self) -> set[str]:
        """Layer groups this model keeps frozen whatever the freeze policy (a fine-tuned backbone's
        unused readout, the groups its config froze); none by default."""
        return set()

    def lr_scale(self, group: str) -> float:
        """Learning-rate multiplier of a layer group against ``train.lr`` (a fine-tuned backbone's own
        layers may learn more slowly than the new MLP and heads); 1 by default."""
        return 1.0

    def auxiliary_loss(self) -> torch.Tensor | None:
        """An extra training-loss term computed by the last training forward pass (a fine-tuned backbone
        kept near its pretrained outputs), handed over once; the trainer adds it to the heads' loss.
        None by default."""
        return None

    def layer_groups(self) -> dict[str, list[str]]:
        """Group name → the model's parameter names in it, in order."""
        out: dict[str, list[str]] = {}
        for name, _ in self.named_parameters():
            out.setdefault(self.parameter_group(name), []).append(name)
        return out

    @classmethod
    def training_statistics(cls, records: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Constructor arguments computed from the training graphs' records (the statistics
        hook: PNA's degree histogram); none by default. Called only when the run builds the
        model itself (a transferred model keeps its source's)."""
        return {}

    def __init__(self, heads: list[dict[str, Any]], trunk_dim: int, head_hidden: int = 128,
                 pooling: str = "mean", dropout: float = 0.0) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one head")
        self.head_specs = [{"name": h["name"], "level": h.get("level", "graph"),
                            "transform": h.get("transform", "none"), "baseline": h.get("baseline", "none")}
                           | ({"components": list(h["components"])} if h.get("components") else {})
                           for h in heads]
        if any(s.get("components") and s["level"] != "graph" for s in self.head_specs):
            raise ValueError("vector heads (components) are graph-level heads")
        bad = [h["name"] for h in self.head_specs if h["baseline"] not in ("none", "element_mean", "backbone")
               or (h["baseline"] != "none" and h["level"] != "node")]
        if bad:
            raise ValueError(f"head {bad[0]!r}: baseline must be 'none' or, for node heads, 'element_mean' or "
                             "'backbone'")
        bad = [h["name"] for h in self.head_specs if h["baseline"] == "backbone" and not self.backbone_references]
        if bad:
            raise ValueError(f"head {bad[0]!r}: baseline 'backbone' needs a model with a pretrained backbone that "
                             f"predicts it itself (model chgnet: magnetic moments); {type(self).__name__} has none")
        bad = [h["transform"] for h in self.head_specs if h["transform"] not in ("none", "log", "log_per_area")]
        if bad:
            raise ValueError(f"unknown target transform {bad[0]!r}; use 'none', 'log' or 'log_per_area'")
        bad = [h["name"] for h in self.head_specs if h["transform"] == "log_per_area"
               and (h["level"] != "graph" or h.get("components"))]
        if bad:
            raise ValueError(f"head {bad[0]!r}: transform 'log_per_area' is for scalar graph-level heads")
        if pooling not in ("mean", "sum", "attention"):
            raise ValueError(f"unknown pooling {pooling!r}; use mean, sum or attention")
        self.pooling = pooling
        self.attention_pool = (AttentionalAggregation(nn.Linear(trunk_dim, 1)) if pooling == "attention" else None)
        self.heads = nn.ModuleDict({h["name"]: Head(trunk_dim, head_hidden, dropout, head_dim(h))
                                    for h in self.head_specs})
        # standardisation of every head's values, concatenated (one entry per scalar head, one per
        # component of a vector head): head k's are [offset k, offset k + dim k)
        dims = [head_dim(h) for h in self.head_specs]
        self._slices = [slice(a, a + d) for a, d in zip([0, *itertools.accumulate(dims)], dims)]
        self.register_buffer("target_mean", torch.zeros(sum(dims)))
        self.register_buffer("target_std", torch.ones(sum(dims)))
        #: the training labels' lowest and highest value in the learned space, per value: answers of log-transformed
        #: heads stay within LOG_RANGE_MARGIN of them (±inf, no bound, for other heads and models saved before)
        self.register_buffer("target_low", torch.full((sum(dims),), -math.inf))
        self.register_buffer("target_high", torch.full((sum(dims),), math.inf))
        #: per-head, per-element reference added to node predictions (``baseline: element_mean``); for
        #: ``baseline: backbone`` heads, 1 for the elements the training set labelled (the learned residual
        #: applies to those; an atom of any other element gets the backbone's answer unchanged)
        self.register_buffer("element_baseline", torch.zeros(len(heads), MAX_Z + 1))

    def train(self, mode: bool = True) -> MatgnnModel:
        """``nn.Module.train``, except that modules of frozen layer groups (``frozen_modules``,
        set by :func:`matgnn.training.transfer.freeze`) stay in eval mode: frozen means their
        normalisation statistics do not move either."""
        super().train(mode)
        for name in getattr(self, "frozen_modules", ()):
            self.get_submodule(name).eval()
        return self

    # -- normalisation ----------------------------------------------------------
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor,
                          element_baseline: torch.Tensor | None = None,
                          value_range: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Standardisation of every head's values; the element baselines; the training labels' range in the
        learned space (``value_range``: lowest, highest), which bounds log-transformed heads' answers."""
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)
        if element_baseline is not None:
            self.element_baseline.copy_(element_baseline)
        if value_range is not None:
            self.target_low.copy_(value_range[0])
            self.target_high.copy_(value_range[1])

    # -- forward ----------------------------------------------------------------
    def node_features(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    #: whether :meth:`backbone_reference` exists (``baseline: backbone`` heads): a pretrained backbone's
    #: own per-atom prediction of a head's quantity
    backbone_references = False

    def backbone_reference(self, k: int, batch: Any) -> torch.Tensor:
        """Node head ``k``'s per-atom reference for ``baseline: backbone`` (the backbone's zero-shot answer)."""
        raise NotImplementedError(f"{type(self).__name__} has no backbone reference")

    def pool(self, h: torch.Tensor, batch: Any) -> torch.Tensor:
        if self.attention_pool is not None:  # softmax-weighted mean over each graph's atoms
            return self.attention_pool(h, batch[keys.BATCH], dim_size=batch.num_graphs)
        return scatter(h, batch[keys.BATCH], dim=0, dim_size=batch.num_graphs, reduce=self.pooling)

    def _of_head(self, buffer: torch.Tensor, k: int) -> torch.Tensor:
        """Head ``k``'s entries of a per-value buffer: a scalar, or one per component of a vector head."""
        s = self._slices[k]
        return buffer[s.start] if s.stop - s.start == 1 else buffer[s]

    def head_mean(self, k: int) -> torch.Tensor:
        """Head ``k``'s standardisation mean."""
        return self._of_head(self.target_mean, k)

    def head_std(self, k: int) -> torch.Tensor:
        """Head ``k``'s standardisation std."""
        return self._of_head(self.target_std, k)

    def transform_target(self, k: int, y: torch.Tensor, batch: Any = None) -> torch.Tensor:
        """Head ``k``'s label in the space the model is trained in (before standardising):
        ``log1p`` for ``transform: log`` (positive, skewed targets); log(y / area per atom) for
        ``log_per_area`` (an energy per atom that scales with the layer's area); minus each atom's
        element reference for ``baseline: element_mean`` (needs the batch); else unchanged."""
        spec = self.head_specs[k]
        if spec["transform"] == "log":
            return torch.log1p(y)
        if spec["transform"] == "log_per_area":
            return torch.log(torch.clamp(y / self._area_per_atom(batch, y), min=1e-12))
        if spec["baseline"] == "element_mean":
            return y - self.element_baseline[k][batch[keys.Z]]
        if spec["baseline"] == "backbone":
            return y - self.backbone_reference(k, batch)
        return y

    def forward_normalized(self, batch: Any) -> dict[str, torch.Tensor]:
        """Predictions in normalised units (what the losses compare)."""
        h = self.node_features(batch)
        out: dict[str, torch.Tensor] = {}
        pooled = None
        for spec in self.head_specs:
            if spec["level"] == "graph":
                if pooled is None:
                    pooled = self.pool(h, batch)
                out[spec["name"]] = self.heads[spec["name"]](pooled)
            else:
                out[spec["name"]] = self.heads[spec["name"]](h)
        return out

    def denormalize(self, k: int, v: torch.Tensor, batch: Any = None) -> torch.Tensor:
        """Head ``k``'s normalised prediction in the target's own units (node heads with an
        element baseline need the batch)."""
        spec = self.head_specs[k]
        v = v * self.head_std(k) + self.head_mean(k)
        if spec["baseline"] == "element_mean":
            v = v + self.element_baseline[k][batch[keys.Z]]
        elif spec["baseline"] == "backbone":
            v = v * self.element_baseline[k][batch[keys.Z]] + self.backbone_reference(k, batch)
        if spec["transform"] == "none":
            return v
        v = torch.clamp(v, *self._log_bounds(k))  # the exponential of a head extrapolating far: bounded
        if spec["transform"] == "log_per_area":
            return torch.exp(v) * self._area_per_atom(batch, v)
        return torch.expm1(v)

    def bounded_heads(self) -> list[str]:
        """The log-transformed heads: their answers are held within LOG_RANGE_MARGIN of the training range."""
        return [s["name"] for s in self.head_specs if s["transform"] != "none"]

    @torch.no_grad()
    def at_bound(self, batch: Any, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per graph of ``batch``, for each head with a log ``transform``: whether its answer (``out``, as
        :meth:`forward` gives it; computed when not given) sits at the bound LOG_RANGE_MARGIN beyond the training
        labels' range, i.e. the head extrapolated and its answer was cut (a node head: any of the graph's atoms)."""
        if not self.bounded_heads():
            return {}
        out = out if out is not None else self(batch)
        flags: dict[str, torch.Tensor] = {}
        for k, spec in enumerate(self.head_specs):
            if spec["transform"] == "none":
                continue
            t = self.transform_target(k, out[spec["name"]].float(), batch)  # the answer back in the learned space
            low, high = self._log_bounds(k)
            hit = (t >= high - 1e-4) | (t <= low + 1e-4)  # ±inf bounds (models saved before): never
            if spec["level"] == "node":
                hit = scatter(hit.float(), batch[keys.BATCH], dim=0, dim_size=batch.num_graphs, reduce="max") > 0
            elif hit.dim() > 1:  # a vector head: any component
                hit = hit.any(dim=1)
            flags[spec["name"]] = hit
        return flags

    def _log_bounds(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Head ``k``'s lowest and highest answer in the learned space: the training labels' range widened by
        LOG_RANGE_MARGIN (±inf for models saved before it was stored)."""
        return (self._of_head(self.target_low, k) - LOG_RANGE_MARGIN,
                self._of_head(self.target_high, k) + LOG_RANGE_MARGIN)

    @staticmethod
    def _area_per_atom(batch: Any, like: torch.Tensor) -> torch.Tensor:
        from matgnn.graphs.geometry import area_per_atom

        return area_per_atom(batch[keys.CELL], batch[keys.PBC], batch[keys.N_ATOMS]).to(like.dtype)

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        """Predictions in the targets' own units."""
        out = self.forward_normalized(batch)
        return {spec["name"]: self.denormalize(k, out[spec["name"]], batch) for k, spec in enumerate(self.head_specs)}
