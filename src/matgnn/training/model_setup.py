"""The model a run starts from: built from its config (with the model class's training
statistics), transferred from another model, or the residual model of delta learning on a frozen
base; then standardised on the training labels and frozen as ``transfer.freeze`` says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console

from matgnn.config import RunConfig
from matgnn.graphs.batching import make_loader
from matgnn.graphs.cache import GraphCache
from matgnn.graphs.neighbors import GraphSettings
from matgnn.models import MatgnnModel, build_model, load_model, model_class
from matgnn.models.base import batch_fields_of
from matgnn.training import transfer
from matgnn.training.data import SplitGraphs
from matgnn.training.targets import normalization, residual_normalization


@dataclass
class RunModel:
    """What training starts from. ``base``: the frozen base of delta learning; ``transfer_info``
    and ``initial`` (the weights before training): for transfer runs; ``frozen``: layer groups."""

    model: MatgnnModel
    base: MatgnnModel | None = None
    transfer_info: dict[str, Any] | None = None
    initial: dict[str, Any] | None = None
    frozen: list[str] | None = None

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def parent_graph_settings(cfg: RunConfig, console: Console) -> RunConfig:
    """A transfer or delta run featurises like its parent model (its features depend on them)."""
    parent = cfg.transfer.from_model or cfg.delta.base_model
    if not parent:
        return cfg
    saved = transfer.source_info(parent).get("graphs")
    if saved and GraphSettings(**saved) != cfg.graphs:
        console.print(f"transfer: using the source model's graph settings {saved}")
        return cfg.model_copy(update={"graphs": GraphSettings(**saved)})
    return cfg


def build_run_model(cfg: RunConfig, cache: GraphCache, split: dict[str, list[int]],
                    labels: list[dict[str, np.ndarray]], data: SplitGraphs, console: Console) -> RunModel:
    heads = [h.spec() for h in cfg.targets]
    run = RunModel(model=None)  # type: ignore[arg-type]
    if cfg.transfer.from_model:  # the source's architecture (a PNA keeps its degree histogram)
        run.model, run.transfer_info = transfer.transferred_model(cfg.transfer.from_model, heads,
                                                                  cfg.transfer.keep_heads)
        info = run.transfer_info
        console.print(f"transfer from {info['source']} ({info['class']}): "
                      f"{len(info['loaded'])} tensors loaded, {len(info['new'])} new")
    else:
        stats = model_class(cfg.model.name).training_statistics(cache.record(k) for k in split["train"])
        run.model = build_model(cfg.model, heads, cutoff=cfg.graphs.cutoff, **stats)
    if cfg.delta.base_model:
        run.base = load_model(transfer.model_dir(cfg.delta.base_model))
        if cfg.delta.base_heads:  # the base names the targets otherwise (a PBE-gap base for an OptB88vdW target)
            from matgnn.models.delta import BaseView

            unknown = sorted(set(cfg.delta.base_heads.values()) - {s["name"] for s in run.base.head_specs})
            if unknown:
                raise ValueError(f"delta.base_heads: {unknown} are not heads of the base model "
                                 f"{cfg.delta.base_model} (its heads: {[s['name'] for s in run.base.head_specs]})")
            run.base = BaseView(run.base, cfg.delta.base_heads)
        base_heads = {(s["name"], s["level"]) for s in run.base.head_specs}
        missing = [h.name for h in cfg.targets if (h.name, h.level) not in base_heads]
        if missing:
            raise ValueError(f"delta learning: the base model {cfg.delta.base_model} has no head for {missing}")
        data.add_batch_fields(batch_fields_of(run.base))  # the base's own fields (a backbone's features, triplets)
        mean, std = residual_normalization(run.base, make_loader(data.graphs["train"], cfg.train.batch_size),
                                           cfg.targets)
        baseline = value_range = None
        console.print(f"delta learning on the residuals of {cfg.delta.base_model}")
    else:
        mean, std, baseline, value_range = normalization(labels, split["train"], cfg.targets)
    run.model.set_normalization(mean, std, baseline, value_range)
    run.frozen = transfer.freeze(run.model, cfg.transfer.freeze)
    if run.frozen:
        console.print(f"frozen layer groups: {', '.join(run.frozen)}")
    run.initial = transfer.snapshot(run.model) if run.transfer_info is not None else None
    name = cfg.model.name if run.transfer_info is None else run.transfer_info["class"]
    console.print(f"model {name}: {run.n_parameters:,} parameters")
    return run
