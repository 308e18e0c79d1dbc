"""Grid and Optuna sweeps ranked in one table; a cutoff sweep builds each cutoff's graphs once."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from matgnn.cli.main import app
from matgnn.commands.sweep import parse_grid, parse_space, run_sweep
from matgnn.config import RunConfig

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


def test_cutoff_sweep_trains_and_tests_every_point_on_the_same_structures(tmp_path):
    """At 3 Å the simple-cubic frames (nearest neighbour 3.4 Å) have isolated atoms and are
    skipped; at 4 Å they are valid. Both cutoffs must still use one split, over the structures
    valid at both, and the sweep must list what 3 Å loses."""
    import json

    import numpy as np
    from ase.build import bulk
    from ase.io import write

    rng = np.random.default_rng(0)
    frames = []
    for k in range(36):
        a = bulk("Cu", "fcc", a=3.61 + 0.05 * rng.random(), cubic=True) if k % 4 else bulk("Po", "sc", a=3.4) * (2, 1, 1)
        a.info["y"] = float(rng.random())
        frames.append(a)
    write(tmp_path / "mixed.extxyz", frames, format="extxyz")
    cfg = RunConfig.model_validate({
        "source": {"kind": "ase", "path": str(tmp_path / "mixed.extxyz"), "graph_targets": ["y"]},
        "graphs": {"cutoff": 4.0}, "targets": [{"name": "y"}], "split": {"kind": "random", "seed": 3},
        "model": {"hidden": 8, "layers": 1, "head_hidden": 8},
        "train": {"epochs": 1, "batch_size": 8, "threads": 1, "tensorboard": False},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})
    folder = run_sweep(cfg, grid={"graphs.cutoff": [3.0, 4.0]}, out=tmp_path / "sweep", progress=False)
    shared = json.loads((folder / "shared_split.json").read_text())
    assert sum(len(shared[k]) for k in ("train", "val", "test")) == 27  # the 9 Po frames are valid only at 4 Å
    lost = shared["left_out_per_graph_setting"]
    assert sorted(len(v) for v in lost.values()) == [0, 9]
    rows = list(csv.DictReader(open(folder / "ranking.csv")))
    assert len(rows) == 2 and all(r["selection_metric"] for r in rows)
    splits = [json.loads(next((folder / "runs").glob(f"{r['run']}*")).joinpath("split.json").read_text()) for r in rows]
    assert all(s[k] == shared[k] for s in splits for k in ("train", "val", "test"))
    assert {r["n_test"] for r in rows} == {str(len(shared["test"]))}


def test_resumed_grid_sweep_keeps_finished_points(tmp_path):
    cfg = _cfg(tmp_path)
    folder = run_sweep(cfg, grid={"model.name": ["cgcnn", "schnet"]}, out=tmp_path / "sw", progress=False)
    first = list(csv.DictReader(open(folder / "ranking.csv")))
    killed = next((folder / "runs").glob("point001-*"))
    (killed / "metrics.json").unlink()  # as if the sweep had been stopped during point 1
    run_sweep(cfg, grid={"model.name": ["cgcnn", "schnet"]}, out=folder, progress=False, resume=True)
    again = list(csv.DictReader(open(folder / "ranking.csv")))
    assert len(list((folder / "runs").glob("point000-*"))) == 1  # kept, not rerun
    assert len(list((folder / "runs").glob("point001-*"))) == 2  # rerun
    kept = next(r for r in first if r["run"].startswith("point000"))
    row = next(r for r in again if r["run"].startswith("point000"))
    assert {k: v for k, v in row.items() if k != "rank"} == {k: v for k, v in kept.items() if k != "rank"}
    assert {r["run"] for r in again} >= {kept["run"]} and len(again) == 2
    with pytest.raises(ValueError, match="resume"):
        run_sweep(cfg, grid={"model.name": ["cgcnn"]}, progress=False, resume=True)
