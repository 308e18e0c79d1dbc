"""Models, chosen by name from one registry; all read the same cached graphs."""

from __future__ import annotations

import inspect
from typing import Any

from matgnn.models.base import MatgnnModel, load_model
from matgnn.models.cgcnn import CGCNN, CGConvNet
from matgnn.models.dimenet import DimeNetPP
from matgnn.models.pna import PNA
from matgnn.models.schnet import SchNet
from matgnn.models.zoo import OPERATORS, ZooModel

#: name -> model class. Every zoo operator name (``gatv2conv``, ...) also names a model:
#: the zoo model with that operator.
MODELS: dict[str, type[MatgnnModel]] = {
    "cgcnn": CGCNN,
    "cgconv_net": CGConvNet,
    "schnet": SchNet,
    "pna": PNA,
    "dimenet++": DimeNetPP,
    "zoo": ZooModel,
}


def model_names() -> list[str]:
    return sorted(MODELS) + [f"{op}" for op in OPERATORS if op not in MODELS]


def model_class(name: str) -> type[MatgnnModel]:
    """The class a registry name stands for (a zoo operator name means the zoo model)."""
    if name in MODELS:
        return MODELS[name]
    if name in OPERATORS:
        return ZooModel
    raise ValueError(f"unknown model {name!r}; available: {', '.join(model_names())}")


def build_model(name: str, heads: list[dict[str, Any]], cutoff: float, **kwargs: Any) -> MatgnnModel:
    """A model from the registry. Keyword arguments a model does not take (e.g.
    ``atom_features`` for SchNet, which embeds Z) are dropped; None values are ignored."""
    cls = model_class(name)
    if name in OPERATORS and name not in MODELS:
        kwargs["operator"] = name
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in params and v is not None}
    return cls(heads=heads, cutoff=cutoff, **kwargs)


__all__ = ["MODELS", "MatgnnModel", "OPERATORS", "build_model", "load_model", "model_class", "model_names"]
