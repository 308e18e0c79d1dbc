"""The model classes a saved ``model.json`` may name: a fixed list, read before anything is
imported. Loading a model folder is data, never code: a class outside this list is refused, and a
listed class is imported from its own module only. Every model class defined in matgnn registers
itself when its module is imported (:class:`~matgnn.models.base.MatgnnModel` subclasses do so on
definition) and must be listed here, so a new model cannot be saved in a form that does not load.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from matgnn.errors import UnsafeArtifactError
from matgnn.packages import BACKBONES

#: module -> the classes of it a model.json may name
ALLOWED: dict[str, tuple[str, ...]] = {
    "matgnn.models.cgcnn": ("CGCNN", "CGConvNet"),
    "matgnn.models.schnet": ("SchNet",),
    "matgnn.models.pna": ("PNA",),
    "matgnn.models.dimenet": ("DimeNetPP",),
    "matgnn.models.zoo": ("ZooModel",),
    "matgnn.models.alignn": ("ALIGNN",),
    **{entry.module: tuple(entry.models.values()) for entry in BACKBONES.values()},
    "matgnn.models.delta": ("DeltaModel",),
    "matgnn.models.ensemble": ("EnsembleModel",),
    "matgnn.models.reference": ("ReferenceModel",),
    "matgnn.models.regressors": ("BackboneRegressor",),
}

#: where model classes used to live -> where they live now, for the model.json files written before they moved (data,
#: read like ALLOWED: the class must be listed at its new home)
MOVED: dict[tuple[str, str], str] = {("matgnn.models.backbones", cls): entry.module
                                     for entry in BACKBONES.values() for cls in entry.models.values()}

#: (module, class name) -> class, filled as the model modules are imported
_REGISTERED: dict[tuple[str, str], type] = {}


def register_model_class(cls: type) -> type:
    """Record ``cls`` (one of :data:`ALLOWED`) as loadable."""
    if not cls.__module__.startswith("matgnn."):
        raise ValueError(f"only matgnn's own classes can be registered, not {cls.__module__}.{cls.__name__}")
    if cls.__name__ not in ALLOWED.get(cls.__module__, ()):
        raise ValueError(f"{cls.__module__}.{cls.__name__} is a model class missing from "
                         "matgnn.models.registry.ALLOWED (a saved model of it could not be loaded)")
    _REGISTERED[(cls.__module__, cls.__name__)] = cls
    return cls


def registered_class(module: Any, name: Any, where: str | Path) -> type:
    """The class ``module.name`` if :data:`ALLOWED` lists it; anything else is an
    :class:`UnsafeArtifactError` raised before anything is imported. A class that moved (:data:`MOVED`) is
    found at its new home."""
    if isinstance(module, str) and isinstance(name, str):
        module = MOVED.get((module, name), module)
    if not (isinstance(module, str) and isinstance(name, str) and name in ALLOWED.get(module, ())):
        known = ", ".join(sorted(c for names in ALLOWED.values() for c in names))
        raise UnsafeArtifactError(f"{where} names class {module}.{name}, which is not one of matgnn's model classes "
                                  f"({known}); refused: a model folder is data and cannot name code to run")
    if (module, name) not in _REGISTERED:
        importlib.import_module(module)  # a listed matgnn module: defining the class registers it
    return _REGISTERED[(module, name)]


def model_spec(model: Any) -> dict[str, Any]:
    """What rebuilds ``model`` inside a composite's saved arguments: its class and constructor
    arguments (weights not included; the composite's ``state.pt`` holds them)."""
    return {"module": type(model).__module__, "class": type(model).__name__, "init_args": model.init_args}


def saved_arguments(cls: type, init_args: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments a saved ``init_args`` stands for: those it names, and for an argument the class
    gained after it was saved, the value of the code that saved it (``cls.ARGUMENTS_BEFORE``)."""
    return {**getattr(cls, "ARGUMENTS_BEFORE", {}), **init_args}


def build_from_spec(spec: Any, where: str | Path = "a composite model's spec") -> Any:
    """A model rebuilt from :func:`model_spec`'s dict (its class must be registered)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("init_args"), dict):
        raise UnsafeArtifactError(f"{where}: a member spec must be a mapping with 'init_args'")
    cls = registered_class(spec.get("module"), spec.get("class"), where)
    return cls(**saved_arguments(cls, spec["init_args"]))
