"""The LMDB graph cache: reuse, no-op rebuild, and a build killed midway."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.pool
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from matgnn.data.sources import AseSource, EmtAlloySource
from matgnn.errors import StructureError
from matgnn.graphs.cache import build_graph_cache, read_meta
from matgnn.graphs.dataset import GraphDataset
from matgnn.graphs.neighbors import GraphSettings


def _records(cache):
    return {r["id"]: r for r in cache.records()}


def _assert_same(a, b):
    ra, rb = _records(a), _records(b)
    assert ra.keys() == rb.keys()
    for k in ra:
        for field in ("z", "pos", "cell", "src", "dst", "offsets"):
            np.testing.assert_array_equal(ra[k][field], rb[k][field])
        assert ra[k]["graph_targets"] == rb[k]["graph_targets"]


def test_rebuild_with_same_settings_is_a_noop(tmp_path):
    src = EmtAlloySource(80, seed=3)
    settings = GraphSettings(cutoff=5.0, max_neighbors=12)
    cache = build_graph_cache(src, settings, cache_root=tmp_path, workers=2, progress=False)
    assert len(cache) == 80 and cache.build_stats.built == 80
    again = build_graph_cache(EmtAlloySource(80, seed=3), settings, cache_root=tmp_path, progress=False)
    assert again.path == cache.path and again.build_stats.built == 0
    # other settings -> another cache; other data -> another cache
    other = build_graph_cache(src, GraphSettings(cutoff=4.0), cache_root=tmp_path, workers=1, progress=False)
    assert other.path != cache.path
    assert build_graph_cache(EmtAlloySource(80, seed=4), settings, cache_root=tmp_path, workers=1,
                             progress=False).path != cache.path


def test_parallel_and_serial_builds_are_identical(tmp_path):
    src = EmtAlloySource(50, seed=1)
    a = build_graph_cache(src, GraphSettings(cutoff=5.0), cache_root=tmp_path / "a", workers=1, progress=False)
    b = build_graph_cache(src, GraphSettings(cutoff=5.0), cache_root=tmp_path / "b", workers=2, progress=False)
    assert a.ids == b.ids
    _assert_same(a, b)


def test_build_killed_midway_then_rerun_is_complete_and_correct(tmp_path):
    root = tmp_path / "killed"
    marker = tmp_path / "first-chunk-committed"
    script = textwrap.dedent(f"""
        import time, pathlib
        from matgnn.data.sources import EmtAlloySource
        from matgnn.graphs.cache import build_graph_cache
        from matgnn.graphs.neighbors import GraphSettings
        def on_chunk(n):
            pathlib.Path({str(marker)!r}).touch()
            time.sleep(30)  # killed here, with some chunks committed and others not
        build_graph_cache(EmtAlloySource(120, seed=7), GraphSettings(cutoff=5.0), cache_root={str(root)!r},
                          workers=1, progress=False, chunk=40, on_chunk=on_chunk)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, "builder exited early"
            assert time.time() < deadline, "builder never committed a chunk"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    (path,) = list(root.iterdir())
    assert read_meta(path) is None  # never looks complete
    resumed = build_graph_cache(EmtAlloySource(120, seed=7), GraphSettings(cutoff=5.0), cache_root=root,
                                workers=1, progress=False)
    assert resumed.path == path
    assert resumed.build_stats.reused == 40 and resumed.build_stats.built == 80
    clean = build_graph_cache(EmtAlloySource(120, seed=7), GraphSettings(cutoff=5.0), cache_root=tmp_path / "clean",
                              workers=1, progress=False)
    assert resumed.ids == clean.ids and len(resumed) == 120
    _assert_same(resumed, clean)


def test_dataset_reads_graphs_from_lmdb(tmp_path):
    cache = build_graph_cache(EmtAlloySource(10), GraphSettings(cutoff=5.0), cache_root=tmp_path, workers=1,
                              progress=False)
    ds = GraphDataset(cache, [3, 5])
    d = ds[1]
    assert d.structure_id == cache.ids[5]
    assert d.y_atom_energy.shape == (d.num_nodes,)
    assert d.y_mixing_energy.shape == (1,)
    assert d.edge_index.max() < d.num_nodes


def test_packed_batches_equal_pyg_collation(tmp_path):
    """The in-memory loader's index-arithmetic batches hold exactly what PyG's collate makes."""
    from torch_geometric.data import Batch

    from matgnn.graphs.batching import make_loader
    from matgnn.graphs.packed import PackedGraphs

    cache = build_graph_cache(EmtAlloySource(12), GraphSettings(cutoff=5.0), cache_root=tmp_path, workers=1,
                              progress=False)
    positions = [0, 2, 3, 5, 7, 8, 11]
    packed = PackedGraphs(cache, positions, ["mixing_energy"], ["atom_energy"])
    ds = GraphDataset(cache, positions, ["mixing_energy"], ["atom_energy"])
    order = torch.tensor([4, 0, 6, 2])
    ours = packed.batch(order)
    ref = Batch.from_data_list([ds[i] for i in order.tolist()])
    assert set(ours.keys()) == set(ref.keys())
    for key in ref.keys():
        if torch.is_tensor(ref[key]):
            assert torch.equal(ours[key], ref[key]), key
        else:
            assert ours[key] == ref[key], key
    assert ours.num_graphs == 4 and ours.num_nodes == ref.num_nodes
    loader = make_loader(packed, 3, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = [sid for b in loader for sid in b.structure_id]
    assert len(loader) == 3 and sorted(seen) == sorted(cache.ids[i] for i in positions)


def test_two_worker_builds_leave_no_worker_behind(tmp_path, monkeypatch):
    """A finished build lets its pool workers exit (close + join): Pool.terminate(), whose signal-and-join can hang
    in a forked pool (CPython #78178), is kept for a build that stops early, here on an invalid structure. Either
    way no worker is left running, and the stopped build raises."""
    terminated = []
    real = mp.pool.Pool.terminate

    def terminate(pool):  # still ends the pool; only counts the call
        terminated.append(1)
        real(pool)

    monkeypatch.setattr(mp.pool.Pool, "terminate", terminate)
    build_graph_cache(EmtAlloySource(40, seed=2), GraphSettings(cutoff=5.0), cache_root=tmp_path / "a", workers=2,
                      progress=False)
    assert mp.active_children() == [] and terminated == []
    good = []
    for i in range(80):
        a = Atoms("CuO", positions=[[0, 0, 0], [1.8 + 0.001 * i, 0, 0]], cell=[6, 6, 6], pbc=True)
        a.info["energy_x"] = float(i)
        good.append(a)
    bad = Atoms("CuOH", positions=[[0, 0, 0], [1.8, 0, 0], [10, 10, 10]], cell=[20, 20, 20], pbc=True)
    bad.info["energy_x"] = 0.0
    write(tmp_path / "mix.extxyz", good[:40] + [bad] + good[40:])
    with pytest.raises(StructureError, match="isolated atom"):
        build_graph_cache(AseSource(tmp_path / "mix.extxyz"), GraphSettings(cutoff=5.0), cache_root=tmp_path / "b",
                          workers=2, progress=False, on_invalid="error")
    assert mp.active_children() == [] and terminated == [1]
