"""The network base class: a trunk, pooling, one head per target, target normalisation inside the model. Saving,
loading, registration and the heads contract are :class:`~matgnn.models.saved.SavedModel`'s, shared with the
composites.

Loading is data, never code: ``model.json`` may only name a class of matgnn's own registry
(every model class defined in the package registers itself); anything else is refused
before any module is imported, and weights load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch_geometric.nn.aggr import AttentionalAggregation
from torch_geometric.utils import scatter

from matgnn import keys
from matgnn.models.saved import SavedModel
from matgnn.models.targets import (
    BackboneResidual,
    ElementReference,
    HeadSpec,
    HeadTarget,
    LogBound,
    head_dim,
    head_spec,
    head_value,
    per_head,
    upgrade_legacy_state,
)


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
    #: the learning rate a run trains this family at when ``train.lr`` is not set: the task suite's choice for the
    #: family (benchmarks/task_suite.py; a family changes it only where its variant beat this value by more than the
    #: spread over folds). A run that starts from a saved model (``transfer``) takes this base value whatever its family
    default_lr: float = 1e-3
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
        self.head_specs: list[HeadSpec] = [head_spec(h) for h in heads]
        bad = [h["name"] for h in self.head_specs if h["baseline"] == "backbone" and not self.backbone_references]
        if bad:
            raise ValueError(f"head {bad[0]!r}: baseline 'backbone' needs a model with a pretrained backbone that "
                             f"predicts it itself (model chgnet: magnetic moments); {type(self).__name__} has none")
        if pooling not in ("mean", "sum", "attention"):
            raise ValueError(f"unknown pooling {pooling!r}; use mean, sum or attention")
        self.pooling = pooling
        self.attention_pool = (AttentionalAggregation(nn.Linear(trunk_dim, 1)) if pooling == "attention" else None)
        self.heads = nn.ModuleDict({h["name"]: Head(trunk_dim, head_hidden, dropout, head_dim(h))
                                    for h in self.head_specs})
        #: each head's way between its labels and its learned values (standardisation, baselines, log transforms:
        #: :mod:`matgnn.models.targets`), with the statistics of the training labels as the steps' buffers
        self.targets = nn.ModuleList(HeadTarget(h, functools.partial(self.backbone_reference, k)
                                                if h["baseline"] == "backbone" else None)
                                     for k, h in enumerate(self.head_specs))

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
        """The training statistics, as :func:`matgnn.training.targets.normalization` computes them: every
        head's values' mean and std concatenated (heads in order), the per-head element table (``[heads, Z]``:
        element references, or which elements were labelled for a backbone residual), and the training labels'
        range in the learned space (``value_range``: lowest, highest), which bounds log-transformed heads."""
        means, stds = per_head(mean, self.head_specs), per_head(std, self.head_specs)
        lows, highs = (per_head(v, self.head_specs) for v in value_range) if value_range is not None else (None, None)
        with torch.no_grad():
            for k, target in enumerate(self.targets):
                target.standardize.mean.copy_(means[k])
                target.standardize.std.copy_(stds[k])
                for step in target.steps:
                    if isinstance(step, ElementReference) and element_baseline is not None:
                        step.element_reference.copy_(element_baseline[k])
                    elif isinstance(step, BackboneResidual) and element_baseline is not None:
                        step.labelled_elements.copy_(element_baseline[k])
                    elif isinstance(step, LogBound) and lows is not None:
                        step.learned_low.copy_(lows[k])
                        step.learned_high.copy_(highs[k])

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        upgrade_legacy_state(self, state_dict, prefix)  # weights saved before heads owned their steps
        super()._load_from_state_dict(state_dict, prefix, *args)

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

    def head_mean(self, k: int) -> torch.Tensor:
        """Head ``k``'s standardisation mean (a scalar, or one per component of a vector head)."""
        return head_value(self.targets[k].standardize.mean)

    def head_std(self, k: int) -> torch.Tensor:
        """Head ``k``'s standardisation std."""
        return head_value(self.targets[k].standardize.std)

    def transform_target(self, k: int, y: torch.Tensor, batch: Any = None) -> torch.Tensor:
        """Head ``k``'s label in the space the model is trained in (before standardising): its
        :class:`~matgnn.models.targets.HeadTarget`'s steps."""
        return self.targets[k].encode(y, batch)

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
        return self.targets[k].decode(v, batch)

    def bounded_heads(self) -> list[str]:
        """The heads whose target has a :class:`~matgnn.models.targets.LogBound` step (the log-transformed ones):
        their answers are held within its margin of the training range."""
        return [s["name"] for s, t in zip(self.head_specs, self.targets) if t.step(LogBound) is not None]

    @torch.no_grad()
    def at_bound(self, batch: Any, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per graph of ``batch``, for each of :meth:`bounded_heads`: whether its answer (``out``, as
        :meth:`forward` gives it; computed when not given) sits at the bound LOG_RANGE_MARGIN beyond the training
        labels' range, i.e. the head extrapolated and its answer was cut (a node head: any of the graph's atoms)."""
        if not self.bounded_heads():
            return {}
        out = out if out is not None else self(batch)
        flags: dict[str, torch.Tensor] = {}
        for k, spec in enumerate(self.head_specs):
            bound = self.targets[k].step(LogBound)
            if bound is None:
                continue
            t = self.transform_target(k, out[spec["name"]].float(), batch)  # the answer back in the learned space
            low, high = bound.bounds()
            hit = (t >= high - 1e-4) | (t <= low + 1e-4)  # ±inf bounds (models saved before): never
            if spec["level"] == "node":
                hit = scatter(hit.float(), batch[keys.BATCH], dim=0, dim_size=batch.num_graphs, reduce="max") > 0
            elif hit.dim() > 1:  # a vector head: any component
                hit = hit.any(dim=1)
            flags[spec["name"]] = hit
        return flags

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        """Predictions in the targets' own units."""
        out = self.forward_normalized(batch)
        return {spec["name"]: self.denormalize(k, out[spec["name"]], batch) for k, spec in enumerate(self.head_specs)}
