"""Models trained by us on real data and shipped inside the package, loadable by name:
``matgnn predict magmom-mp my_structures/`` or ``load_model(model_path("magmom-mp"))``.

Each is a folder ``<name>/`` with ``model.json`` + ``state.pt`` (what :func:`load_model`
reads) and ``MODEL_CARD.md`` (data, split, metrics, date, licence and citation of the data);
a shipped ensemble holds ``ensemble.json`` and its members under ``members/`` instead
(``matgnn predict`` gives their mean and a recalibrated σ). ``matgnn models`` lists them.
"""

from __future__ import annotations

from pathlib import Path

from matgnn.artifacts import SHIPPED_DIR, kind_of

HERE = SHIPPED_DIR


def _is_model(path: Path) -> bool:
    return kind_of(path) in ("model", "ensemble")


def available() -> list[str]:
    """Names of the shipped models (and ensembles)."""
    return sorted(p.name for p in HERE.iterdir() if _is_model(p))


def is_ensemble(name: str) -> bool:
    """Whether shipped model ``name`` is an ensemble (members' mean with σ)."""
    return (model_path(name) / "ensemble.json").is_file()


def model_path(name: str) -> Path:
    """The folder of shipped model ``name``."""
    path = HERE / name
    if not _is_model(path):
        raise FileNotFoundError(f"no shipped model {name!r}; shipped: {', '.join(available()) or 'none'}")
    return path


def model_card(name: str) -> str:
    """The model card (Markdown) of shipped model ``name``."""
    return (model_path(name) / "MODEL_CARD.md").read_text()
