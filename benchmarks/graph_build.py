"""Graph building speed: matgnn (vesin) vs ASE's neighbor_list, same structures, same run.

Measures structures/s for turning a structure into its cached graph record (checks,
full periodic neighbour list, nearest-12 selection with ties, packing), at 8 Å and 12
neighbours:
  * dft_2d (all 1,076 JARVIS monolayers) and the first N (default 10,000) mp_magmoms
    structures;
  * matgnn single process, matgnn on all cores (process pool, results pickled back as
    the cache build does), and ASE ``neighbor_list('ijSd')`` followed by the very same
    checks and selection code, single process;
  * the whole cache build (read + graphs + LMDB write) on dft_2d, single and all cores,
    and a rebuild with the same settings (should be a no-op).
Parsing the source files is not timed for the per-structure rates (it is the same for
both builders). Writes benchmarks/results/graph_build.json.

Usage: python benchmarks/graph_build.py [--magmom-n 10000] [--ase-n all]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import SHARED_DATA, target, write_result  # noqa: E402

from matgnn.data.sources import JarvisSource, MagmomSource  # noqa: E402
from matgnn.data.structure import validate_structure  # noqa: E402
from matgnn.errors import StructureError  # noqa: E402
from matgnn.graphs.cache import _pack_structure, _work, build_graph_cache, graph_record  # noqa: E402
from matgnn.graphs.neighbors import GraphSettings, select_neighbors  # noqa: E402

SETTINGS = GraphSettings(cutoff=8.0, max_neighbors=12)


def ours(s):
    try:
        return graph_record(s, SETTINGS)
    except StructureError:
        return None


def ours_wire(packed):
    """What a cache-build worker does: decode the structure, build, encode the record."""
    return _work((0, packed, SETTINGS))


def ase_graph(s):
    from ase.neighborlist import neighbor_list

    try:
        validate_structure(s)
        i, j, S, d = neighbor_list("ijSd", s.to_ase(), SETTINGS.cutoff)
        return select_neighbors(s, i, j, S, d, SETTINGS)
    except StructureError:
        return None


def rate(fn, structures, repeats=1):
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in structures:
            fn(s)
        rates.append(len(structures) / (time.perf_counter() - t0))
    return statistics.median(rates)


def rate_pool(structures, workers):
    """The cache build's parallel path without the LMDB writes: the main process encodes
    each structure and sends it to a pool worker, which returns the encoded record."""
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        pool.map(ours_wire, [_pack_structure(s) for s in structures[:64]], chunksize=16)  # warm the workers
        t0 = time.perf_counter()
        for _ in pool.imap(ours_wire, (_pack_structure(s) for s in structures), chunksize=32):
            pass
        return len(structures) / (time.perf_counter() - t0)


def measure(name, structures, ase_n, workers):
    for s in structures[:20]:  # warm-up: imports, element tables
        ours(s)
        ase_graph(s)
    skipped = sum(ours(s) is None for s in structures)
    m = {
        f"{name}.n_structures": len(structures),
        f"{name}.n_skipped": skipped,
        f"{name}.mean_atoms": float(np.mean([s.n_atoms for s in structures])),
        f"{name}.matgnn_single.structures_per_s": rate(ours, structures, repeats=3),
        f"{name}.matgnn_all_cores.structures_per_s": rate_pool(structures, workers),
    }
    ase_set = structures if ase_n is None else structures[:ase_n]
    m[f"{name}.ase_single.structures_per_s"] = rate(ase_graph, ase_set)
    m[f"{name}.ase_n_structures"] = len(ase_set)
    ours_same = m[f"{name}.matgnn_single.structures_per_s"] if ase_set is structures else rate(ours, ase_set, 3)
    m[f"{name}.speedup_vs_ase"] = ours_same / m[f"{name}.ase_single.structures_per_s"]
    m[f"{name}.speedup_all_cores_vs_ase"] = m[f"{name}.matgnn_all_cores.structures_per_s"] / m[f"{name}.ase_single.structures_per_s"]
    for k, v in m.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}", flush=True)
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--magmom-n", type=int, default=10000)
    p.add_argument("--ase-n", default="all", help="'all' or how many structures ASE is timed on")
    args = p.parse_args()
    ase_n = None if args.ase_n == "all" else int(args.ase_n)
    started = time.time()
    workers = os.cpu_count() or 1
    jarvis_dir = str(SHARED_DATA / "jarvis")
    dft2d = list(JarvisSource("dft_2d", store_dir=jarvis_dir))
    magmoms = list(MagmomSource(SHARED_DATA / "mp_magmoms" / "mp_magmoms.jsonl.gz", limit=args.magmom_n))
    metrics = {}
    metrics.update(measure("dft_2d", dft2d, ase_n, workers))
    metrics.update(measure("mp_magmoms", magmoms, ase_n, workers))

    # The whole cache build on dft_2d: read, graphs, LMDB write, load report.
    with tempfile.TemporaryDirectory() as tmp:
        for w, label in ((1, "single"), (workers, "all_cores")):
            t0 = time.perf_counter()
            c = build_graph_cache(JarvisSource("dft_2d", store_dir=jarvis_dir), SETTINGS, cache_root=f"{tmp}/{label}",
                                  workers=w, progress=False)
            metrics[f"dft_2d.cache_build_{label}.structures_per_s"] = len(c) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        build_graph_cache(JarvisSource("dft_2d", store_dir=jarvis_dir), SETTINGS, cache_root=f"{tmp}/single",
                          progress=False)
        metrics["dft_2d.cache_rebuild_noop.seconds"] = time.perf_counter() - t0
    for k in ("dft_2d.cache_build_single.structures_per_s", "dft_2d.cache_build_all_cores.structures_per_s",
              "dft_2d.cache_rebuild_noop.seconds"):
        print(f"{k}: {metrics[k]:.4g}")

    targets = {
        "dft_2d.matgnn_single.structures_per_s": target(5000, ">=", metrics["dft_2d.matgnn_single.structures_per_s"]),
        "dft_2d.speedup_vs_ase": target(30, ">=", metrics["dft_2d.speedup_vs_ase"]),
        "mp_magmoms.speedup_vs_ase": target(30, ">=", metrics["mp_magmoms.speedup_vs_ase"]),
        "dft_2d.cache_rebuild_noop.seconds": target(1.0, "<=", metrics["dft_2d.cache_rebuild_noop.seconds"]),
    }
    path = write_result(
        "graph_build", started,
        data={"source": ["jarvis:dft_2d", "mp_magmoms.jsonl.gz"], "n_structures": len(dft2d) + len(magmoms),
              "settings": "cutoff 8 Å, 12 nearest neighbours (ties kept), full periodic list",
              "split": f"all dft_2d; first {len(magmoms)} lines of mp_magmoms"},
        metrics=metrics,
        anchors={"seed_research_ase.structures_per_s": 135.0},
        targets=targets,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
