"""Structure sources on real data (skipped without ../shared/data) and on files made here."""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest
from ase.build import bulk, mx2
from ase.db import connect
from ase.io import write

from matgnn.data.sources import (
    AseSource,
    EmtAlloySource,
    FolderSource,
    JarvisSource,
    MagmomSource,
    make_source,
    parse_source,
)
from matgnn.data.structure import Structure, make_contiguous
from matgnn.errors import StructureError
from matgnn.graphs.neighbors import GraphSettings, build_neighbor_graph

from .conftest import shared_path


def test_jarvis_dft_2d(jarvis_dir):
    s = list(JarvisSource("dft_2d", store_dir=jarvis_dir))
    assert len(s) == 1076
    assert all(list(x.pbc) == [True, True, False] for x in s)
    assert sum(np.isnan(x.graph_targets["exfoliation_energy"]) for x in s) == 1076 - 748
    assert all(x.meta["dimensionality"] == "2D" for x in s)
    # every monolayer is one contiguous block along c (81 are split across the boundary in the file)
    for x in s:
        frac_c = np.linalg.solve(x.cell.T, x.positions.T)[2]
        assert frac_c.max() - frac_c.min() < 0.75, x.id
    sel = list(JarvisSource("dft_2d", store_dir=jarvis_dir, targets=["optb88vdw_bandgap"], limit=5))
    assert len(sel) == 5 and list(sel[0].graph_targets) == ["optb88vdw_bandgap"]
    assert list(JarvisSource("dft_2d", store_dir=jarvis_dir, dimensionality="3D-bulk")) == []


def test_a_reused_jarvis_cache_does_not_import_jarvis_tools(jarvis_dir, tmp_path):
    """Finding the graph cache of a JARVIS source needs the dataset zip's path (jarvis-tools knows it; importing
    it loads matplotlib and scipy): asked once, then remembered. A remembered zip that is gone, or a damaged
    memo file, is asked for again; a run that reuses its cache never imports jarvis-tools."""
    import subprocess
    import sys

    env = {**os.environ, "MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    code = ("import sys; from matgnn.data.sources import JarvisSource; from matgnn.graphs.cache import "
            f"build_graph_cache; build_graph_cache(JarvisSource('dft_2d', store_dir={jarvis_dir!r}, limit=3), "
            "workers=1, progress=False); print('jarvis' in sys.modules)")

    def imports_jarvis() -> bool:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().splitlines()[-1] == "True"

    assert imports_jarvis()  # the first run builds the cache (and reads the zip through jarvis-tools)
    assert not imports_jarvis()
    memo = tmp_path / "cache" / "jarvis_paths.json"
    (key, path), = json.loads(memo.read_text()).items()
    assert path.endswith(".zip") and os.path.isfile(path) and "dft_2d" in key
    memo.write_text(json.dumps({key: str(tmp_path / "gone.zip")}))
    assert imports_jarvis() and json.loads(memo.read_text())[key] == path  # asked again, remembered again
    memo.write_text("{not json")
    assert imports_jarvis() and not imports_jarvis()


def test_jarvis_dft_3d_fractional_coordinates(jarvis_dir):
    from jarvis.core.atoms import Atoms as JAtoms
    from jarvis.db.figshare import data

    with contextlib.redirect_stdout(io.StringIO()):
        raw = data("dft_3d", store_dir=jarvis_dir)
    ours = list(JarvisSource("dft_3d", store_dir=jarvis_dir))
    assert len(ours) == 1056
    for rec, s in list(zip(raw, ours))[:50]:
        ja = JAtoms.from_dict(rec["atoms"])
        np.testing.assert_allclose(s.positions, ja.cart_coords, atol=1e-4)  # jarvis rounds its lattice
    assert all(x.pbc.all() for x in ours)
    labelled = sum(not np.isnan(x.graph_targets["bulk_modulus_kv"]) for x in ours)
    assert labelled == 873


def test_magmoms_file():
    path = shared_path("mp_magmoms", "mp_magmoms.jsonl.gz")
    s = list(MagmomSource(path, limit=200))
    assert len(s) == 200
    assert all((x.node_targets["magmom"] >= 0).all() for x in s)
    signed = list(MagmomSource(path, signed=True, limit=200))
    assert any((x.node_targets["magmom"] < 0).any() for x in signed)
    assert s[0].id == "mp_magmoms:1"


def test_folder_with_id_prop(tmp_path):
    for k, (sym, a) in enumerate([("Cu", 3.6), ("Al", 4.05), ("Ni", 3.52)]):
        write(tmp_path / f"m{k}.cif", bulk(sym, "fcc", a=a))
    write(tmp_path / "POSCAR-x", bulk("Si", "diamond", a=5.43), format="vasp")
    (tmp_path / "m3.vasp").write_text((tmp_path / "POSCAR-x").read_text())
    (tmp_path / "id_prop.csv").write_text("m0,1.0,2\nm1,na,3\nm2,0.5,\nm3,7,8\n")
    entries = list(FolderSource(tmp_path))
    s = [x for x in entries if not isinstance(x, StructureError)]
    assert [x.id for x in s] == ["m0", "m1", "m2", "m3"]
    # the POSCAR-x file no row names is reported, not dropped silently
    assert [(e.structure_id, e.code) for e in entries if isinstance(e, StructureError)] == [("POSCAR-x", "not_in_id_prop")]
    assert s[0].graph_targets == {"target_1": 1.0, "target_2": 2.0}
    assert np.isnan(s[1].graph_targets["target_1"]) and np.isnan(s[2].graph_targets["target_2"])
    assert s[3].n_atoms == 2 and s[3].formula == "Si"
    (tmp_path / "id_prop.csv").write_text("material,band_gap\nm0,0\n")
    assert list(FolderSource(tmp_path))[0].graph_targets == {"band_gap": 0.0}
    (tmp_path / "id_prop.csv").write_text("m0,N/A\nm1,1.5\n")  # a first label N/A is a missing label, not a header
    first = list(FolderSource(tmp_path))[:2]
    assert [x.id for x in first] == ["m0", "m1"] and np.isnan(first[0].graph_targets["target"])


def test_extxyz_and_ase_db_with_per_atom_arrays(tmp_path):
    a = bulk("Fe", "bcc", a=2.87, cubic=True)
    a.arrays["magmoms"] = np.array([2.2, -2.1])
    a.info["energy_per_atom"] = -8.3
    write(tmp_path / "fe.extxyz", [a, a])
    s = list(AseSource(tmp_path / "fe.extxyz", node_targets=["magmoms"], graph_targets=["energy_per_atom"]))
    assert len(s) == 2 and s[1].id == "fe[1]"
    np.testing.assert_allclose(s[0].node_targets["magmoms"], [2.2, -2.1])
    assert s[0].graph_targets == {"energy_per_atom": -8.3}
    db = connect(str(tmp_path / "x.db"))
    db.write(a, data={"charges": np.array([0.1, -0.1])}, gap=1.5)
    (d,) = list(AseSource(tmp_path / "x.db"))
    assert d.graph_targets == {"gap": 1.5}
    np.testing.assert_allclose(d.node_targets["charges"], [0.1, -0.1])


def test_emt_set_is_deterministic_and_labelled():
    a = list(EmtAlloySource(30, seed=0))
    b = list(EmtAlloySource(50, seed=0))[:30]
    for x, y in zip(a, b):
        assert x.id == y.id
        np.testing.assert_array_equal(x.positions, y.positions)
        assert x.graph_targets == y.graph_targets
    assert all(2 <= x.n_atoms <= 32 for x in a)
    assert len({x.graph_targets["mixing_energy"] for x in a}) == 30
    pure = [x for x in a if len(set(x.numbers.tolist())) == 1]
    for x in pure:  # pure metals mix with nothing: only strain and rattle cost energy
        assert abs(x.graph_targets["mixing_energy"]) < 0.3


def test_make_contiguous_rejoins_a_split_monolayer():
    layer = mx2("MoS2", vacuum=7.0)
    layer.pbc = [True, True, False]
    ref = Structure("mos2", layer.numbers.astype(np.int64), layer.positions.copy(), np.asarray(layer.cell[:]),
                    np.asarray(layer.pbc))
    split = Structure("mos2", ref.numbers, ref.positions.copy(), ref.cell, ref.pbc)
    split.positions[0] += ref.cell[2]  # one S atom re-imaged to the top of the cell
    settings = GraphSettings(cutoff=6.0, max_neighbors=None)
    before = build_neighbor_graph(split, settings)
    joined = build_neighbor_graph(make_contiguous(split), settings)
    expect = build_neighbor_graph(ref, settings)
    assert len(before.src) < len(expect.src)
    np.testing.assert_allclose(np.sort(joined.distances), np.sort(expect.distances), atol=1e-9)


def test_parse_source_specs(tmp_path):
    assert parse_source("emt:20").n_structures == 20
    assert parse_source("jarvis:dft_3d", store_dir="/x").store_dir == "/x"
    (tmp_path / "id_prop.csv").write_text("")
    assert parse_source(str(tmp_path)).kind == "folder"
    import gzip

    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write('{"atomic_numbers": [1]}\n')
    assert parse_source(str(tmp_path / "a.jsonl.gz")).kind == "magmoms"
    assert parse_source("a.extxyz").kind == "ase"
    with pytest.raises(ValueError, match="cannot tell what source"):
        parse_source("nonsense.txt")
    assert isinstance(make_source(parse_source("emt:3")), EmtAlloySource)


def test_mp_cgcnn_cif_records():
    path = shared_path("mp_cgcnn", "mp_cgcnn.jsonl.gz")
    src = make_source(parse_source(str(path), limit=20))
    assert src.__class__.__name__ == "CifJsonlSource"
    s = list(src)
    assert len(s) == 20 and s[0].id == "mp-1" and s[0].n_atoms == 1
    assert set(s[0].graph_targets) == {"formation_energy_per_atom", "band_gap", "efermi", "volume", "total_magnetization"}
    for x in s:
        assert abs(abs(np.linalg.det(x.cell)) - x.graph_targets["volume"]) < 1e-3 * x.graph_targets["volume"]


def test_cif_jsonl_bad_record_is_reported(tmp_path):
    import gzip
    import json

    from ase.io import write as ase_write

    buf = io.BytesIO()
    ase_write(buf, bulk("Cu", "fcc", a=3.6), format="cif")
    with gzip.open(tmp_path / "x.jsonl.gz", "wt") as f:
        f.write(json.dumps({"material_id": "good", "cif": buf.getvalue().decode(), "gap": 0.0}) + "\n")
        f.write(json.dumps({"material_id": "bad", "cif": "garbage", "gap": 1.0}) + "\n")
    from matgnn.data.sources import CifJsonlSource
    from matgnn.errors import StructureError

    good, bad = list(CifJsonlSource(tmp_path / "x.jsonl.gz"))
    assert good.id == "good" and good.graph_targets == {"gap": 0.0}
    assert isinstance(bad, StructureError) and "structure 'bad'" in str(bad) and "x.jsonl.gz:2" in str(bad)


def test_cif_jsonl_parsed_in_cache_workers_same_graphs_and_report(tmp_path):
    """CIF parsing is deferred to the graph-cache builder's worker processes: two workers give the
    same graphs, ids and load report (the bad line named) as building inline."""
    import gzip
    import json

    from ase.io import write as ase_write

    from matgnn.data.sources import CifJsonlSource
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.graphs.neighbors import GraphSettings

    with gzip.open(tmp_path / "x.jsonl.gz", "wt") as f:
        for k, a in enumerate([3.5, 3.6, 3.7, 3.8]):
            buf = io.BytesIO()
            ase_write(buf, bulk("Cu", "fcc", a=a), format="cif")
            f.write(json.dumps({"material_id": f"cu{k}", "cif": buf.getvalue().decode(), "gap": float(k)}) + "\n")
        f.write(json.dumps({"material_id": "bad", "cif": "garbage", "gap": 1.0}) + "\n")
    caches = [build_graph_cache(CifJsonlSource(tmp_path / "x.jsonl.gz"), GraphSettings(cutoff=5.0),
                                cache_root=tmp_path / f"c{w}", workers=w, progress=False) for w in (1, 2)]
    for c in caches:
        assert c.ids == ["cu0", "cu1", "cu2", "cu3"]
        assert c.report.kept == 4 and [s["id"] for s in c.report.skipped] == ["bad"]
        assert "x.jsonl.gz:5" in c.report.skipped[0]["file"]
    for i in range(4):
        a, b = caches[0].record(i), caches[1].record(i)
        assert a["id"] == b["id"] == f"cu{i}"
        assert np.array_equal(a["src"], b["src"]) and np.array_equal(a["offsets"], b["offsets"])
