"""``matgnn data info``: what a source holds, and what of it is unusable."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from matgnn.data.report import LoadReport
from matgnn.data.sources.base import StructureSource
from matgnn.data.structure import validate_structure
from matgnn.errors import StructureError
from matgnn.graphs.neighbors import GraphSettings, build_neighbor_graph


def source_info(source: StructureSource, cutoff: float = 8.0,
                values: dict[str, Any] | None = None, twins: bool = False,
                progress: Any = None) -> tuple[dict[str, Any], LoadReport]:
    """Counts, target fields with missing values and statistics, element counts, and
    the load report (every check of the graph builder at ``cutoff``). ``values``: a dict
    that receives the per-structure values (for plots): ``ids``, ``graph_targets`` (name → list),
    ``node_targets`` (name → concatenated array), ``n_atoms``, ``n_elements``, ``dimensionality``.
    ``twins``: also the structural twins (:mod:`matgnn.data.twins`): ``info["twins"]`` summarises them and
    their labels' spread, ``values["twin_rows"]`` lists them (``progress``: a callable for a long search)."""
    report = LoadReport(source=source.describe())
    settings = GraphSettings(cutoff=cutoff, max_neighbors=None)
    graph_vals: dict[str, list[float]] = {}
    node_vals: dict[str, list[np.ndarray]] = {}
    n_atoms: list[int] = []
    ids: list[str] = []
    elements: Counter[str] = Counter()
    dims: Counter[str] = Counter()
    dim_list: list[str] = []
    n_elements: list[int] = []
    formulas: list[str] = []
    structures: list[tuple] = []  # (numbers, positions, cell) of each kept entry, for twins
    from ase.data import chemical_symbols

    for entry in source:
        if isinstance(entry, StructureError):
            report.skip(entry)
            continue
        try:
            validate_structure(entry)
            build_neighbor_graph(entry, settings)
        except StructureError as e:
            report.skip(e)
            continue
        report.kept += 1
        ids.append(str(entry.id))
        n_atoms.append(entry.n_atoms)
        elements.update(chemical_symbols[z] for z in set(entry.numbers.tolist()))
        n_elements.append(len(set(entry.numbers.tolist())))
        if twins:
            formulas.append(entry.formula)
            structures.append((entry.numbers, entry.positions, entry.cell))
        dim_list.append(str(entry.meta.get("dimensionality") or ""))
        if entry.meta.get("dimensionality"):
            dims[str(entry.meta["dimensionality"])] += 1
        for k in dict.fromkeys([*graph_vals, *entry.graph_targets]):
            graph_vals.setdefault(k, [math.nan] * (report.kept - 1)).append(entry.graph_targets.get(k, math.nan))
        for k, v in entry.node_targets.items():
            node_vals.setdefault(k, []).append(v)

    def stats(v: np.ndarray) -> dict[str, Any]:
        lab = v[~np.isnan(v)]
        out: dict[str, Any] = {"labelled": int(len(lab)), "missing": int(len(v) - len(lab))}
        if len(lab):
            out.update(mean=float(lab.mean()), std=float(lab.std()), min=float(lab.min()), max=float(lab.max()))
        return out

    if values is not None:
        values.update(graph_targets={k: np.asarray(v, float) for k, v in graph_vals.items()},
                      node_targets={k: np.concatenate(v) for k, v in node_vals.items()},
                      ids=ids, n_atoms=np.asarray(n_atoms), n_elements=np.asarray(n_elements), dimensionality=dim_list,
                      elements=elements)
    info = {
        "source": source.describe(),
        "entries": report.total, "kept": report.kept, "skipped": len(report.skipped),
        "skipped_by_reason": report.reasons(),
        "atoms_per_structure": {"min": int(min(n_atoms, default=0)), "mean": float(np.mean(n_atoms)) if n_atoms else 0.0,
                                "max": int(max(n_atoms, default=0)), "total": int(sum(n_atoms))},
        "graph_targets": {k: stats(np.asarray(v, float)) for k, v in graph_vals.items()},
        "node_targets": {k: stats(np.concatenate(v)) | {"structures": len(v)} for k, v in node_vals.items()},
        "elements": dict(elements.most_common()),
        "dimensionality": dict(dims),
        "check_cutoff": cutoff,
    }
    if twins:
        from matgnn.data.twins import twin_groups, twin_table

        groups = twin_groups(formulas, structures.__getitem__, progress=progress)
        info["twins"], rows = twin_table(ids, formulas, groups, graph_vals)
        if values is not None:
            values["twin_rows"] = rows
    return info, report
