"""Prediction on new structures with a saved model or run: files, folders, globs."""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterable, Iterator
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
from matgnn.graphs.dataset import record_to_data
from matgnn.graphs.neighbors import GraphSettings
from matgnn.models.base import MODEL_FILE, MatgnnModel, load_model

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".extxyz", ".xyz")


def model_folder(path: str | Path) -> Path:
    path = Path(path)
    return path / "model" if (path / "model" / MODEL_FILE).is_file() else path


def graph_settings_of(path: str | Path) -> GraphSettings:
    """The graph settings a saved model was trained with."""
    info = json.loads((model_folder(path) / MODEL_FILE).read_text())
    if "graphs" not in info:
        raise ValueError(f"{path}: the model does not record its graph settings; pass them explicitly")
    return GraphSettings(**info["graphs"])


def structure_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named, files of folders (CIF, POSCAR/CONTCAR, *.vasp, extxyz), glob patterns."""
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


@torch.no_grad()
def predict_structures(model: MatgnnModel, structures: Iterable[Structure | StructureError], settings: GraphSettings,
                       batch_size: int = 64, report: LoadReport | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``{"id", "structure", <graph head>: value, <node head>: array}`` per usable
    structure, in batches (memory bounded by ``batch_size``); bad ones go to ``report``.
    Per-atom values are in the structure's own atom order."""
    from torch_geometric.data import Batch

    model.eval()
    report = report if report is not None else LoadReport("predict")
    pending: list = []
    kept: list[Structure] = []

    def flush() -> Iterator[dict[str, Any]]:
        batch = Batch.from_data_list(pending)
        with torch.inference_mode():
            out = model(batch)
        counts = batch[keys.N_ATOMS].tolist()
        starts = np.cumsum([0] + counts)
        for g, sid in enumerate(batch[keys.STRUCTURE_ID]):
            row: dict[str, Any] = {"id": sid, "structure": kept[g]}
            for spec in model.head_specs:
                v = out[spec["name"]]
                row[spec["name"]] = float(v[g]) if spec["level"] == "graph" else v[starts[g]:starts[g + 1]].numpy()
            yield row
        pending.clear()
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
        pending.append(record_to_data(rec))
        kept.append(s)
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        yield from flush()


def _read(files: Iterable[Path]) -> Iterator[Structure | StructureError]:
    for f in files:
        try:
            yield read_structure_file(f)
        except StructureError as e:
            yield e


def predict_files(model_path: str | Path, paths: Iterable[str | Path], out: str | Path,
                  batch_size: int = 64, magmom_export: str | Path | None = None,
                  magmom_head: str | None = None) -> tuple[Path, LoadReport]:
    """Predict every structure file under ``paths``; write ``out`` (CSV, one row per
    structure with every graph head) and, for per-atom heads, ``<out stem>_atoms.csv``.
    ``magmom_export``: a folder for DFT warm-start files of the per-atom head ``magmom_head``
    (default: the model's only per-atom head) — see :mod:`matgnn.prediction.warmstart`."""
    model = load_model(model_path)
    settings = graph_settings_of(model_path)
    report = LoadReport("predict")
    out = Path(out)
    graph = [s["name"] for s in model.head_specs if s["level"] == "graph"]
    node = [s["name"] for s in model.head_specs if s["level"] == "node"]
    atoms_path = out.with_name(out.stem + "_atoms.csv")
    if magmom_export is not None:
        from matgnn.prediction.warmstart import export_warm_start

        if magmom_head is None:
            if len(node) != 1:
                raise ValueError(f"the model has per-atom heads {node}; name the moment head (magmom_head)")
            magmom_head = node[0]
        elif magmom_head not in node:
            raise ValueError(f"{magmom_head!r} is not a per-atom head of the model ({node})")
    with open(out, "w", newline="") as fg, (open(atoms_path, "w", newline="") if node else open("/dev/null", "w")) as fn:
        wg, wn = csv.writer(fg), csv.writer(fn)
        wg.writerow(["id"] + graph)
        if node:
            wn.writerow(["id", "atom"] + node)
        for row in predict_structures(model, _read(structure_files(paths)), settings, batch_size, report):
            wg.writerow([row["id"]] + [f"{row[n]:.6g}" for n in graph])
            for a in range(len(row[node[0]]) if node else 0):
                wn.writerow([row["id"], a] + [f"{row[n][a]:.6g}" for n in node])
            if magmom_export is not None:
                export_warm_start(row["structure"], row[magmom_head], magmom_export)
    return out, report
