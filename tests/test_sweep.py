"""Grid and Optuna sweeps ranked in one table; a cutoff sweep builds each cutoff's graphs once."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from matgnn.cli.main import app
from matgnn.config import RunConfig
from matgnn.training.sweep import parse_grid, parse_space, run_sweep

runner = CliRunner()


def _cfg(tmp_path):
    return RunConfig.model_validate({
        "source": {"kind": "emt", "n_structures": 40}, "graphs": {"cutoff": 5.0},
        "targets": [{"name": "mixing_energy"}], "model": {"hidden": 8, "layers": 1, "head_hidden": 8},
        "train": {"epochs": 2, "batch_size": 8, "threads": 1, "tensorboard": False},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})


def test_grid_sweep_ranks_every_point_and_reuses_graphs_per_cutoff(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    _cfg(tmp_path).to_yaml(cfg_path)
    r = runner.invoke(app, ["sweep", str(cfg_path), "--grid", "model.name=cgcnn,schnet", "--grid", "graphs.cutoff=4,5"])
    assert r.exit_code == 0, r.output
    (folder,) = (tmp_path / "runs").iterdir()
    rows = list(csv.DictReader(open(folder / "ranking.csv")))
    assert len(rows) == 4 and {x["model"] for x in rows} == {"cgcnn", "schnet"}
    vals = [float(x["selection_metric"]) for x in rows]
    assert vals == sorted(vals) and [x["rank"] for x in rows] == ["1", "2", "3", "4"]
    for col in ("cutoff", "test.mixing_energy.mae", "test.mixing_energy.rmse", "test.mixing_energy.r2",
                "parameters", "train_seconds"):
        assert col in rows[0]
    assert (folder / "ranking.md").read_text().startswith("| rank |")
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one graph cache per cutoff, shared by both models


def test_optuna_sweep_and_bad_input(tmp_path):
    pytest.importorskip("optuna")
    space = parse_space(["train.lr=loguniform:1e-4:1e-2", "model.hidden=int:4:16", "model.name=choice:cgcnn,schnet"])
    folder = run_sweep(_cfg(tmp_path), space=space, trials=3, progress=False)
    rows = list(csv.DictReader(open(folder / "ranking.csv")))
    assert len(rows) == 3 and all(1e-4 <= float(x["train.lr"]) <= 1e-2 for x in rows)
    with pytest.raises(ValueError, match="KIND"):
        parse_space(["train.lr=normal:0:1"])
    with pytest.raises(ValueError, match="key=v1"):
        parse_grid(["graphs.cutoff"])
    with pytest.raises(ValueError, match="validation metric"):
        run_sweep(_cfg(tmp_path), grid={"train.lr": [1e-3]}, metric="test.mixing_energy.mae")
