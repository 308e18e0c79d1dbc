"""One test per class of bad input: a clear message naming the structure, and skipped
entries counted and listed, never dropped silently."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

from matgnn.data.sources import AseSource, FolderSource, MagmomSource
from matgnn.data.structure import Structure, validate_structure
from matgnn.errors import StructureError
from matgnn.graphs.cache import build_graph_cache, graph_record
from matgnn.graphs.neighbors import GraphSettings


def _cu(sid="cu") -> Structure:
    a = bulk("Cu", "fcc", a=3.6)
    return Structure(sid, a.numbers.astype(np.int64), a.positions.copy(), np.asarray(a.cell[:], float), np.ones(3, bool))


def _raises(s: Structure, code: str, *fragments: str, settings: GraphSettings | None = None) -> StructureError:
    with pytest.raises(StructureError) as exc:
        graph_record(s, settings or GraphSettings(cutoff=5.0))
    err = exc.value
    assert err.code == code
    msg = str(err)
    assert f"structure '{s.id}'" in msg
    for f in fragments:
        assert f in msg, msg
    return err


def _folder(tmp_path, files: dict[str, str], id_prop: str):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "id_prop.csv").write_text(id_prop)
    return FolderSource(tmp_path)


def test_unparsable_file_names_the_file(tmp_path):
    a = bulk("Cu", "fcc", a=3.6)
    write(tmp_path / "good.cif", a)
    src = _folder(tmp_path, {"broken.cif": "data_x\n_cell_length_a oops\nthis is not a CIF\n"}, "good,1.0\nbroken,2.0\nmissing,3.0\n")
    entries = list(src)
    assert isinstance(entries[0], Structure)
    assert isinstance(entries[1], StructureError) and entries[1].code == "unparsable"
    assert "broken.cif" in str(entries[1]) and "structure 'broken'" in str(entries[1])
    assert isinstance(entries[2], StructureError) and "no structure file" in str(entries[2])
    cache = build_graph_cache(src, GraphSettings(cutoff=5.0), cache_root=tmp_path / "c", workers=1, progress=False)
    assert len(cache) == 1
    assert {s["id"] for s in cache.report.skipped} == {"broken", "missing"}
    assert (cache.path / "skipped.csv").read_text().count("\n") == 3  # header + 2


def test_unknown_element(tmp_path):
    s = _cu("weird")
    s.numbers = np.array([120])
    _raises(s, "unknown_element", "atomic number 120")
    poscar = "Xx\n1.0\n3 0 0\n0 3 0\n0 0 3\nQq\n1\nDirect\n0 0 0\n"
    src = _folder(tmp_path, {"bad.vasp": poscar}, "bad,1.0\n")
    (entry,) = list(src)
    assert isinstance(entry, StructureError) and "structure 'bad'" in str(entry)


def test_zero_and_negative_cell_volume():
    s = _cu("flat")
    s.cell = np.array([[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]])
    _raises(s, "bad_cell", "cell volume", "zero")
    s = _cu("lefty")
    s.cell = s.cell[[1, 0, 2]]
    _raises(s, "bad_cell", "negative")


def test_overlapping_atoms_including_periodic_images():
    s = _cu("overlap")
    s.numbers = np.array([29, 29])
    s.positions = np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    _raises(s, "overlapping_atoms", "0.300 Å", "minimum 0.5")
    tiny = Structure("tiny", np.array([1]), np.zeros((1, 3)), np.eye(3) * 0.4, np.ones(3, bool))
    _raises(tiny, "overlapping_atoms", "its own periodic image")


def test_isolated_atom_skip_by_default_and_error_on_request(tmp_path):
    atoms = Atoms("CuO", positions=[[0, 0, 0], [1.8, 0, 0]], cell=[20, 20, 20], pbc=True)
    atoms += Atoms("H", positions=[[10, 10, 10]])
    s = Structure("lonely", atoms.numbers.astype(np.int64), atoms.positions, np.asarray(atoms.cell[:]), np.ones(3, bool))
    _raises(s, "isolated_atom", "2 (H)", "5.0 Å cutoff")
    good = atoms[:2]
    good.info["energy_x"] = 1.0
    atoms.info["energy_x"] = 2.0
    write(tmp_path / "mix.extxyz", [good, atoms])
    src = AseSource(tmp_path / "mix.extxyz")
    cache = build_graph_cache(src, GraphSettings(cutoff=5.0), cache_root=tmp_path / "c", workers=1, progress=False)
    assert len(cache) == 1 and cache.report.skipped[0]["code"] == "isolated_atom"
    assert "mix[1]" in cache.report.skipped[0]["id"]
    with pytest.raises(StructureError, match="isolated atom"):
        build_graph_cache(AseSource(tmp_path / "mix.extxyz"), GraphSettings(cutoff=5.0),
                          cache_root=tmp_path / "c2", workers=1, progress=False, on_invalid="error")


def test_nan_and_inf_targets(tmp_path):
    s = _cu("infy")
    s.graph_targets = {"gap": float("inf")}
    _raises(s, "bad_target", "'gap' is inf")
    s = _cu("nanny")
    s.node_targets = {"magmom": np.array([np.nan])}
    _raises(s, "bad_target", "'magmom' is nan at atom 0")
    a = bulk("Cu", "fcc", a=3.6)
    write(tmp_path / "a.cif", a)
    write(tmp_path / "b.cif", a)
    write(tmp_path / "c.cif", a)
    src = _folder(tmp_path, {}, "id,gap\na,inf\nb,na\nc,1.5\n")
    entries = list(src)
    assert isinstance(entries[0], StructureError) and "'gap' is 'inf'" in str(entries[0])
    assert np.isnan(entries[1].graph_targets["gap"])  # "na" is a missing label, not an error
    assert entries[2].graph_targets["gap"] == 1.5


def test_per_atom_target_length_mismatch(tmp_path):
    s = _cu("short")
    s.node_targets = {"magmom": np.array([1.0, 2.0])}
    _raises(s, "target_length", "2 values for 1 atoms")
    path = tmp_path / "m.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"atomic_numbers": [26], "lattice": np.eye(3).tolist(), "cart_coords": [[0, 0, 0]],
                            "magmoms": [2.2, 0.1]}) + "\n")
        f.write(json.dumps({"atomic_numbers": [26], "lattice": (np.eye(3) * 2.5).tolist(), "cart_coords": [[0, 0, 0]],
                            "magmoms": [2.2]}) + "\n")
    cache = build_graph_cache(MagmomSource(path), GraphSettings(cutoff=5.0), cache_root=tmp_path / "c",
                              workers=1, progress=False)
    assert len(cache) == 1
    (skip,) = cache.report.skipped
    assert skip["id"] == "m:1" and skip["code"] == "target_length" and skip["file"].endswith("m.jsonl.gz:1")


def test_empty_structure_and_non_finite_positions():
    s = _cu("nothing")
    s.numbers = np.zeros(0, np.int64)
    s.positions = np.zeros((0, 3))
    with pytest.raises(StructureError, match="no atoms"):
        validate_structure(s)
    s = _cu("nanpos")
    s.positions = np.array([[np.nan, 0, 0]])
    with pytest.raises(StructureError, match="structure 'nanpos'.*positions"):
        validate_structure(s)


def test_parallel_build_reports_bad_structures_from_workers(tmp_path):
    import pickle

    err = StructureError("x", "bad_cell", "cell volume is 0", "f.cif")
    assert pickle.loads(pickle.dumps(err)).as_dict() == err.as_dict()
    atoms = Atoms("CuO", positions=[[0, 0, 0], [1.8, 0, 0]], cell=[20, 20, 20], pbc=True)
    lonely = atoms + Atoms("H", positions=[[10, 10, 10]])
    good = bulk("Cu", "fcc", a=3.6)
    write(tmp_path / "mix.extxyz", [good, lonely, good, atoms, lonely])
    cache = build_graph_cache(AseSource(tmp_path / "mix.extxyz"), GraphSettings(cutoff=5.0),
                              cache_root=tmp_path / "c", workers=2, progress=False)
    assert len(cache) == 3
    assert sorted(s["id"] for s in cache.report.skipped) == ["mix[1]", "mix[4]"]
