"""The pretrained backbones, one module each (``matgnn.models.backbones.<name>``: its feature store, its own
graphs, its models), listed in :data:`matgnn.packages.BACKBONES`; :mod:`matgnn.models.backbones.base` holds what
they share."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from matgnn.packages import BACKBONES


def backbone_module(name: str) -> ModuleType:
    """Backbone ``name``'s module, imported (which registers its feature store, batch fields and models)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return importlib.import_module(BACKBONES[name].module)


def backbone_models() -> dict[str, type]:
    """Config name -> model class, for every model of every backbone."""
    return {model: getattr(backbone_module(name), cls) for name, entry in BACKBONES.items()
            for model, cls in entry.models.items()}


def frozen_features_model(name: str) -> Any:
    """The frozen-features model class of backbone ``name``: it knows the backbone's current version and the batch
    field that carries its features."""
    return getattr(backbone_module(name), BACKBONES[name].frozen)


def feature_store(name: str) -> Any:
    """The process's feature store of backbone ``name`` (:class:`~matgnn.graphs.backbone_features.FrozenBackbone`)."""
    from matgnn.graphs.backbone_features import backbone_features

    backbone_module(name)
    return backbone_features(name)
