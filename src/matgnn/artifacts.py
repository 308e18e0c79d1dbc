"""One home for what runs leave behind and how a model is named.

A *model spec* is any of: a run folder (``runs/<name>-<time>``, holding ``model/``), a model
folder (``model.json`` + ``state.pt``), an ensemble folder (``ensemble.json`` + members), the
name of a model shipped with matgnn (``matgnn models``), the name of a folder inside one of the
directories listed in ``$MATGNN_MODELS`` (``os.pathsep``-separated, searched in order, after the
shipped names), or several of those joined by commas (an ensemble). :func:`resolve` turns a spec
into folders; every command and API that takes a model goes through it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from matgnn.errors import UserError

MODEL_FILE = "model.json"
WEIGHTS_FILE = "state.pt"
ENSEMBLE_FILE = "ensemble.json"
#: environment variable: directories holding more named model folders
MODELS_PATH_VARIABLE = "MATGNN_MODELS"


@dataclass(frozen=True)
class Resolved:
    """Where a single (not comma-joined) model spec points.

    ``kind`` is ``run``, ``model`` or ``ensemble``; ``path`` the folder named; ``origin`` says
    how it was found (``path``, ``shipped`` or the ``$MATGNN_MODELS`` directory)."""

    spec: str
    kind: str
    path: Path
    origin: str

    @property
    def model_dir(self) -> Path:
        """The folder holding ``model.json`` (a run's ``model/``); an ensemble has none."""
        if self.kind == "ensemble":
            raise UserError(f"{self.spec} is an ensemble: use its members")
        return self.path / "model" if self.kind == "run" else self.path


def kind_of(path: Path) -> str | None:
    """``run``, ``model``, ``ensemble`` or None for a folder that is none of them."""
    if (path / ENSEMBLE_FILE).is_file():
        return "ensemble"
    if (path / MODEL_FILE).is_file():
        return "model"
    if (path / "model" / MODEL_FILE).is_file():
        return "run"
    return None


def search_path() -> list[Path]:
    """The directories of ``$MATGNN_MODELS`` that exist, in order."""
    raw = os.environ.get(MODELS_PATH_VARIABLE, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p and Path(p).expanduser().is_dir()]


def named_models() -> dict[str, tuple[Path, str]]:
    """Every model that can be named: shipped ones, then those of ``$MATGNN_MODELS`` (a name
    shipped with matgnn is never shadowed). Name -> (folder, origin)."""
    from matgnn.pretrained import HERE

    out: dict[str, tuple[Path, str]] = {}
    for root, origin in [(HERE, "shipped"), *((d, str(d)) for d in search_path())]:
        for p in sorted(root.iterdir()):
            if p.is_dir() and p.name not in out and kind_of(p) is not None:
                out[p.name] = (p, origin)
    return out


def resolve(spec: str | Path) -> Resolved:
    """A single model spec as a :class:`Resolved`; a :class:`UserError` names what was tried."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        kind = kind_of(path) if path.is_dir() else None
        if kind is None:
            raise UserError(f"{path}: not a matgnn run, model or ensemble folder (no {MODEL_FILE}, model/{MODEL_FILE} "
                            f"or {ENSEMBLE_FILE})")
        return Resolved(text, kind, path, "path")
    named = named_models()
    if text in named:
        folder, origin = named[text]
        return Resolved(text, kind_of(folder), folder, origin)  # type: ignore[arg-type]
    where = ", ".join(str(d) for d in search_path()) or f"none (set ${MODELS_PATH_VARIABLE})"
    raise UserError(f"{text}: no such run or model folder, and no model of that name (shipped or in "
                    f"${MODELS_PATH_VARIABLE}: {where}); known names: {', '.join(named) or 'none'}")


def split_specs(spec: str | Path | list[str | Path]) -> list[str]:
    """A comma-joined spec (or a list of specs) as single specs."""
    items = spec if isinstance(spec, list) else [spec]
    out = [s for item in items for s in (str(item).split(",") if isinstance(item, str) else [str(item)]) if s]
    if not out:
        raise UserError("no model given")
    return out


def model_folder(spec: str | Path) -> Path:
    """The ``model.json`` folder of a single run/model spec."""
    return resolve(spec).model_dir


def ensemble_members(folder: str | Path) -> tuple[list[Path], dict]:
    """The member model folders of an ensemble folder (relative members stay inside it when the
    folder moved) and its per-head σ recalibration."""
    from matgnn.evaluation.uncertainty import Recalibration

    folder = Path(folder)
    try:
        info = json.loads((folder / ENSEMBLE_FILE).read_text())
        listed = info["members"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{folder / ENSEMBLE_FILE}: not a matgnn ensemble file ({type(e).__name__}: {e})") from None
    members = []
    for m in listed:
        p = Path(m)
        if not p.is_absolute():
            p = (folder / p).resolve()
        elif not p.exists() and (folder / "members" / p.name).exists():  # the folder was moved
            p = folder / "members" / p.name
        members.append(p)
    recal = info.get("recalibration") or info.get("recalibration_factors") or {}
    return members, {h: Recalibration.from_dict(v) for h, v in recal.items()}


def expand(spec: str | Path | list[str | Path]) -> tuple[list[Path], dict]:
    """Every model folder a spec stands for (ensembles replaced by their members) and, when the
    spec is a single ensemble, its σ recalibration."""
    specs = split_specs(spec)
    folders: list[Path] = []
    recal: dict = {}
    for s in specs:
        r = resolve(s)
        if r.kind == "ensemble":
            members, rc = ensemble_members(r.path)
            if len(specs) == 1:
                recal = rc
            folders += [resolve(m).model_dir for m in members]
        else:
            folders.append(r.model_dir)
    return folders, recal


def model_info(spec: str | Path) -> dict:
    """``model.json`` of a single run/model spec as a dict."""
    from matgnn.models.base import read_model_info

    return read_model_info(model_folder(spec))


def fingerprint(model_dir: Path) -> str:
    """SHA-256 of a model folder's ``model.json`` and ``state.pt``: names exactly the weights a
    run started from (its lineage never has to be guessed from git history or file times)."""
    import hashlib

    h = hashlib.sha256()
    for name in (MODEL_FILE, WEIGHTS_FILE):
        h.update(name.encode() + b"\0" + (Path(model_dir) / name).read_bytes())
    return h.hexdigest()


def card_summary(folder: Path) -> str:
    """The first line of text of a model folder's ``MODEL_CARD.md`` (empty without one)."""
    card = folder / "MODEL_CARD.md"
    if not card.is_file():
        return ""
    return next((ln.strip() for ln in card.read_text().splitlines() if ln.strip() and not ln.startswith("#")), "")
