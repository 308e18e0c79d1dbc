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
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matgnn import keys
from matgnn.data.report import LoadReport
from matgnn.data.sources.folder import read_structure_file
from matgnn.data.structure import Structure
from matgnn.errors import StructureError
from matgnn.graphs.cache import graph_record
from matgnn.graphs.neighbors import GraphSettings
from matgnn.graphs.packed import PackedGraphs
from matgnn.models.base import MODEL_FILE, MatgnnModel, load_model

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".extxyz", ".xyz", ".traj", ".db", ".jsonl", ".gz")
MULTI_SUFFIXES = (".extxyz", ".xyz", ".traj", ".db")


def resolve_model(spec: str | Path) -> Path:
    """A run folder, a model folder, or the name of a model shipped with matgnn."""
    path = Path(spec)
    if path.exists():
        return path
    from matgnn.pretrained import available, model_path

    if str(spec) in available():
        return model_path(str(spec))
    raise FileNotFoundError(f"{spec}: no such run or model folder, and not a shipped model "
                            f"(shipped: {', '.join(available()) or 'none'})")


def model_folder(path: str | Path) -> Path:
    path = resolve_model(path)
    return path / "model" if (path / "model" / MODEL_FILE).is_file() else path


def graph_settings_of(path: str | Path) -> GraphSettings:
    """The graph settings a saved model was trained with."""
    info = json.loads((model_folder(path) / MODEL_FILE).read_text())
    if "graphs" not in info:
        raise ValueError(f"{path}: the model does not record its graph settings; pass them explicitly")
    return GraphSettings(**info["graphs"])


class Ensemble:
    """Saved models with the same heads and graph settings, predicted together: the mean
    of the members and their standard deviation (σ) per head. An ensemble folder written by
    ``matgnn ensemble`` stands for its members, and its σ is recalibrated as fitted on its
    validation set (:class:`matgnn.evaluation.uncertainty.Recalibration`)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        from matgnn.training.ensemble import ENSEMBLE_FILE, ensemble_members

        if not paths:
            raise ValueError("no model given")
        self.recalibration: dict = {}
        expanded: list[str | Path] = []
        for p in paths:
            where = resolve_model(p)  # a folder, or a shipped model's (or ensemble's) name
            if where.is_dir() and (where / ENSEMBLE_FILE).is_file():
                members, recal = ensemble_members(where)
                if len(paths) == 1:
                    self.recalibration = recal
                expanded += members
            else:
                expanded.append(p)
        self.paths = [model_folder(p) for p in expanded]
        self.members = [load_model(p).eval() for p in self.paths]
        self.settings = graph_settings_of(self.paths[0])
        self.head_specs = self.members[0].head_specs
        names = [(s["name"], s["level"]) for s in self.head_specs]
        for p, m in zip(self.paths[1:], self.members[1:]):
            if [(s["name"], s["level"]) for s in m.head_specs] != names:
                raise ValueError(f"{p}: its heads {[s['name'] for s in m.head_specs]} differ from "
                                 f"{self.paths[0]}'s {[n for n, _ in names]}; an ensemble needs the same heads")
            if graph_settings_of(p) != self.settings:
                raise ValueError(f"{p}: graph settings differ from {self.paths[0]}'s; an ensemble needs the same graphs")

    def __len__(self) -> int:
        return len(self.members)

    @torch.inference_mode()
    def __call__(self, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        outs = [m(batch) for m in self.members]
        res = {}
        for s in self.head_specs:
            stack = torch.stack([o[s["name"]].float() for o in outs])
            mean, std = stack.mean(0), (stack.std(0, unbiased=False) if len(outs) > 1 else None)
            rec = self.recalibration.get(s["name"])
            if rec is not None and std is not None:
                std = torch.as_tensor(rec(std.cpu().numpy(), mean.cpu().numpy()), dtype=mean.dtype, device=mean.device)
            res[s["name"]] = (mean, std)
        return res


def structure_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named, files of folders (CIF, POSCAR/CONTCAR, *.vasp, extxyz, traj, db), glob patterns."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.iterdir()):
                if f.is_file() and (f.suffix.lower() in STRUCTURE_SUFFIXES or f.name.startswith(("POSCAR", "CONTCAR"))):
                    yield f
        elif any(ch in str(p) for ch in "*?["):
            yield from (Path(x) for x in sorted(glob.glob(str(p))))
        else:
            yield p


def read_structures(files: Iterable[Path]) -> Iterator[Structure | StructureError]:
    """Every structure of every file (every frame of extxyz/traj, every row of a database);
    a file that cannot be read becomes a :class:`StructureError` naming it."""
    from matgnn.data.sources import make_source, parse_source
    from matgnn.data.sources.ase_files import AseSource

    for f in files:
        if f.name.lower().endswith((".jsonl", ".jsonl.gz")):  # mp_magmoms / mp_cgcnn layouts
            yield from make_source(parse_source(str(f)))
            continue
        if f.suffix.lower() in MULTI_SUFFIXES and f.is_file():
            entries = iter(AseSource(f, graph_targets=[], node_targets=[]))  # streamed, frame by frame
            first, second = next(entries, None), next(entries, None)
            if (second is None and first is not None and not isinstance(first, StructureError)
                    and f.suffix.lower() in (".extxyz", ".xyz") and first.id == f"{f.stem}[0]"):
                first.id = f.stem  # a one-structure file is named by its file, like a CIF
            yield from (e for e in (first, second) if e is not None)
            yield from entries
            continue
        try:
            yield read_structure_file(f)
        except StructureError as e:
            yield e


def predict_structures(model: MatgnnModel | Ensemble, structures: Iterable[Structure | StructureError],
                       settings: GraphSettings, batch_size: int = 64,
                       report: LoadReport | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``{"id", "structure", <graph head>: value, <node head>: array}`` per usable
    structure (with an :class:`Ensemble` also ``<head>_std``), in batches (memory bounded
    by ``batch_size``); bad ones go to ``report``. Per-atom values are in the structure's
    own atom order."""
    predictor = model if isinstance(model, Ensemble) else None
    if predictor is None:
        model.eval()
    specs = predictor.head_specs if predictor is not None else model.head_specs
    report = report if report is not None else LoadReport("predict")
    records: list[dict[str, Any]] = []
    kept: list[Structure] = []

    def flush() -> Iterator[dict[str, Any]]:
        batch = PackedGraphs.from_records(records).batch(torch.arange(len(records)))
        if predictor is not None:
            out = predictor(batch)
        else:
            with torch.inference_mode():
                out = {k: (v.float(), None) for k, v in model(batch).items()}
        counts = batch[keys.N_ATOMS].tolist()
        starts = np.cumsum([0] + counts)
        for g, sid in enumerate(batch[keys.STRUCTURE_ID]):
            row: dict[str, Any] = {"id": sid, "structure": kept[g]}
            for spec in specs:
                mean, std = out[spec["name"]]
                for suffix, v in (("", mean), ("_std", std)):
                    if v is not None:
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


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def predict_files(model_path: str | Path | Sequence[str | Path], paths: Iterable[str | Path], out: str | Path,
                  batch_size: int = 64, magmom_export: str | Path | None = None,
                  magmom_head: str | None = None, where: Sequence[str] = (), sort_by: str | None = None,
                  top: int | None = None, atoms_extxyz: str | Path | None = None,
                  limit: int | None = None) -> tuple[Path, LoadReport, int]:
    """Predict every structure under ``paths`` with a model, a shipped model's name, or several
    models (an ensemble: mean and ``<head>_std``); write ``out`` (``.csv`` or ``.json``, one
    row per structure) and, for per-atom heads, ``<out stem>_atoms.csv`` (CSV output) and with
    ``atoms_extxyz`` an extxyz file whose frames carry the per-atom predictions as arrays.

    Screening: ``where`` conditions (``"band_gap>=1"``) keep structures whose values pass all of
    them; ``sort_by`` (``"-band_gap_std"`` descending) orders the rows; ``top`` keeps the first N.
    ``limit``: read at most this many structures from the inputs.
    ``magmom_export``: a folder for DFT warm-start files of the per-atom head ``magmom_head``
    (default: the model's only per-atom head) — see :mod:`matgnn.prediction.warmstart`.

    Returns the output path, the load report (structures kept, and every skipped one with the
    reason) and the number of structures the ``where`` conditions left out.
    """
    from matgnn.prediction.screening import parse_condition, parse_sort, sort_rows

    specs_paths = [model_path] if isinstance(model_path, (str, Path)) else list(model_path)
    predictor = Ensemble(specs_paths)
    model: MatgnnModel | Ensemble = predictor if len(predictor) > 1 else predictor.members[0]
    report = LoadReport("predict")
    out = Path(out)
    as_json = out.suffix.lower() == ".json"
    graph = [s["name"] for s in predictor.head_specs if s["level"] == "graph"]
    node = [s["name"] for s in predictor.head_specs if s["level"] == "node"]
    stds = len(predictor) > 1
    columns = graph + ([f"{n}_std" for n in graph] if stds else []) + ["n_atoms"]
    conditions = [parse_condition(w, columns) for w in where]
    sort = parse_sort(sort_by, columns) if sort_by else None
    if magmom_export is not None:
        from matgnn.prediction.warmstart import export_warm_start

        if magmom_head is None:
            if len(node) != 1:
                raise ValueError(f"the model has per-atom heads {node}; name the moment head (magmom_head)")
            magmom_head = node[0]
        elif magmom_head not in node:
            raise ValueError(f"{magmom_head!r} is not a per-atom head of the model ({node})")
    node_cols = node + ([f"{n}_std" for n in node] if stds else [])
    atoms_path = out.with_name(out.stem + "_atoms.csv")
    held: list[dict[str, Any]] = []  # rows kept for sorting / JSON (values only, no structures)
    filtered = written = 0
    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1, not {top}")
    fg = None if (as_json or sort) else open(out, "w", newline="")
    fn = open(atoms_path, "w", newline="") if node and not as_json else None
    xyz = None
    if atoms_extxyz is not None:
        from ase.io import write as ase_write

        xyz = open(atoms_extxyz, "w")
    try:
        wg = csv.writer(fg) if fg else None
        wn = csv.writer(fn) if fn else None
        if wg:
            wg.writerow(["id"] + columns + ["formula"])
        if wn:
            wn.writerow(["id", "atom", "z"] + node_cols)
        structures = read_structures(structure_files(paths))
        if limit is not None:
            structures = itertools.islice(structures, limit)
        for row in predict_structures(model, structures, settings=predictor.settings,
                                      batch_size=batch_size, report=report):
            s: Structure = row["structure"]
            row["n_atoms"] = len(s.numbers)
            if not all(c(row) for c in conditions):
                filtered += 1
                continue
            if top is not None and not sort and written >= top:  # unsorted: the first N that pass
                break
            written += 1
            if wg:
                wg.writerow([row["id"]] + [_fmt(row[c]) if c != "n_atoms" else row[c] for c in columns] + [s.formula])
            if wn:
                for a in range(len(s.numbers)):
                    wn.writerow([row["id"], a, int(s.numbers[a])] + [_fmt(row[n][a]) for n in node_cols])
            if xyz is not None:
                atoms = s.to_ase()
                for n in node_cols:
                    atoms.arrays[n] = np.asarray(row[n], float)
                atoms.info.update({"id": row["id"], **{c: row[c] for c in columns if c != "n_atoms"}})
                ase_write(xyz, atoms, format="extxyz")
            if magmom_export is not None:
                export_warm_start(s, row[magmom_head], magmom_export)
            if as_json or sort:
                keep = {"id": row["id"], "formula": s.formula, **{c: row[c] for c in columns}}
                if as_json:
                    keep.update({n: np.asarray(row[n]).round(6).tolist() for n in node_cols})
                held.append(keep)
    finally:
        for f in (fg, fn, xyz):
            if f is not None:
                f.close()
    if sort:
        held = sort_rows(held, *sort)
    if top is not None:
        held = held[:top]
    if as_json:
        out.write_text(json.dumps({"models": [str(p) for p in predictor.paths], "conditions": list(where),
                                   "sort_by": sort_by, "predictions": held}, indent=1))
    elif sort:
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id"] + columns + ["formula"])
            for r in held:
                w.writerow([r["id"]] + [_fmt(r[c]) if c != "n_atoms" else r[c] for c in columns] + [r["formula"]])
    return out, report, filtered

