"""DFT warm starts from predicted moments: MAGMOM line round trip in POSCAR order, extxyz
initial moments, GPAW script."""

from __future__ import annotations

import csv

import numpy as np
from ase.build import bulk
from ase.io import read, write
from typer.testing import CliRunner

from matgnn.cli.main import app
from matgnn.config import RunConfig
from matgnn.prediction.warmstart import (
    magmom_incar_line,
    parse_magmom_line,
    start_moments,
)
from matgnn.training.run import train

runner = CliRunner()


def test_magmom_line_compresses_runs_and_parses_back():
    m = [0.01, 0.0, 2.314, 2.31, 2.31, 0.7, 0.0]
    line = magmom_incar_line(m)
    assert line == "MAGMOM = 2*0 3*2.31 1*0.7 1*0"
    np.testing.assert_array_equal(parse_magmom_line(line), start_moments(m))
    afm = start_moments([2.0, 2.0, 0.0], signs=[1, -1, 1])
    assert list(afm) == [2.0, -2.0, 0.0]


def test_predict_writes_warm_starts_in_poscar_order(tmp_path):
    cfg = RunConfig.model_validate({
        "source": {"kind": "emt", "n_structures": 30}, "graphs": {"cutoff": 5.0},
        "targets": [{"name": "atom_energy", "level": "node"}],
        "model": {"hidden": 8, "layers": 1, "head_hidden": 8},
        "train": {"epochs": 1, "batch_size": 8, "threads": 1},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})
    run = train(cfg, progress=False)
    folder = tmp_path / "in"
    folder.mkdir()
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.symbols[1] = "Ni"  # POSCAR order: Cu Ni Cu Cu
    write(folder / "POSCAR", a, format="vasp")
    out = tmp_path / "pred.csv"
    r = runner.invoke(app, ["predict", str(run), str(folder), "--out", str(out), "--magmom-export", str(tmp_path / "dft")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "pred_atoms.csv")))
    pred = [float(x["atom_energy"]) for x in rows]
    (magmom,) = list((tmp_path / "dft").glob("*.MAGMOM"))
    np.testing.assert_allclose(parse_magmom_line(magmom.read_text()), start_moments(pred))
    back = read(next((tmp_path / "dft").glob("*.extxyz")), format="extxyz")
    assert list(back.symbols) == ["Cu", "Ni", "Cu", "Cu"]
    np.testing.assert_allclose(back.get_initial_magnetic_moments(), start_moments(pred))
    script = next((tmp_path / "dft").glob("*_gpaw.py")).read_text()
    assert "spinpol=True" in script and "set_initial_magnetic_moments" in script
    compile(script, "gpaw.py", "exec")
