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
from typing import Any

from matgnn.errors import UserError
from matgnn.packages import BACKBONES

MODEL_FILE = "model.json"
WEIGHTS_FILE = "state.pt"
ENSEMBLE_FILE = "ensemble.json"
CHECKPOINT_FILE = "checkpoint_last.pt"
#: the models shipped inside the package (:mod:`matgnn.pretrained`)
SHIPPED_DIR = Path(__file__).resolve().parent / "pretrained"
#: environment variable: directories holding more named model folders
MODELS_PATH_VARIABLE = "MATGNN_MODELS"


@dataclass(frozen=True)
class RunFolder:
    """A training run's folder and what it holds, by name: ``config.yaml`` (the resolved config),
    ``split.json`` (ids per split), ``load_report.json`` / ``skipped.csv``, ``history.csv``,
    ``metrics.json``, ``checkpoint_last.pt`` (to resume), ``model/`` (``load_model``),
    ``predictions_<split>.csv`` (``_atoms.csv`` for per-atom heads), per-element tables and plots;
    ``transfer.json`` / ``delta.json`` / ``delta_model/`` name the parent model by hash."""

    path: Path

    @classmethod
    def create(cls, output_dir: str | Path, name: str) -> RunFolder:
        """A new folder ``<output_dir>/<name>-<time>[-k]``, created atomically: two runs started in
        the same second (or by two processes) never share one."""
        import time

        name = "".join(c if c.isalnum() or c in "+-_.=" else "_" for c in name).strip(".") or "run"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        for k in range(1, 10_000):
            path = root / (f"{name}-{stamp}" if k == 1 else f"{name}-{stamp}-{k}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise UserError(f"{root}: could not find a free run folder name for {name}-{stamp}")

    config = property(lambda self: self.path / "config.yaml")
    split = property(lambda self: self.path / "split.json")
    metrics = property(lambda self: self.path / "metrics.json")
    history = property(lambda self: self.path / "history.csv")
    checkpoint = property(lambda self: self.path / CHECKPOINT_FILE)
    model = property(lambda self: self.path / "model")
    delta_model = property(lambda self: self.path / "delta_model")

    def predictions(self, split: str, atoms: bool = False) -> Path:
        return self.path / f"predictions_{split}{'_atoms' if atoms else ''}.csv"

    def read_split(self) -> dict[str, list[str]]:
        """Ids per split (``train``, ``val``, ``test``) as saved."""
        saved = json.loads(self.split.read_text())
        return {k: list(saved.get(k, [])) for k in ("train", "val", "test")}

    def read_metrics(self) -> dict:
        return json.loads(self.metrics.read_text())

    def scores(self, split: str = "test") -> dict[str, dict[str, float]]:
        """A split's metrics structured, head (or ``head.component``) -> metric -> value, as the run
        wrote them (``metrics.json``'s ``scores``); {} for runs written before they were stored."""
        return self.read_metrics().get("scores", {}).get(split, {})

    def write_json(self, name: str, obj: object) -> Path:
        path = self.path / name
        path.write_text(json.dumps(obj, indent=1))
        return path

    lock_file = property(lambda self: self.path / "run.lock")

    def lock(self) -> None:
        """Hold the run folder for this process (an advisory ``flock`` on ``run.lock``, released when the
        process ends however it ends): a second process training the same folder is a :class:`UserError`
        naming the holder."""
        import fcntl
        import socket
        import time

        f = open(self.lock_file, "a+")  # noqa: SIM115 - held open for the run
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UserError(f"{self.path} is being trained by {holder}; wait for it to end (or stop it) before "
                            "resuming") from None
        f.seek(0)
        f.truncate()
        f.write(f"PID {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        _HELD[str(self.path)] = f

    def unlock(self) -> None:
        f = _HELD.pop(str(self.path), None)
        if f is not None:
            f.close()


#: run folders this process holds (:meth:`RunFolder.lock`)
_HELD: dict[str, object] = {}


def safe_file_part(name: str) -> str:
    """``name`` as a part of a file name: letters, digits, ``-``, ``_``, ``.`` and ``+`` kept, anything else (a
    space, ``/``, a shell character) replaced by ``_``; never empty, never starting with a dot. Used wherever a
    target's or run's name names a file (``gap pbe`` → ``gap_pbe``)."""
    out = "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in str(name)).lstrip(".")
    return out or "_"


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
        # an ensemble folder stands for its members; when they are not beside it (a folder of
        # `--combine` mailed on its own), its model/ — the same ensemble saved as one model
        if (path / "model" / MODEL_FILE).is_file() and not _members_present(path):
            return "run"
        return "ensemble"
    if (path / MODEL_FILE).is_file():
        return "model"
    if (path / "model" / MODEL_FILE).is_file():
        return "run"
    return None


def _members_present(folder: Path) -> bool:
    try:
        members, _ = ensemble_members(folder)
    except UserError:
        return False
    return all(kind_of(m) in ("run", "model") for m in members)


def _baseline_kind(run: Path) -> str:
    """What a baseline run folder fitted, in a few words (its ``baseline.json``)."""
    try:
        info = json.loads((run / "baseline.json").read_text())
        return f"{info['kind']} on {info.get('features') or 'descriptors'}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable baseline.json"


def search_path() -> list[Path]:
    """The directories of ``$MATGNN_MODELS`` that exist, in order."""
    raw = os.environ.get(MODELS_PATH_VARIABLE, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p and Path(p).expanduser().is_dir()]


def search_path_problems() -> list[str]:
    """What is wrong with entries of ``$MATGNN_MODELS`` that give no models (said, never silently ignored)."""
    raw = os.environ.get(MODELS_PATH_VARIABLE, "")
    out = []
    for p in (x for x in raw.split(os.pathsep) if x):
        path = Path(p).expanduser()
        if not path.exists():
            out.append(f"${MODELS_PATH_VARIABLE} entry {p}: no such folder")
        elif not path.is_dir():
            out.append(f"${MODELS_PATH_VARIABLE} entry {p}: not a folder")
    return out


def named_models(shadowed: list[tuple[str, Path]] | None = None) -> dict[str, tuple[Path, str]]:
    """Every model that can be named: shipped ones, then those of ``$MATGNN_MODELS`` in order. The rule for
    a name found twice: **the first one wins** — a shipped name is never shadowed, and an earlier directory of
    ``$MATGNN_MODELS`` wins over a later one; the losers are appended to ``shadowed`` (``matgnn models`` lists
    them). Name -> (folder, origin)."""
    out: dict[str, tuple[Path, str]] = {}
    for root, origin in [(SHIPPED_DIR, "shipped"), *((d, str(d)) for d in search_path())]:
        for p in sorted(root.iterdir()):
            if not p.is_dir() or kind_of(p) is None:
                continue
            if p.name in out:
                if shadowed is not None:
                    shadowed.append((p.name, p))
                continue
            out[p.name] = (p, origin)
    return out


#: classes of saved models that need an optional package, and which (the backbones' models); the backbones' packages
_CLASS_PACKAGES = {cls: entry.package for entry in BACKBONES.values() for cls in entry.models.values()}
_BACKBONE_PACKAGES = {name: entry.package for name, entry in BACKBONES.items()}


def required_packages(folder: Path) -> list[str]:
    """The optional packages a model, run or ensemble folder needs to answer (read from its ``model.json``
    files, nested models included; nothing is loaded)."""
    found: dict[str, None] = {}

    def walk(x: object) -> None:
        if isinstance(x, dict):
            cls = x.get("class")
            if cls in _CLASS_PACKAGES:
                found[_CLASS_PACKAGES[cls]] = None
            args = x.get("init_args")
            if cls == "BackboneRegressor" and isinstance(args, dict):
                if args.get("backbone") in _BACKBONE_PACKAGES:
                    found[_BACKBONE_PACKAGES[args["backbone"]]] = None
                if args.get("kind") == "xgboost":
                    found["xgboost"] = None
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for f in sorted(Path(folder).rglob(MODEL_FILE)):
        try:
            walk(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return list(found)


def resolve(spec: str | Path) -> Resolved:
    """A single model spec as a :class:`Resolved`; a :class:`UserError` names what was tried."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        kind = kind_of(path) if path.is_dir() else None
        if kind is None and path.is_dir() and (path / "baseline.json").is_file():
            raise UserError(f"{path}: a baseline run ({_baseline_kind(path)}) is scored, not saved as a model; linear "
                            f"and xgboost baselines on a backbone's features (--features {' or '.join(BACKBONES)}) "
                            "save one")
        if kind is None:
            raise UserError(f"{path}: not a matgnn run, model or ensemble folder (no {MODEL_FILE}, model/{MODEL_FILE} "
                            f"or {ENSEMBLE_FILE})")
        return Resolved(text, kind, path, "path")
    named = named_models()
    if text in named:
        folder, origin = named[text]
        return Resolved(text, kind_of(folder), folder, origin)  # type: ignore[arg-type]
    where = ", ".join(str(d) for d in search_path()) or f"none (set ${MODELS_PATH_VARIABLE})"
    problems = "".join(f"; {p}" for p in search_path_problems())
    raise UserError(f"{text}: no such run or model folder, and no model of that name (shipped or in "
                    f"${MODELS_PATH_VARIABLE}: {where}){problems}; known names: {', '.join(named) or 'none'}")


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
    return members, dict(recal)


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


def regular_file(path: Path) -> Path:
    """``path`` if it is a regular file (not a FIFO, device or socket, which would block or never end a
    read), else a :class:`UserError` naming it."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: not a regular file (a pipe, device or socket is never read)")
    return Path(path)


def read_model_info(path: Path) -> dict:
    """``model.json`` of model folder ``path`` as a dict (a bad file is a :class:`UserError`)."""
    try:
        info = json.loads(regular_file(Path(path) / MODEL_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{Path(path) / MODEL_FILE}: not a matgnn model file (not JSON: {e})") from None
    if not isinstance(info, dict):
        raise UserError(f"{Path(path) / MODEL_FILE}: not a matgnn model file (not a JSON object)")
    return info


def model_info(spec: str | Path) -> dict:
    """``model.json`` of a single run/model spec as a dict."""
    return read_model_info(model_folder(spec))


def fingerprint(model_dir: Path) -> str:
    """SHA-256 of a model folder's ``model.json`` and ``state.pt``: names exactly the weights a
    run started from (its lineage never has to be guessed from git history or file times)."""
    import hashlib

    h = hashlib.sha256()
    for name in (MODEL_FILE, WEIGHTS_FILE):
        h.update(name.encode() + b"\0" + (Path(model_dir) / name).read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Parent:
    """The model a run started from: ``relation`` ``transfer`` (fine-tuned from it) or ``delta``
    (the frozen base), the spec and folder it was named by, and the SHA-256 of its files."""

    relation: str
    spec: str
    folder: Path
    sha256: str | None


def parent_of(run_dir: str | Path) -> Parent | None:
    """The parent recorded in a run folder's ``transfer.json`` / ``delta.json`` (None: a run
    trained from scratch)."""
    run_dir = Path(run_dir)
    for relation, name, spec_key, dir_key, sha_key in (("transfer", "transfer.json", "source", "source", "source_sha256"),
                                                       ("delta", "delta.json", "base_model", "base_dir", "base_sha256")):
        if (run_dir / name).is_file():
            info = json.loads((run_dir / name).read_text())
            return Parent(relation, str(info.get(spec_key)), Path(str(info.get(dir_key))), info.get(sha_key))
    return None


def find_by_fingerprint(sha256: str, roots: list[Path]) -> Path | None:
    """A model folder under ``roots`` (searched recursively) whose files hash to ``sha256``."""
    for root in roots:
        if not Path(root).is_dir():
            continue
        for info in sorted(Path(root).rglob(MODEL_FILE)):
            if (info.parent / WEIGHTS_FILE).is_file() and fingerprint(info.parent) == sha256:
                return info.parent
    return None


def parent_run(run_dir: str | Path, roots: list[Path] = ()) -> Path | None:
    """The run folder that trained a run's parent model, found by the parent's hash: the folder it
    was named by when its files still match, else a model folder under ``roots`` that matches.
    None for a run from scratch, a parent recorded without a hash, or one no longer found."""
    parent = parent_of(run_dir)
    if parent is None or not parent.sha256:
        return None
    folder = parent.folder if parent.folder.is_dir() and (parent.folder / MODEL_FILE).is_file() else None
    if folder is None or fingerprint(folder) != parent.sha256:
        folder = find_by_fingerprint(parent.sha256, list(roots))
    if folder is None:
        return None
    run = folder.parent  # a run's model/ folder
    return run if (run / "config.yaml").is_file() and (run / "metrics.json").is_file() else None


def lineage(run_dir: str | Path, roots: list[Path] = ()) -> list[tuple[Path, dict, dict]]:
    """(run folder, config, metrics) of a run and of every run it was fine-tuned from, oldest
    first: each parent found by the SHA-256 its child recorded (:func:`parent_run`, searching the
    child's own output folder and ``roots``), never guessed from names, git history or file times.
    A parent recorded without a hash, or no longer found, ends the chain (said on stderr)."""
    import sys


    run: Path | None = Path(run_dir)
    stages: list[tuple[Path, dict, dict]] = []
    while run is not None and (run / "metrics.json").is_file() and run.resolve() not in [r.resolve() for r, _, _ in stages]:
        stages.append((run, read_yaml(run / "config.yaml"),
                       json.loads((run / "metrics.json").read_text())))
        parent = parent_of(run)
        if parent is None or parent.relation != "transfer":
            break
        found = parent_run(run, [run.parent, *roots])
        if found is None:
            print(f"lineage of {run}: its parent {parent.spec} (sha256 {parent.sha256 or 'not recorded'}) was not "
                  "found as a run folder; the stages are listed from here on", file=sys.stderr)
        run = found
    return stages[::-1]


def card_summary(folder: Path) -> str:
    """The first line of text of a model folder's ``MODEL_CARD.md`` (empty without one)."""
    card = folder / "MODEL_CARD.md"
    if not card.is_file():
        return ""
    return next((ln.strip() for ln in card.read_text().splitlines() if ln.strip() and not ln.startswith("#")), "")


def read_yaml(path: str | Path) -> object:
    """A YAML file read as plain data (``yaml.safe_load``: a ``!!python`` tag is refused, never executed); a
    file that is not plain YAML is a one-line :class:`~matgnn.errors.UserError` naming it and the line."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if isinstance(e, yaml.constructor.ConstructorError):  # a tag asking to build an object: never done
            raise UserError(f"{path}{where}: refused, not plain YAML data: {problem}") from None
        raise UserError(f"{path}{where}: not valid YAML: {problem}") from None


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a full disk or a
    kill never leaves a truncated file where a good one was (the OSError names the path)."""
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_tensors(obj: Any, path: Path) -> None:
    """``torch.save`` of tensors and plain values, serialised in memory and written with
    :func:`write_atomic` (torch's own file writer hides the OS error of a full disk)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(Path(path), buf.getbuffer())


def default_cache_root() -> Path:
    """Where caches live (graphs, backbone features, downloaded datasets' paths): ``$MATGNN_CACHE_DIR`` or
    ``~/.cache/matgnn``."""
    return Path(os.environ.get("MATGNN_CACHE_DIR", Path.home() / ".cache" / "matgnn"))
