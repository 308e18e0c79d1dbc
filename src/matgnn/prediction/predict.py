"""Prediction on new structures with saved models, shipped models or ensembles.

Inputs: structure files (CIF, POSCAR/CONTCAR, ``*.vasp``, extxyz — every frame), folders, glob
patterns, ASE trajectories and databases (``*.traj``, ``*.db``: every row), JSON Lines structure
files (``*.jsonl[.gz]`` in the mp_magmoms or mp_cgcnn layout). Structures are read,
turned into graphs and predicted in batches, so memory stays bounded by the batch size however
many there are (only the per-structure values are held when the output is sorted).

Outputs: CSV or JSON (by the suffix of ``out``) with the id, every graph head (and ``<head>_std``,
the spread across members, for an ensemble), ``n_atoms`` and ``formula``; per-atom heads as
``<out stem>_atoms.csv`` and optionally as extxyz arrays; DFT warm starts of a moment head.
"""

from __future__ import annotations

import csv
import glob
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from matgnn import artifacts, keys
from matgnn.artifacts import read_model_info
from matgnn.data.report import LoadReport
from matgnn.data.sources.folder import (
    is_structure_file_name,
    read_cif_blocks,
    read_structure_file,
)
from matgnn.data.structure import Structure
from matgnn.errors import (
    BACKBONE_REFUSED,
    NON_FINITE_PREDICTION,
    StructureError,
    UserError,
)
from matgnn.graphs.cache import graph_record
from matgnn.graphs.neighbors import GraphSettings
from matgnn.graphs.packed import PackedGraphs
from matgnn.models.base import batch_fields_of, model_device, value_names
from matgnn.models.ensemble import EnsembleModel
from matgnn.models.loading import load_model
from matgnn.models.saved import SavedModel

#: files a folder may hold besides single-structure files: trajectories, databases, JSON Lines
MULTI_FILE_SUFFIXES = (".traj", ".db", ".jsonl", ".gz")
MULTI_SUFFIXES = (".extxyz", ".xyz", ".traj", ".db")


def graph_settings_of(path: str | Path) -> GraphSettings:
    """The graph settings a saved model was trained with."""
    info = artifacts.model_info(path)
    if "graphs" not in info:
        raise UserError(f"{path}: the model does not record its graph settings; pass them explicitly")
    return GraphSettings(**info["graphs"])


class Predictor:
    """What answers a prediction: the saved models named by ``paths`` (run or model folders, shipped names,
    ensemble folders), checked to have the same heads and graph settings, on one device, with the graph settings
    and the training elements they record. Several models (or an ensemble folder) answer as one
    :class:`~matgnn.models.ensemble.EnsembleModel`, the one ensemble class: the members' mean and σ per head,
    recalibrated as an ensemble folder's fit says (:class:`matgnn.evaluation.uncertainty.Recalibration`)."""

    def __init__(self, paths: Sequence[str | Path], device: str | torch.device | None = "cpu") -> None:
        from matgnn.runtime import resolve_device

        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.paths, recalibration = artifacts.expand(list(paths))
        loaded = [load_model(p).eval() for p in self.paths]
        self.settings = graph_settings_of(self.paths[0])
        names = [(s["name"], s["level"]) for s in loaded[0].head_specs]
        for p, m in zip(self.paths[1:], loaded[1:]):
            if [(s["name"], s["level"]) for s in m.head_specs] != names:
                raise ValueError(f"{p}: its heads {[s['name'] for s in m.head_specs]} differ from "
                                 f"{self.paths[0]}'s {[n for n, _ in names]}; an ensemble needs the same heads")
            if graph_settings_of(p) != self.settings:
                raise ValueError(f"{p}: graph settings differ from {self.paths[0]}'s; an ensemble needs the same graphs")
        if len(loaded) == 1 and isinstance(loaded[0], EnsembleModel):  # an ensemble saved as one model folder
            recalibration = loaded[0].recalibration
        # one EnsembleModel computes the mean and σ (members of saved ensembles flattened into it)
        self.model = EnsembleModel.of(loaded, recalibration) if len(loaded) > 1 or isinstance(loaded[0], EnsembleModel) else None
        self.members = list(self.model.members) if self.model is not None else loaded
        self.head_specs = loaded[0].head_specs
        if self.device.type != "cpu":  # every member's weights on the device; batches follow them there
            for m in [*self.members, *([self.model] if self.model is not None else [])]:
                m.to(self.device)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def combined(self) -> torch.nn.Module:
        """The one model answering: the ensemble of the members, or the only member."""
        return self.model if self.model is not None else self.members[0]

    @property
    def train_elements(self) -> set[int] | None:
        """Atomic numbers every member saw in training (None when a member does not record them)."""
        sets = []
        for p in self.paths:
            info = read_model_info(p)
            if not info.get("train_elements"):
                return None
            sets.append({int(z) for z in info["train_elements"]})
        return set.intersection(*sets)

    @torch.inference_mode()
    def __call__(self, batch, bound: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Mean and σ per head; ``bound``, when given, receives the flags of answers at a log transform's bound
        (:meth:`~matgnn.models.saved.SavedModel.at_bound`)."""
        if self.model is None:
            return _single_answers(self.members[0], batch, bound)
        return self.model.predict_with_std(batch, bound)


def _single_answers(model: torch.nn.Module, batch, bound: dict[str, torch.Tensor] | None
                    ) -> dict[str, tuple[torch.Tensor, None]]:
    """One model's answers as ``(value, no σ)`` per head; ``bound``, when given, receives the flags of answers at a
    log transform's bound (from the same answers)."""
    raw = model(batch)
    if bound is not None:
        bound.update(model.at_bound(batch, raw))
    return {k: (v.float(), None) for k, v in raw.items()}


def _input_problem(p: Path) -> str | None:
    """Why an input path gives nothing to read (it does not exist, or a pattern matches no file)."""
    if p.exists():
        return None
    if any(ch in str(p) for ch in "*?["):
        return None if glob.glob(str(p)) else "the pattern matches no file"
    return "no such file or folder"


def structure_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named, the structure files of folders (CIF, POSCAR/CONTCAR, *.vasp, extxyz, pymatgen
    JSON, traj, db, JSON Lines; an ``id_prop.csv`` beside them is ignored), glob patterns. A path
    that does not exist, or a pattern that matches nothing, is a :class:`UserError` naming it."""
    for p in paths:
        p = Path(p)
        problem = _input_problem(p)
        if problem:
            raise UserError(f"{p}: {problem}")
        if p.is_dir():
            for f in sorted(p.iterdir()):
                if f.is_file() and (is_structure_file_name(f.name) or f.suffix.lower() in MULTI_FILE_SUFFIXES):
                    yield f
        elif p.exists():
            yield p
        else:
            yield from (Path(x) for x in sorted(glob.glob(str(p))))


def check_inputs(paths: Sequence[str | Path]) -> None:
    """Every input exists (a pattern matches something) — checked before any work."""
    if not paths:
        raise UserError("no structure files, folders or patterns given")
    for p in paths:
        problem = _input_problem(Path(p))
        if problem:
            raise UserError(f"{p}: {problem}")


def read_structures(files: Iterable[Path]) -> Iterator[Structure | StructureError]:
    """Every structure of every file (every frame of extxyz/traj, every row of a database);
    a file that cannot be read becomes a :class:`StructureError` naming it."""
    from matgnn.data.sources import make_source, parse_source
    from matgnn.data.sources.ase_files import AseSource

    for f in files:
        if f.name.lower().endswith((".jsonl", ".jsonl.gz")):  # mp_magmoms / mp_cgcnn layouts
            yield from make_source(parse_source(str(f)))
            continue
        gz_frames = f.name.lower().endswith((".extxyz.gz", ".xyz.gz"))
        if (f.suffix.lower() in MULTI_SUFFIXES or gz_frames) and f.is_file():
            source = AseSource(f, graph_targets=[], node_targets=[])
            entries = iter(source)  # streamed, frame by frame
            first, second = next(entries, None), next(entries, None)
            if (second is None and first is not None and not isinstance(first, StructureError)
                    and (gz_frames or f.suffix.lower() in (".extxyz", ".xyz")) and first.id == f"{source.stem}[0]"):
                first.id = source.stem  # a one-structure file is named by its file, like a CIF
            yield from (e for e in (first, second) if e is not None)
            yield from entries
            continue
        if f.name.lower().endswith(".cif"):  # every data block of the file
            try:
                yield from read_cif_blocks(f)
            except StructureError as e:
                yield e
            continue
        try:
            yield read_structure_file(f)
        except StructureError as e:
            yield e


def predict_structures(model: SavedModel | Predictor, structures: Iterable[Structure | StructureError],
                       settings: GraphSettings, batch_size: int = 64,
                       report: LoadReport | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``{"id", "structure", <graph head>: value, <node head>: array}`` per usable
    structure (with an :class:`Predictor` also ``<head>_std``), in batches (memory bounded
    by ``batch_size``); bad ones go to ``report``. Per-atom values are in the structure's
    own atom order."""
    predictor = model if isinstance(model, Predictor) else None
    if predictor is None:
        model.eval()
    device = model_device(predictor.combined if predictor is not None else model)  # batches go to the weights
    specs = predictor.head_specs if predictor is not None else model.head_specs
    fields = batch_fields_of(*(predictor.members if predictor is not None else [model]))
    report = report if report is not None else LoadReport("predict")
    bound_heads = (predictor.combined if predictor is not None else model).bounded_heads()
    records: list[dict[str, Any]] = []
    kept: list[Structure] = []

    def flush() -> Iterator[dict[str, Any]]:
        batch = PackedGraphs.from_records(records, extras=fields).batch(torch.arange(len(records)))
        bounded: dict[str, torch.Tensor] = {}
        on = batch.to(device) if device.type != "cpu" else batch
        if predictor is not None:
            out = predictor(on, bounded if bound_heads else None)
        else:
            with torch.inference_mode():
                out = _single_answers(model, on, bounded if bound_heads else None)
        if device.type != "cpu":
            out = {k: tuple(None if v is None else v.cpu() for v in pair) for k, pair in out.items()}
            bounded = {k: v.cpu() for k, v in bounded.items()}
        counts = batch[keys.N_ATOMS].tolist()
        starts = np.cumsum([0] + counts)
        refused = batch[keys.BACKBONE_REFUSED] if keys.BACKBONE_REFUSED in batch else None
        for g, sid in enumerate(batch[keys.STRUCTURE_ID]):
            if refused is not None and refused[g]:  # its backbone features are zero: no answer, listed instead
                report.kept -= 1
                report.skip(StructureError(sid, BACKBONE_REFUSED, refused[g], kept[g].meta.get("file")))
                continue
            if not all(_finite(out[spec["name"]][0], g, starts, spec["level"]) for spec in specs):
                report.kept -= 1  # never written as a plain nan
                report.skip(StructureError(sid, NON_FINITE_PREDICTION, "the model's answer is not a finite number "
                                           "(NaN or inf): the model or its weights are broken for this input",
                                           kept[g].meta.get("file")))
                continue
            row: dict[str, Any] = {"id": sid, "structure": kept[g]}
            if bound_heads:
                row["answers_at_bound"] = [n for n in bound_heads if bool(bounded[n][g])]
                for n in row["answers_at_bound"]:
                    report.at_bound[n] = report.at_bound.get(n, 0) + 1
            for spec in specs:
                mean, std = out[spec["name"]]
                for suffix, v in (("", mean), ("_std", std)):
                    if v is None:
                        continue
                    if spec.get("components"):  # a vector head: one value per component
                        for j, name in enumerate(value_names(spec)):
                            row[name + suffix] = float(v[g, j])
                    else:
                        row[spec["name"] + suffix] = (float(v[g]) if spec["level"] == "graph"
                                                      else v[starts[g]:starts[g + 1]].numpy())
            yield row
        records.clear()
        kept.clear()

    for s in structures:
        if isinstance(s, StructureError):
            report.skip(s)
            continue
        try:
            rec = graph_record(s, settings)
        except StructureError as e:
            report.skip(e)
            continue
        report.kept += 1
        records.append(rec)
        kept.append(s)
        if len(records) >= batch_size:
            yield from flush()
    if records:
        yield from flush()


def predict(model: str | Path | Sequence[str | Path] | Predictor, structures: Iterable[Any], batch_size: int = 64,
            device: str | None = "auto") -> list[dict[str, Any]]:
    """Answers of a model for structures, in memory: one dict per structure, in the order given.

    ``model``: a run folder, a model or ensemble folder, a shipped model's name, a name in ``$MATGNN_MODELS``, a
    list of these (an ensemble), or a :class:`Predictor`. ``structures``: ASE ``Atoms``, matgnn
    :class:`~matgnn.data.structure.Structure`\\ s, or paths of structure files or folders (every structure of a
    file, in the file's order). Each dict has ``id`` (the ``Atoms``' ``info["id"]``, else ``atoms[k]``; a
    structure's own id; ``file`` or ``file[block]`` for files), every graph head as a number, every per-atom
    head as an array in the structure's atom order, ``<head>_std`` for an ensemble, and ``answers_at_bound``
    for models with log-transformed heads. A structure that cannot be answered (unreadable, overlapping atoms,
    refused by a backbone, a non-finite answer) has ``skipped`` (``"<code>: <detail>"``) and no values."""
    predictor = model if isinstance(model, Predictor) else Predictor(
        artifacts.split_specs(model) if isinstance(model, (str, Path)) else list(model), device=device)
    items: list[Structure | StructureError] = []
    for k, s in enumerate(structures):
        if isinstance(s, (Structure, StructureError)):
            items.append(s)
        elif isinstance(s, (str, Path)):
            check_inputs([s])
            items.extend(read_structures(structure_files([s])))
        elif hasattr(s, "get_atomic_numbers"):  # ASE Atoms
            sid = str(s.info.get("id", f"atoms[{k}]"))
            try:
                items.append(Structure.from_ase(s, sid))
            except StructureError as e:
                items.append(e)
        else:
            raise TypeError(f"structures[{k}]: an ASE Atoms, a matgnn Structure or a path, not {type(s).__name__}")
    # positions as ids while predicting: ids given by users may repeat
    given = [e.structure_id if isinstance(e, StructureError) else e.id for e in items]
    for k, e in enumerate(items):
        if isinstance(e, StructureError):
            e.structure_id = f"#{k}"
        else:
            e.id = f"#{k}"
    report = LoadReport("predict")
    answerer = predictor if len(predictor) > 1 else predictor.members[0]
    out: list[dict[str, Any]] = [{} for _ in items]
    try:
        for row in predict_structures(answerer, items, predictor.settings, batch_size, report):
            k = int(row.pop("id")[1:])
            row.pop("structure", None)
            out[k] = {"id": given[k], **row}
        for s in report.skipped:
            k = int(str(s["id"])[1:])
            out[k] = {"id": given[k], "skipped": f"{s['code']}: {s['detail']}"}
    finally:  # the caller's structures keep their own ids
        for k, e in enumerate(items):
            if isinstance(e, StructureError):
                e.structure_id = given[k]
            else:
                e.id = given[k]
    return out


def _finite(v: torch.Tensor, g: int, starts: np.ndarray, level: str) -> bool:
    """Whether structure ``g``'s answer in ``v`` (a head's batch output) is finite."""
    part = v[g] if level == "graph" else v[int(starts[g]):int(starts[g + 1])]
    return bool(torch.isfinite(part.float()).all())


def _fmt(v: float) -> str:
    return f"{v:.6g}"


class _Outputs:
    """The files one prediction writes, each first as a hidden temporary file beside its
    destination and moved into place only when everything succeeded (``commit``), so a failure
    or Ctrl-C never truncates or overwrites earlier results. Side files of an earlier run with
    the same output stem that this run does not write are removed on success (no stale files)."""

    def __init__(self) -> None:
        self.final: list[tuple[Path, Path]] = []
        self.stale: list[Path] = []
        self.dirs: list[tuple[Path, Path]] = []

    def file(self, path: Path) -> Path:
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{path}: is a folder; name an output file")
        if not path.parent.is_dir():
            raise UserError(f"{path}: its folder {path.parent} does not exist")
        _remove_orphans(path.parent, f".{path.stem}")  # this output's and its side files' (<stem>_atoms.csv ...)
        tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
        tmp.open("w").close()  # fails now (permission, read-only, ...) rather than after the work
        self.final.append((tmp, path))
        return tmp

    def folder(self, path: Path) -> Path:
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UserError(f"{path}: exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        _remove_orphans(path, ".part-")
        tmp = path / f".part-{os.getpid()}"
        tmp.mkdir(exist_ok=True)
        self.dirs.append((tmp, path))
        return tmp

    def commit(self) -> None:
        for tmp, path in self.final:
            os.replace(tmp, path)
        for tmp, path in self.dirs:
            for f in sorted(tmp.iterdir()):
                os.replace(f, path / f.name)
            tmp.rmdir()
        for p in self.stale:
            p.unlink(missing_ok=True)

    def discard(self) -> None:
        for tmp, _ in self.final:
            tmp.unlink(missing_ok=True)
        for tmp, _ in self.dirs:
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _remove_orphans(folder: Path, prefix: str) -> None:
    """Remove ``<prefix>….part-<pid>`` temporary files or folders that a killed prediction left behind
    (their process is gone); those of a prediction still running are left alone."""
    try:
        found = list(folder.glob(glob.escape(prefix) + "*"))
    except OSError:
        return
    for p in found:
        pid = p.name.rpartition(".part-")[2]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        except OSError:
            pass


def _unique_id(sid: str, file: str | None, seen: set[str]) -> str:
    """``sid``, or when an earlier structure has that id (``calc1/POSCAR``, ``calc2/POSCAR``)
    ``<parent folder>-<sid>`` and then ``-2``, ``-3``, ...; compared as the file-safe stems
    that warm-start files are named by, so no output overwrites another."""
    def safe(x: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in x)

    new = sid
    if safe(new) in seen and file:
        new = f"{Path(file).parent.name}-{sid}"
    k = 2
    base = new
    while safe(new) in seen:
        new = f"{base}-{k}"
        k += 1
    seen.add(safe(new))
    return new


def predict_files(model_path: str | Path | Sequence[str | Path], paths: Iterable[str | Path], out: str | Path,
                  batch_size: int = 64, magmom_export: str | Path | None = None,
                  magmom_head: str | None = None, where: Sequence[str] = (), sort_by: str | None = None,
                  top: int | None = None, atoms_extxyz: str | Path | None = None,
                  limit: int | None = None, device: str | None = "auto") -> tuple[Path, LoadReport, int]:
    """Predict every structure under ``paths`` with a model, a shipped model's name, or several
    models (an ensemble: mean and ``<head>_std``); write ``out`` (``.csv`` or ``.json``, one
    row per structure) and, for per-atom heads, ``<out stem>_atoms.csv`` (CSV output) and with
    ``atoms_extxyz`` an extxyz file whose frames carry the per-atom predictions as arrays.
    Structures that could not be read go to ``<out stem>_skipped.csv``.

    Screening: ``where`` conditions (``"band_gap>=1"``) keep structures whose values pass all of
    them; ``sort_by`` (``"-band_gap_std"`` descending) orders the rows; ``top`` keeps the first N
    — in every output (side files and warm starts too). ``limit``: read at most this many structures.
    ``device``: ``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    ``magmom_export``: a folder for DFT warm-start files of the per-atom head ``magmom_head``
    (default: the model's only per-atom head) — see :mod:`matgnn.prediction.warmstart`.

    Safety: inputs and output locations are checked before any work; outputs are written to
    temporary files and moved into place only on success; ids are made unique when file stems
    collide (said in the report); elements the model never saw in training are flagged
    (``unseen_elements`` per structure, ``unseen_element`` per atom) when the model records them.

    Returns the output path, the load report (structures kept, and every skipped one with the
    reason) and the number of structures the ``where`` conditions left out.
    """
    from matgnn.prediction.screening import parse_condition, parse_sort

    paths = list(paths)
    check_inputs(paths)
    if top is not None and top < 1:
        raise UserError(f"--top must be >= 1, not {top}")
    specs_paths = [model_path] if isinstance(model_path, (str, Path)) else list(model_path)
    predictor = Predictor(specs_paths, device=device)
    model: SavedModel | Predictor = predictor if len(predictor) > 1 else predictor.members[0]
    report = LoadReport("predict")
    out = Path(out)
    as_json = out.suffix.lower() == ".json"
    graph = [n for s in predictor.head_specs if s["level"] == "graph" for n in value_names(s)]
    node = [s["name"] for s in predictor.head_specs if s["level"] == "node"]
    stds = len(predictor) > 1
    columns = graph + ([f"{n}_std" for n in graph] if stds else []) + ["n_atoms"]
    conditions = [parse_condition(w, columns) for w in where]
    sort = parse_sort(sort_by, columns) if sort_by else None
    if magmom_export is not None:

        if magmom_head is None:
            if len(node) != 1:
                raise UserError(f"the model has per-atom heads {node}; name the moment head (--magmom-head)")
            magmom_head = node[0]
        elif magmom_head not in node:
            raise UserError(f"{magmom_head!r} is not a per-atom head of the model ({node})")
    known = predictor.train_elements
    node_cols = node + ([f"{n}_std" for n in node] if stds else [])
    atoms_path = out.with_name(out.stem + "_atoms.csv")
    skipped_path = out.with_name(out.stem + "_skipped.csv")
    files = _Outputs()
    sink = None
    try:
        tmp_out = files.file(out)
        tmp_atoms = files.file(atoms_path) if node and not as_json else None
        if tmp_atoms is None:
            files.stale.append(atoms_path)
        tmp_xyz = files.file(Path(atoms_extxyz)) if atoms_extxyz is not None else None
        tmp_warm = files.folder(Path(magmom_export)) if magmom_export is not None else None
        sink = _RowWriter(columns, node_cols, known, as_json, tmp_out, tmp_atoms, tmp_xyz, tmp_warm, magmom_head,
                          sort, top, bool(predictor.combined.bounded_heads()))
        filtered = _predict_rows(model, predictor.settings, paths, batch_size, limit, report, conditions, sort, top,
                                 sink)
        if report.total == 0:
            raise UserError("no structures found in " + ", ".join(str(p) for p in paths))
        if report.kept == 0:
            first = report.skipped[0]
            raise UserError(f"none of the {report.total} structures could be used (first: {first['id']}: "
                            f"{first['detail']}); nothing written")
        sink.close({"models": [str(p) for p in predictor.paths], "conditions": list(where), "sort_by": sort_by})
        if report.skipped:
            report.write_skipped(files.file(skipped_path))
        else:
            files.stale.append(skipped_path)
        files.commit()
    except BaseException as e:
        if sink is not None:
            try:
                sink.abort()
            except OSError:
                pass  # the same full disk again: the temporary files go below
        files.discard()
        if isinstance(e, OSError) and not e.filename:  # a write failed (full disk, file size limit): name where
            raise UserError(f"{out}: could not write the predictions ({e.strerror or e}); nothing written, earlier "
                            "results there are untouched") from None
        raise
    return out, report, filtered


def _predict_rows(model, settings: GraphSettings, paths: list, batch_size: int, limit: int | None,
                  report: LoadReport, conditions, sort, top: int | None, sink: _RowWriter) -> int:
    """Predict, make ids unique (counted in ``report.renamed``), filter, and hand each passing row
    to ``sink``; returns how many rows the conditions left out. Progress (count, rate, time left) goes to
    stderr (:mod:`matgnn.progress`); ``report.seconds`` gets the time spent."""
    from matgnn.progress import Progress

    files = list(structure_files(paths))
    one_each = all(is_structure_file_name(f.name) and not f.name.lower().endswith(".cif") for f in files)
    total = len(files) if one_each else None  # frames, rows and CIF blocks are counted as they come
    if limit is not None and total is not None:
        total = min(total, limit)
    structures = read_structures(files)
    if limit is not None:
        structures = itertools.islice(structures, limit)
    filtered = written = 0
    seen: set[str] = set()
    progress = Progress("predict", total=total)
    with progress:
        for row in predict_structures(model, structures, settings=settings, batch_size=batch_size, report=report):
            progress.advance()
            s: Structure = row["structure"]
            sid = _unique_id(row["id"], s.meta.get("file"), seen)
            if sid != row["id"]:
                report.renamed += 1
                row["id"] = s.id = sid
            row["n_atoms"] = len(s.numbers)
            if not all(c(row) for c in conditions):
                filtered += 1
                continue
            if top is not None and not sort and written >= top:  # unsorted: the first N that pass
                break
            written += 1
            sink.add(row)
    report.seconds = time.perf_counter() - progress.started
    return filtered


class _RowWriter:
    """Writes prediction rows to the (temporary) output files. Unsorted rows stream straight
    to every file (memory bounded by the batch); sorted rows keep their values for the main
    output, and with ``top`` the best ``top`` rows are kept whole so that side files and warm
    starts hold exactly the rows of the main output."""

    def __init__(self, columns, node_cols, known, as_json, tmp_out, tmp_atoms, tmp_xyz, tmp_warm, magmom_head,
                 sort, top: int | None, bound: bool = False):
        self.columns, self.node_cols, self.known, self.as_json = columns, node_cols, known, as_json
        self.bound = bound  # an answers_at_bound column: the heads whose answer sat at their training range's bound
        self.sort, self.top = sort, top
        self.flag = known is not None
        self.tmp_out, self.tmp_warm, self.magmom_head = tmp_out, tmp_warm, magmom_head
        self.held: list[dict[str, Any]] = []  # values of rows for a sorted / JSON main output
        self.whole: list[dict[str, Any]] = []  # complete rows (sorted with top)
        self.f_out = None if as_json else open(tmp_out, "w", newline="")
        self.f_atoms = open(tmp_atoms, "w", newline="") if tmp_atoms is not None else None
        self.f_xyz = open(tmp_xyz, "w") if tmp_xyz is not None else None
        self.w_out = csv.writer(self.f_out) if self.f_out else None
        self.w_atoms = csv.writer(self.f_atoms) if self.f_atoms else None
        if self.w_out:
            self.w_out.writerow(["id"] + columns + ["formula"] + (["unseen_elements"] if self.flag else [])
                                + (["answers_at_bound"] if bound else []))
        if self.w_atoms:
            self.w_atoms.writerow(["id", "atom", "z"] + node_cols + (["unseen_element"] if self.flag else []))

    def _unseen(self, s: Structure) -> list[str]:
        """Symbols of the structure's elements absent from the training split."""
        return [chemical_symbols[z] for z in sorted({int(z) for z in s.numbers} - self.known)]

    def add(self, row: dict[str, Any]) -> None:
        from matgnn.prediction.screening import sort_rows

        if self.sort and self.top is not None:
            self.whole.append(row)
            if len(self.whole) >= 4 * self.top + 64:  # keep the best `top` so far
                self.whole = sort_rows(self.whole, *self.sort)[:self.top]
            return
        self._sides(row)
        if self.sort or self.as_json:
            self.held.append(self._values(row))
        else:
            self._main_row(self._values(row))

    def _values(self, row: dict[str, Any]) -> dict[str, Any]:
        s: Structure = row["structure"]
        keep = {"id": row["id"], "formula": s.formula, **{c: row[c] for c in self.columns}}
        if self.flag:
            keep["unseen_elements"] = self._unseen(s)
        if self.bound:
            keep["answers_at_bound"] = row["answers_at_bound"]
        if self.as_json:
            keep.update({n: np.asarray(row[n]).round(6).tolist() for n in self.node_cols})
        return keep

    def _main_row(self, v: dict[str, Any]) -> None:
        self.w_out.writerow([v["id"]] + [_fmt(v[c]) if c != "n_atoms" else v[c] for c in self.columns] + [v["formula"]]
                            + ([" ".join(v["unseen_elements"])] if self.flag else [])
                            + ([" ".join(v["answers_at_bound"])] if self.bound else []))

    def _sides(self, row: dict[str, Any]) -> None:
        s: Structure = row["structure"]
        unseen = [int(int(z) not in self.known) for z in s.numbers] if self.flag else None  # per atom, 0/1
        if self.w_atoms:
            for a in range(len(s.numbers)):
                self.w_atoms.writerow([row["id"], a, int(s.numbers[a])] + [_fmt(row[n][a]) for n in self.node_cols]
                                      + ([unseen[a]] if self.flag else []))
        if self.f_xyz is not None:
            from ase.io import write as ase_write

            atoms = s.to_ase()
            for n in self.node_cols:
                atoms.arrays[n] = np.asarray(row[n], float)
            if self.flag:
                atoms.arrays["unseen_element"] = np.array(unseen, int)
            atoms.info.update({"id": row["id"], **{c: row[c] for c in self.columns if c != "n_atoms"}})
            ase_write(self.f_xyz, atoms, format="extxyz")
        if self.tmp_warm is not None:
            from matgnn.prediction.warmstart import export_warm_start

            export_warm_start(s, row[self.magmom_head], self.tmp_warm)

    def close(self, json_head: dict[str, Any]) -> None:
        from matgnn.prediction.screening import sort_rows

        if self.whole:
            for row in sort_rows(self.whole, *self.sort)[:self.top]:
                self._sides(row)
                self.held.append(self._values(row))
        elif self.sort:
            self.held = sort_rows(self.held, *self.sort)
        if self.top is not None:
            self.held = self.held[:self.top]
        if self.as_json:
            self.tmp_out.write_text(json.dumps({**json_head, "predictions": self.held}, indent=1))
        elif self.sort:
            for v in self.held:
                self._main_row(v)
        self.abort()

    def abort(self) -> None:
        for f in (self.f_out, self.f_atoms, self.f_xyz):
            if f is not None and not f.closed:
                f.close()
