"""Backbone feature extraction on CPU: how many new 64-atom cells per second matgnn's frozen-feature path gives, and
where the time goes (the backbone's own graph building against its network's forward pass), for CHGNet 0.3.0
and SevenNet-0.

Measured on 32 rattled 2x2x2 rock-salt supercells (64 atoms each, none cached): (a) matgnn's path as it runs
(``FrozenBackbone.features``: CHGNet in batches of 32 through ``predict_structure``; SevenNet one structure at a
time through its ASE calculator on one thread); (b) the same work split in two, the graphs alone and then the
network's forward pass on all 32 graphs batched (CHGNet: ``predict_graph``; SevenNet: its feature modules on a
PyG batch, two threads), which bounds what batching can gain: the forward pass alone is the floor. The target
(issue: at least 10x the structures per second of one-at-a-time extraction) is stated against (a).

Usage: python benchmarks/backbone_features_speed.py [--n 32]
Writes benchmarks/results/backbone_features_speed.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import target, write_result  # noqa: E402


def cells(n: int) -> list:
    from ase.build import bulk

    out = []
    for k in range(n):
        a = bulk("NaCl", "rocksalt", a=5.64 + 0.01 * k, cubic=True).repeat((2, 2, 2))
        a.rattle(0.02, seed=k)
        out.append(a)
    return out


def as_tuples(atoms: list) -> list:
    return [(f"s{k}", a.numbers, a.positions, a.cell[:], a.pbc) for k, a in enumerate(atoms)]


def chgnet(atoms: list) -> dict[str, float]:
    from pymatgen.io.ase import AseAtomsAdaptor

    from matgnn.models.backbones.chgnet import ChgnetFeatures

    store = ChgnetFeatures(root=Path(tempfile.mkdtemp()))
    model = store.model  # loaded before timing
    n = len(atoms)
    t = time.perf_counter()
    store.features(as_tuples(atoms))
    path = time.perf_counter() - t
    structures = [AseAtomsAdaptor.get_structure(a) for a in atoms]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        graphs = [model.graph_converter(s) for s in structures]
        g = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad():
            model.predict_graph(graphs, task="e", return_atom_feas=True, return_crystal_feas=True, batch_size=n)
        f = time.perf_counter() - t
    return {"path.structures_per_s": n / path, "graphs.ms_per_structure": 1000 * g / n,
            "forward_batched.ms_per_structure": 1000 * f / n, "path.ms_per_structure": 1000 * path / n}


def sevennet(atoms: list) -> dict[str, float]:
    from ase import Atoms
    from torch_geometric.data import Batch

    from matgnn.models.backbones.sevennet import SevennetFeatures, _sevennet_reference, sevennet_network
    from matgnn.packages import import_backbone

    store = SevennetFeatures(root=Path(tempfile.mkdtemp()))
    store.calculator  # loaded before timing
    n = len(atoms)
    t = time.perf_counter()
    old = store.features(as_tuples(atoms))
    path = time.perf_counter() - t
    to_graph = import_backbone("sevenn.train.dataload", "unlabeled_atoms_to_graph", "sevennet", "sevenn")
    graph_data = import_backbone("sevenn.atom_graph_data", "AtomGraphData", "sevennet", "sevenn")
    net = sevennet_network().eval()
    names = list(net._modules)
    modules = names[:names.index("reduce_input_to_hidden")]
    ref = _sevennet_reference()
    t = time.perf_counter()
    graphs = []
    for a in atoms:
        d = to_graph(Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell[:], pbc=a.pbc), ref["cutoff"],
                     with_shift=False)
        d.pop("data_info", None)
        graphs.append(graph_data.from_numpy_dict(d))
    g = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        data = Batch.from_data_list(graphs)
        if net.eval_type_map:
            data[net.key_node_feature] = net._atomic_numbers_to_onehot(data[net.key_atomic_numbers])  # noqa: SLF001
        for name in modules:
            data = net._modules[name](data)
    f = time.perf_counter() - t
    x = data["x"].numpy()
    diff = max(float(np.abs(x[64 * k:64 * (k + 1)] - old[k][0]).max()) for k in range(n))
    return {"path.structures_per_s": n / path, "graphs.ms_per_structure": 1000 * g / n,
            "forward_batched.ms_per_structure": 1000 * f / n, "path.ms_per_structure": 1000 * path / n,
            "batched_vs_path.max_abs_feature_difference": diff}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=32)
    args = p.parse_args()
    started = time.time()
    atoms = cells(args.n)
    metrics: dict[str, float] = {}
    targets = {}
    for name, fn in (("chgnet", chgnet), ("sevennet", sevennet)):
        got = fn(atoms)
        metrics.update({f"{name}.{k}": v for k, v in got.items()})
        floor = 1000 / got["forward_batched.ms_per_structure"]  # structures/s if the graphs cost nothing
        metrics[f"{name}.forward_only.structures_per_s"] = floor
        metrics[f"{name}.batching_ceiling_vs_path"] = floor / got["path.structures_per_s"]
        print(name, {k: round(v, 3) for k, v in got.items()}, flush=True)
    one_at_a_time = {"chgnet": 1 / 0.11, "sevennet": 1 / 0.54}  # the per-structure figures
    for name, base in one_at_a_time.items():
        targets[f"{name}.speedup_vs_one_at_a_time"] = target(10.0, ">=", metrics[f"{name}.path.structures_per_s"] / base)
    write_result("backbone_features_speed", started,
                 data={"structures": f"{args.n} rattled NaCl 2x2x2 supercells, 64 atoms each, none cached",
                       "threads": torch.get_num_threads(),
                       "why_the_target_is_missed": (
                           "the network's forward pass alone takes most of the time (e3nn tensor products for "
                           "SevenNet, CHGNet's angle and bond layers): batching removes only the per-structure "
                           "overhead, bounded by batching_ceiling_vs_path; 10x on CPU needs less work per atom "
                           "(a smaller backbone, or features read before the last interaction) or a GPU")},
                 metrics=metrics,
                 anchors={"issue.chgnet.seconds_per_structure": 0.11, "issue.sevennet.seconds_per_structure": 0.54},
                 targets=targets)


if __name__ == "__main__":
    main()
