"""Optional packages (which extra of matgnn installs each) and the pretrained backbones built on them.

Torch-free and read before anything is imported: a model folder's package needs are checked from its
``model.json`` alone (:func:`matgnn.artifacts.required_packages`), and a missing package is one line naming the
command that installs it.

Adding a backbone is one file, ``src/matgnn/models/backbones/<name>.py`` (its feature store, its own graphs when
it is fine-tuned, its models), plus one line in :data:`BACKBONES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: optional package -> the extra of matgnn that installs it
EXTRAS = {"chgnet": "foundation", "sevenn": "foundation", "xgboost": "baselines", "optuna": "sweep"}


@dataclass(frozen=True)
class Backbone:
    """A pretrained backbone: its ``name`` (``--features NAME``, batch fields ``NAME_features`` and
    ``NAME_graphs``), ``title``, the ``package`` computing it, and the classes of its module
    (``matgnn.models.backbones.<name>``): ``frozen``, our MLP on its frozen features (``model: {name: NAME}``),
    and ``fine_tuned``, the backbone trained in place (``model: {name: NAME_ft}``; it loads the package's own
    network when built)."""

    name: str
    title: str
    package: str
    frozen: str
    fine_tuned: str | None = None

    @property
    def module(self) -> str:
        return f"matgnn.models.backbones.{self.name}"

    @property
    def models(self) -> dict[str, str]:
        """Config name -> class name."""
        return {self.name: self.frozen, **({f"{self.name}_ft": self.fine_tuned} if self.fine_tuned else {})}


#: backbone name -> what it is; one line per backbone
BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("chgnet", "CHGNet", "chgnet", frozen="CHGNetBackbone", fine_tuned="CHGNetFineTune"),
    Backbone("sevennet", "SevenNet", "sevenn", frozen="SevenNetBackbone", fine_tuned="SevenNetFineTune"),
)}


def missing_package_message(package: str, what: str) -> str:
    """One line: ``what`` needs ``package``, and the command that installs it."""
    extra = EXTRAS.get(package, "foundation")
    return f"{what} needs the {package} package: pip install 'matgnn[{extra}]'"


def package_installed(package: str) -> bool:
    """Whether ``package`` can be found (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def require_package(package: str, what: str) -> None:
    """A :class:`~matgnn.errors.UserError` naming the extra unless ``package`` is installed (checked before any
    work, so nothing is computed or cached without it)."""
    if not package_installed(package):
        from matgnn.errors import UserError

        raise UserError(missing_package_message(package, what))


def import_backbone(module: str, name: str, model: str, package: str) -> Any:
    """``module.name`` from a backbone's package, or a :class:`~matgnn.errors.UserError` saying how to
    install it (the ``[foundation]`` extra); a package that is there but fails to import is said too."""
    import importlib

    from matgnn.errors import UserError

    require_package(package, f"model {model!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as e:  # noqa: BLE001 - a broken install: its own error, in one line
        raise UserError(f"model {model!r}: the {package} package is installed but does not import "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); reinstall it: "
                        f"pip install --force-reinstall 'matgnn[{EXTRAS.get(package, 'foundation')}]'") from None
