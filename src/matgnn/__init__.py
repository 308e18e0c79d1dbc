"""matgnn: graph neural networks for materials properties from crystal structures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matgnn.version import __version__


def load_model(path: str | Path, map_location: Any = "cpu") -> Any:
    """Rebuild a saved model from its folder or from a run folder (see
    :func:`matgnn.models.loading.load_model`)."""
    from matgnn.models.loading import load_model as _load

    return _load(path, map_location)


__all__ = ["__version__", "load_model"]
