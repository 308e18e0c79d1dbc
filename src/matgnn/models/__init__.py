"""Models, chosen by name from one registry; all read the same cached graphs."""

from __future__ import annotations

from typing import Any

from matgnn.models.base import MatgnnModel, load_model
from matgnn.models.cgcnn import CGCNN

#: name -> model class
MODELS: dict[str, type[MatgnnModel]] = {"cgcnn": CGCNN}


def build_model(name: str, heads: list[dict[str, Any]], cutoff: float, **kwargs: Any) -> MatgnnModel:
    """A model from the registry; unknown names list what exists."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](heads=heads, cutoff=cutoff, **kwargs)


__all__ = ["MODELS", "MatgnnModel", "build_model", "load_model"]
