"""matgnn: graph neural networks for materials properties from crystal structures.

The public Python API (each name is imported on first use, so ``import matgnn`` stays light):

- :func:`train` — train a run from a :class:`RunConfig` (what ``matgnn train`` does); returns the run folder;
- :func:`load_model` — any saved model (run, model or ensemble folder, shipped name) as one model object;
- :func:`predict` — a model's answers for ASE ``Atoms``, structures or structure files, in memory;
- :class:`RunConfig` — the run configuration (the schema ``matgnn train --config`` reads);
- :class:`MatgnnCalculator` — an ASE calculator for any model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matgnn.version import __version__

if TYPE_CHECKING:
    from matgnn.ase import MatgnnCalculator
    from matgnn.config import RunConfig
    from matgnn.models.loading import load_model
    from matgnn.prediction.predict import predict
    from matgnn.training.run import train

#: public name -> the module that defines it
_PUBLIC = {"train": "matgnn.training.run", "load_model": "matgnn.models.loading", "predict": "matgnn.prediction.predict",
           "RunConfig": "matgnn.config", "MatgnnCalculator": "matgnn.ase"}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'matgnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = ["MatgnnCalculator", "RunConfig", "__version__", "load_model", "predict", "train"]
