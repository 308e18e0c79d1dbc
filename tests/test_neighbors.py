"""The periodic graph builder against ASE's neighbor_list, and its invariances."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.neighborlist import neighbor_list

from matgnn.data.sources import JarvisSource
from matgnn.data.structure import Structure
from matgnn.graphs.neighbors import (
    GraphSettings,
    build_neighbor_graph,
    full_neighbor_list,
)


def _from_ase(atoms, sid="s") -> Structure:
    return Structure(sid, atoms.numbers.astype(np.int64), atoms.positions.copy(), np.asarray(atoms.cell[:], float),
                     np.asarray(atoms.pbc, bool))


def _same_as_ase(s: Structure, cutoff: float) -> None:
    i, j, S, d = full_neighbor_list(s.positions, s.cell, s.pbc, cutoff)
    ai, aj, aS, ad = neighbor_list("ijSd", s.to_ase(), cutoff)
    ours = sorted(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))
    theirs = sorted(zip(ai.tolist(), aj.tolist(), map(tuple, aS.tolist())))
    assert ours == theirs, f"{s.id}: {len(ours)} pairs vs ASE {len(theirs)}"
    np.testing.assert_allclose(np.sort(d), np.sort(ad), atol=1e-9)


@pytest.mark.parametrize("dataset", ["dft_2d", "dft_3d"])
def test_equals_ase_on_all_jarvis_structures(dataset, jarvis_dir):
    structures = list(JarvisSource(dataset, store_dir=jarvis_dir))
    assert len(structures) == {"dft_2d": 1076, "dft_3d": 1056}[dataset]
    for s in structures:
        _same_as_ase(s, 6.0)


def test_slab_with_vacuum_has_no_edges_through_vacuum():
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=8.0)
    assert list(slab.pbc) == [True, True, False]
    s = _from_ase(slab)
    _same_as_ase(s, 6.0)
    g = build_neighbor_graph(s, GraphSettings(cutoff=6.0, max_neighbors=None))
    assert (g.offsets[:, 2] == 0).all()
    # The same slab made fully periodic gets edges through the (too thin) vacuum.
    thin = fcc111("Cu", size=(2, 2, 3), vacuum=1.0)
    thin.pbc = True
    gt = build_neighbor_graph(_from_ase(thin), GraphSettings(cutoff=6.0, max_neighbors=None))
    assert (gt.offsets[:, 2] != 0).any()


def test_one_atom_cell_smaller_than_cutoff_sees_its_own_images():
    atoms = bulk("Po", "sc", a=2.0)
    s = _from_ase(atoms)
    _same_as_ase(s, 4.5)
    g = build_neighbor_graph(s, GraphSettings(cutoff=4.5, max_neighbors=None))
    # lattice points n*a (n != 0) with |n| <= 2.25
    n = np.array([(x, y, z) for x in range(-3, 4) for y in range(-3, 4) for z in range(-3, 4)])
    expected = int(((np.linalg.norm(n, axis=1) <= 2.25) & (np.abs(n).sum(1) > 0)).sum())
    assert len(g.src) == expected
    assert (g.src == 0).all() and (g.dst == 0).all()
    np.testing.assert_allclose(g.distances.min(), 2.0)


def test_strongly_skewed_triclinic_cell():
    cell = np.array([[3.0, 0.0, 0.0], [2.7, 1.2, 0.0], [2.9, 1.1, 0.9]])
    rng = np.random.default_rng(0)
    frac = rng.random((4, 3))
    s = Structure("skewed", np.array([6, 8, 14, 26]), frac @ cell, cell, np.ones(3, bool))
    assert np.linalg.det(cell) > 0
    _same_as_ase(s, 7.0)


def _edge_multiset(s: Structure, settings: GraphSettings) -> Counter:
    g = build_neighbor_graph(s, settings)
    return Counter(zip(g.dst.tolist(), g.src.tolist(), np.round(g.distances, 6).tolist()))


@pytest.mark.parametrize("max_neighbors", [None, 12, 4])
def test_translation_and_wrapping_leave_graph_unchanged(max_neighbors):
    atoms = bulk("NaCl", "rocksalt", a=5.64).repeat((2, 1, 1))
    atoms.symbols[0] = "K"
    atoms.rattle(0.05, seed=1)
    settings = GraphSettings(cutoff=6.0, max_neighbors=max_neighbors)
    ref = _edge_multiset(_from_ase(atoms), settings)
    shifted = atoms.copy()
    shifted.translate([1.234, -0.77, 3.3])
    assert _edge_multiset(_from_ase(shifted), settings) == ref
    shifted.wrap()
    assert _edge_multiset(_from_ase(shifted), settings) == ref


def test_permuting_atoms_permutes_the_graph():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[0, 3]] = "Au"
    atoms.rattle(0.03, seed=2)
    s = _from_ase(atoms)
    perm = np.random.default_rng(3).permutation(len(atoms))
    p = Structure("p", s.numbers[perm], s.positions[perm], s.cell, s.pbc)
    settings = GraphSettings(cutoff=5.0, max_neighbors=12)
    inv = np.argsort(perm)  # new index of old atom k is inv[k]
    ref = {(int(inv[a]), int(inv[b]), d) for (a, b, d) in _edge_multiset(s, settings)}
    assert set(_edge_multiset(p, settings)) == ref


def test_max_neighbors_keeps_ties_and_nearest_first():
    s = _from_ase(bulk("Fe", "bcc", a=2.87))
    g = build_neighbor_graph(s, GraphSettings(cutoff=6.0, max_neighbors=12))
    # 8 first-shell neighbours plus the whole 6-fold second shell (tied at a)
    assert len(g.src) == 14
    np.testing.assert_allclose(np.sort(g.distances)[-1], 2.87, atol=1e-9)
    g10 = build_neighbor_graph(s, GraphSettings(cutoff=6.0, max_neighbors=8))
    assert len(g10.src) == 8 and g10.distances.max() < 2.6


def test_direct_vesin_path_equals_public_wrapper(jarvis_dir):
    for s in list(JarvisSource("dft_2d", store_dir=jarvis_dir))[:200]:
        a = full_neighbor_list(s.positions, s.cell, s.pbc, 8.0, direct=True)
        b = full_neighbor_list(s.positions, s.cell, s.pbc, 8.0, direct=False)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_displacements_are_rj_plus_S_cell_minus_ri():
    from matgnn.graphs.cache import graph_record
    from matgnn.graphs.dataset import record_to_data

    atoms = bulk("GaAs", "zincblende", a=5.65)
    atoms.rattle(0.02, seed=5)
    s = _from_ase(atoms, "gaas")
    data = record_to_data(graph_record(s, GraphSettings(cutoff=5.0, max_neighbors=None)))
    ai, aj, aD = neighbor_list("ijD", atoms, 5.0)
    ours = sorted(zip(data.edge_index[1].tolist(), data.edge_index[0].tolist(), np.round(data.edge_vec.numpy(), 4).tolist()))
    ref = sorted(zip(ai.tolist(), aj.tolist(), np.round(aD, 4).tolist()))
    assert [o[:2] for o in ours] == [r[:2] for r in ref]
    np.testing.assert_allclose(np.array([o[2] for o in ours]), np.array([r[2] for r in ref]), atol=2e-4)
    np.testing.assert_allclose(data.edge_dist.numpy(), np.linalg.norm(data.edge_vec.numpy(), axis=1), rtol=1e-6)


def test_vesin_private_entry_point_is_still_there():
    """matgnn calls vesin's C entry point directly (graphs/neighbors.py, _VesinDirect) and falls back to the
    public wrapper when it is gone; this self-test fails loudly when a vesin release changes it, so the
    fallback (slower on small cells) is never taken silently. The version bound in pyproject.toml follows it."""
    from ase.build import bulk

    from matgnn.graphs.neighbors import _VesinDirect, _VesinPublic

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    direct = _VesinDirect(5.0)(atoms.positions, atoms.cell[:], atoms.pbc)
    public = _VesinPublic(5.0)(atoms.positions, atoms.cell[:], atoms.pbc)
    assert len(direct[0]) > 0
    for x, y in zip(direct, public):
        np.testing.assert_array_equal(x, y)
