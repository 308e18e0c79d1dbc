"""Deployment cost of a saved model: parameters, load time, graph-building time and
latency per structure (one at a time and batched) on CPU, and on GPU when present — the
seed research's deployment table in form."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matgnn.data.structure import Structure
from matgnn.graphs.cache import graph_record
from matgnn.models.loading import load_model
from matgnn.prediction.predict import graph_settings_of


def example_cell(n_atoms: int = 64, seed: int = 0) -> Structure:
    """A rattled fcc Cu–Ni cell of ``n_atoms`` atoms (a k×k×k repeat of the primitive cell,
    trimmed by choosing k so that k³ ≥ n; extra atoms are dropped); ``seed`` picks the rattle."""
    from ase.build import bulk

    k = int(np.ceil(n_atoms ** (1 / 3) - 1e-9))
    atoms = bulk("Cu", "fcc", a=3.6).repeat((k, k, k))
    atoms.rattle(0.02, seed=seed)
    atoms.symbols[::3] = "Ni"
    del atoms[n_atoms:]
    return Structure(f"fcc-{n_atoms}", atoms.numbers.copy(), atoms.positions.copy(), np.asarray(atoms.cell[:]),
                     np.ones(3, bool), {}, {})


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def deploy_cost(model_path: str | Path, n_atoms: int = 64, batch: int = 64, repeats: int = 20,
                devices: list[str] | None = None) -> dict[str, Any]:
    """Measured costs in seconds (``*_ms`` in milliseconds) of a saved model (or an ensemble
    folder: all members run, parameters summed) on each device. Batches are built as ``predict``
    builds them (with the models' batch fields); for a model that needs them (a backbone's features,
    triplets) ``batch_fields_ms`` is their cost for one new structure (a cell rattled from a random seed
    each time, so no cache answers), to add to ``graph_build_ms`` and ``single_ms``."""
    from matgnn.artifacts import resolve
    from matgnn.graphs.packed import PackedGraphs
    from matgnn.models.base import batch_fields_of
    from matgnn.prediction.predict import Predictor

    t0 = time.perf_counter()
    ensemble = resolve(model_path).kind == "ensemble"
    model = Predictor([model_path]) if ensemble else load_model(model_path)
    load_s = time.perf_counter() - t0
    modules = model.members if ensemble else [model]
    settings = model.settings if ensemble else graph_settings_of(model_path)
    s = example_cell(n_atoms)
    graph_ms = _time(lambda: graph_record(s, settings), repeats) * 1e3
    fields = batch_fields_of(*modules)

    def make_batch(records: list[dict[str, Any]]):  # noqa: ANN202 - the predict path's batch
        return PackedGraphs.from_records(records, extras=fields).batch(torch.arange(len(records)))

    record = graph_record(s, settings)
    res: dict[str, Any] = {"model": str(model_path),
                           "class": "+".join(type(m).__name__ for m in modules) if ensemble else type(model).__name__,
                           "parameters": sum(p.numel() for m in modules for p in m.parameters()), "load_s": load_s,
                           "n_atoms": n_atoms, "graph_build_ms": graph_ms, "batch": batch}
    if fields:
        # _time calls repeats + 1 times: a new cell each, rattled from a random seed so that no feature cache
        # (this process's memo, or the disk cache of an earlier call or run) has seen it
        seed = int.from_bytes(os.urandom(4), "little")
        fresh = iter([graph_record(example_cell(n_atoms, seed + k), settings) for k in range(repeats + 1)])
        res["batch_fields"] = list(fields)
        res["batch_fields_ms"] = _time(lambda: make_batch([next(fresh)]), repeats) * 1e3
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for dev in devices:
        for module in modules:
            module.to(dev).eval()
        m = model
        one = make_batch([record]).to(dev)
        many = make_batch([record] * batch).to(dev)

        def run(b):
            with torch.inference_mode():
                out = m(b)
            if dev == "cuda":
                torch.cuda.synchronize()
            return out

        res[f"{dev}.single_ms"] = _time(lambda: run(one), repeats) * 1e3
        res[f"{dev}.batched_ms_per_structure"] = _time(lambda: run(many), max(repeats // 4, 2)) * 1e3 / batch
    return res
