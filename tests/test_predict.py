"""Screening predictions: ensembles with σ, filters, sorting, JSON and extxyz outputs, ASE inputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase.build import bulk
from ase.db import connect
from ase.io import read, write
from typer.testing import CliRunner

from matgnn.cli.main import app
from matgnn.config import RunConfig
from matgnn.prediction.predict import (
    Predictor,
    predict_structures,
    read_structures,
    structure_files,
)
from matgnn.prediction.screening import parse_condition, parse_sort, sort_rows
from matgnn.training.run import train

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    out = []
    for seed in (1, 2):
        cfg = RunConfig.model_validate({
            "source": {"kind": "emt", "n_structures": 40}, "graphs": {"cutoff": 5.0},
            "targets": [{"name": "mixing_energy"}, {"name": "atom_energy", "level": "node"}],
            "model": {"hidden": 8, "layers": 1, "head_hidden": 8},
            "train": {"epochs": 2, "batch_size": 8, "threads": 1, "seed": seed, "tensorboard": False},
            "output_dir": str(tmp / "runs"), "cache_dir": str(tmp / "cache"), "name": f"m{seed}"})
        out.append(train(cfg, progress=False))
    return out


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k, (el, a) in enumerate([("Cu", 3.6), ("Ni", 3.52), ("Pd", 3.89), ("Ag", 4.09), ("Au", 4.08)]):
        write(folder / f"s{k}.cif", bulk(el, "fcc", a=a, cubic=True))
    # an extxyz with two frames and an ASE database with two rows
    write(folder / "two.extxyz", [bulk("Pt", "fcc", a=3.92), bulk("Al", "fcc", a=4.05)], format="extxyz")
    write(folder / "one.extxyz", bulk("Cu", "bcc", a=2.9), format="extxyz")
    with connect(str(folder / "more.db")) as db:
        db.write(bulk("Cu", "fcc", a=3.7), id_tag="x")
        db.write(bulk("Ni", "fcc", a=3.5) * (2, 1, 1))
    return folder


def test_conditions_and_sort_keys_are_checked():
    c = parse_condition("band_gap >= 1.5", ["band_gap"])
    assert c({"band_gap": 2.0}) and not c({"band_gap": 1.0})
    with pytest.raises(ValueError, match="not a column"):
        parse_condition("gap>1", ["band_gap"])
    with pytest.raises(ValueError, match="KEY OP NUMBER"):
        parse_condition("band_gap about 1", ["band_gap"])
    assert parse_sort("-band_gap", ["band_gap"]) == ("band_gap", True)
    rows = [{"v": 1.0}, {"v": float("nan")}, {"v": 3.0}]
    assert [r["v"] for r in sort_rows(rows, "v", True)][:2] == [3.0, 1.0]


def test_every_input_kind_is_read(inputs):
    got = list(read_structures(structure_files([inputs])))
    ids = [s.id for s in got]
    assert len(got) == 5 + 2 + 2 + 1 and all(hasattr(s, "numbers") for s in got)
    assert "s0" in ids and "one" in ids and any(i.startswith("two[") for i in ids) and any(i.startswith("more[") for i in ids)


def test_ensemble_mean_and_spread(runs, inputs):
    ens = Predictor(runs)
    structures = list(read_structures(structure_files([inputs])))
    rows = list(predict_structures(ens, structures, ens.settings, batch_size=3))
    singles = [list(predict_structures(ens.members[k], structures, ens.settings)) for k in range(2)]
    for r, a, b in zip(rows, *singles):
        assert r["mixing_energy"] == pytest.approx((a["mixing_energy"] + b["mixing_energy"]) / 2, abs=1e-6)
        assert r["mixing_energy_std"] == pytest.approx(abs(a["mixing_energy"] - b["mixing_energy"]) / 2, abs=1e-6)
        np.testing.assert_allclose(r["atom_energy_std"], np.abs(a["atom_energy"] - b["atom_energy"]) / 2, atol=1e-6)


def test_screening_cli_filters_sorts_and_writes_json_and_extxyz(runs, inputs, tmp_path):
    models = ",".join(str(r) for r in runs)
    full = tmp_path / "all.csv"
    r = runner.invoke(app, ["predict", models, str(inputs), "--out", str(full)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(full)))
    assert len(rows) == 10 and {"mixing_energy", "mixing_energy_std", "n_atoms", "formula"} <= set(rows[0])
    values = sorted(float(x["mixing_energy"]) for x in rows)
    cut = (values[4] + values[5]) / 2  # between two rounded values: no ties with the full-precision ones

    out = tmp_path / "screen.json"
    xyz = tmp_path / "screen.extxyz"
    r = runner.invoke(app, ["predict", models, str(inputs), "--out", str(out), "--where", f"mixing_energy>={cut}",
                            "--sort-by=-mixing_energy_std", "--top", "3", "--atoms-extxyz", str(xyz)])
    assert r.exit_code == 0, r.output
    assert "5 structures failed" in r.output
    doc = json.loads(out.read_text())
    got = doc["predictions"]
    assert len(got) == 3 and all(g["mixing_energy"] >= cut for g in got)
    assert [g["mixing_energy_std"] for g in got] == sorted((g["mixing_energy_std"] for g in got), reverse=True)
    assert len(got[0]["atom_energy"]) == got[0]["n_atoms"]
    frames = read(xyz, index=":", format="extxyz")
    assert len(frames) == 3  # --top applies to every output: the same 3 structures, with per-atom arrays
    assert [f.info["id"] for f in frames] == [g["id"] for g in got]
    assert all("atom_energy" in f.arrays and "atom_energy_std" in f.arrays for f in frames)

    r = runner.invoke(app, ["predict", models, str(inputs), "--out", str(tmp_path / "x.csv"), "--where", "gap>1"])
    assert r.exit_code == 2 and "not a column" in r.output
    r = runner.invoke(app, ["predict", "no-such-model", str(inputs)])
    assert r.exit_code == 2 and "no model of that name" in r.output


def test_the_public_predict_answers_atoms_structures_and_files_in_order(tmp_path):
    """``matgnn.predict``: one dict per structure in the order given, ids kept (repeated ones too), an unusable
    structure says why and holds no value, and a file's answer equals ``matgnn predict``'s."""
    import csv

    from ase.build import bulk
    from ase.io import write

    import matgnn
    from tests.userdata import cli

    si = bulk("Si", "diamond", a=5.43)
    si.info["id"] = "same"
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    nacl.info["id"] = "same"
    write(tmp_path / "cu.cif", bulk("Cu", "fcc", a=3.6))
    rows = matgnn.predict("bandgap-2d", [si, bulk("Cu", "fcc", a=0.5), tmp_path / "cu.cif", nacl])
    assert [r["id"] for r in rows] == ["same", "atoms[1]", "cu", "same"]
    assert rows[1]["skipped"].startswith("overlapping_atoms") and "optb88vdw_bandgap" not in rows[1]
    assert all(isinstance(rows[k]["optb88vdw_bandgap"], float) for k in (0, 2, 3))
    assert si.info["id"] == "same"
    assert cli("predict", "bandgap-2d", str(tmp_path / "cu.cif"), "--out", str(tmp_path / "p.csv")).returncode == 0
    (row,) = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert float(row["optb88vdw_bandgap"]) == pytest.approx(rows[2]["optb88vdw_bandgap"], abs=1e-5)
    with pytest.raises(TypeError, match=r"structures\[0\]"):
        matgnn.predict("bandgap-2d", [42])
