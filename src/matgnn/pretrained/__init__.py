"""Models trained by us on real data and shipped inside the package, loadable by name:
``matgnn predict magmom-mp my_structures/`` or ``load_model(model_path("magmom-mp"))``.

Each is a folder ``<name>/`` with ``model.json`` + ``state.pt`` (what :func:`load_model`
reads) and ``MODEL_CARD.md`` (data, split, metrics, date, licence and citation of the data).
``matgnn models`` lists them.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.name for p in HERE.iterdir() if (p / "model.json").is_file())


def model_path(name: str) -> Path:
    """The folder of shipped model ``name``."""
    path = HERE / name
    if not (path / "model.json").is_file():
        raise FileNotFoundError(f"no shipped model {name!r}; shipped: {', '.join(available()) or 'none'}")
    return path


def model_card(name: str) -> str:
    """The model card (Markdown) of shipped model ``name``."""
    return (model_path(name) / "MODEL_CARD.md").read_text()
