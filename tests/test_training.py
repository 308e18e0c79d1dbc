"""Splits, exact resume after an interruption, evaluate and predict from a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import write
from typer.testing import CliRunner

from matgnn.cli.main import app
from matgnn.config import RunConfig
from matgnn.training import splits
from matgnn.training.run import train

from .conftest import shared_path

runner = CliRunner()


def test_split_kinds_partition_and_respect_groups():
    for part in (splits.random_split(100, 0.7, 0.1, 1), splits.kfold_split(100, 5, 2, 0.1, 1)):
        allidx = part["train"] + part["val"] + part["test"]
        assert sorted(allidx) == list(range(100))
    folds = [set(splits.kfold_split(103, 5, k, 0.1, 3)["test"]) for k in range(5)]
    assert set().union(*folds) == set(range(103)) and sum(map(len, folds)) == 103
    groups = [f"f{k % 17}" for k in range(200)]
    g = splits.grouped_split(groups, 0.8, 0.1, 0)
    seen = {k: {groups[i] for i in v} for k, v in g.items()}
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["val"]) and not (seen["val"] & seen["test"])
    sizes = [1] * 150 + [2] * 20 + [5] * 6  # 220 entries in 176 groups
    groups = [g for g, n in enumerate(sizes) for _ in range(n)]
    tests = []
    for k in range(5):
        gk = splits.grouped_kfold_split(groups, 5, k, 0.1, 7)
        assert sorted(gk["train"] + gk["val"] + gk["test"]) == list(range(220))
        seen = {s: {groups[i] for i in v} for s, v in gk.items()}
        assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["val"]) and not (seen["val"] & seen["test"])
        assert len(gk["test"]) == 44 and 20 <= len(gk["val"]) <= 26
        tests.append(set(gk["test"]))
    assert set().union(*tests) == set(range(220))
    assert splits.grouped_kfold_split(groups, 5, 2, 0.1, 7) == splits.grouped_kfold_split(groups, 5, 2, 0.1, 7)
    with pytest.raises(ValueError, match="3 groups cannot make 5 folds"):
        splits.grouped_kfold_split(["a", "b", "c", "a"], 5, 0, 0.1, 0)
    vals = np.r_[np.random.default_rng(0).normal(size=300), [np.nan] * 10]
    st = splits.stratified_split(vals, 0.8, 0.1, 0, bins=5)
    assert sorted(st["train"] + st["val"] + st["test"]) == list(range(310))
    test_vals = vals[st["test"]]
    assert np.nanmin(test_vals) < -0.8 and np.nanmax(test_vals) > 0.8  # covers the range


def test_leaderboard_split_file():
    path = shared_path("jarvis_leaderboard", "dft_3d_exfoliation_energy.json.zip")
    ids = splits.read_id_split(path)
    assert ids["train"] and ids["test"] and all(i.startswith("JVASP-") for i in ids["test"])
    part, missing = splits.ids_split(ids["test"][:3] + ["other"], ids)
    assert len(part["test"]) == 3 and missing["train"] == len(ids["train"])


def _cfg(tmp_path: Path, **train) -> RunConfig:
    return RunConfig.model_validate({
        "source": {"kind": "emt", "n_structures": 48},
        "graphs": {"cutoff": 5.0},
        "targets": [{"name": "mixing_energy"}, {"name": "atom_energy", "level": "node", "weight": 0.3}],
        "model": {"hidden": 16, "layers": 2, "head_hidden": 16, "dropout": 0.1},
        "train": {"epochs": 4, "batch_size": 8, "patience": 10, "threads": 1, "checkpoint_every": 0, **train},
        "split": {"kind": "kfold", "folds": 4, "fold": 1},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
    })


@pytest.mark.parametrize("scheduler", ["plateau", "onecycle"])
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, scheduler):
    class Killed(Exception):
        pass

    def kill_after_2(trainer):
        if trainer.epoch == 2:
            raise Killed

    full = train(_cfg(tmp_path / "a", scheduler=scheduler), progress=False)
    cfg_b = _cfg(tmp_path / "b", scheduler=scheduler)
    with pytest.raises(Killed):
        train(cfg_b, progress=False, on_epoch_end=kill_after_2)
    (run_b,) = list((tmp_path / "b" / "runs").iterdir())
    assert not (run_b / "metrics.json").exists()
    r = runner.invoke(app, ["train", "--resume", str(run_b)])
    assert r.exit_code == 0, r.output
    assert "continuing after epoch 2" in r.output
    wa = torch.load(full / "checkpoint_last.pt", weights_only=False)
    wb = torch.load(run_b / "checkpoint_last.pt", weights_only=False)
    assert wa["epoch"] == wb["epoch"] == 4
    for k in wa["model"]:
        torch.testing.assert_close(wa["model"][k], wb["model"][k], rtol=0, atol=0)
    assert [h["val_loss"] for h in wa["history"]] == [h["val_loss"] for h in wb["history"]]
    ma = json.loads((full / "metrics.json").read_text())
    mb = json.loads((run_b / "metrics.json").read_text())
    assert ma["test.mixing_energy.mae"] == mb["test.mixing_energy.mae"]


def test_cpu_runs_are_reproducible(tmp_path):
    a = train(_cfg(tmp_path / "a"), progress=False)
    b = train(_cfg(tmp_path / "b"), progress=False)
    assert (a / "predictions_test.csv").read_text() == (b / "predictions_test.csv").read_text()


def test_evaluate_and_predict_from_a_run_folder(tmp_path):
    run = train(_cfg(tmp_path, epochs=2), progress=False)
    assert (run / "per_element_mixing_energy.csv").read_text().startswith("element,z,count,mae")
    r = runner.invoke(app, ["evaluate", str(run)])
    assert r.exit_code == 0, r.output
    ev = json.loads((run / "evaluation" / "metrics_test.json").read_text())
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["device"].startswith("cpu (")  # where it trained, for its model card
    assert ev["test.mixing_energy.mae"] == pytest.approx(saved["test.mixing_energy.mae"], rel=1e-6)

    folder = tmp_path / "new"
    folder.mkdir()
    write(folder / "cu.cif", bulk("Cu", "fcc", a=3.6, cubic=True))
    write(folder / "POSCAR", bulk("Ni", "fcc", a=3.52), format="vasp")
    (folder / "junk.cif").write_text("not a cif")
    out = tmp_path / "pred.csv"
    r = runner.invoke(app, ["predict", str(run), str(folder), "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = out.read_text().splitlines()
    assert rows[0] == "id,mixing_energy,n_atoms,formula,unseen_elements" and len(rows) == 3
    atoms = (tmp_path / "pred_atoms.csv").read_text().splitlines()
    assert atoms[0] == "id,atom,z,atom_energy,unseen_element" and len(atoms) == 1 + 4 + 1
    assert "junk" in (tmp_path / "pred_skipped.csv").read_text()


def test_tensorboard_and_history_written_every_epoch(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class Stop(Exception):
        pass

    def stop_after_3(trainer):
        if trainer.epoch == 3:
            raise Stop

    with pytest.raises(Stop):
        train(_cfg(tmp_path, epochs=6), progress=False, on_epoch_end=stop_after_3)
    (run,) = list((tmp_path / "runs").iterdir())
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val_loss")] == [1, 2, 3]


def test_time_budget_from_the_cli_stops_training_and_scores_the_best_weights(tmp_path):
    """``train.max_minutes``: a budget of 0.6 ms fits the first epoch only; the run still ends with
    its metrics, says why it stopped, and records the epochs run. ``train.amp`` on CPU: a warning."""
    from .userdata import cif_folder, ok, run, run_yaml

    data = cif_folder(tmp_path / "data")
    cfg = run_yaml(tmp_path / "run.yaml", f"{{kind: folder, path: {data}}}", tmp_path / "runs", epochs=30)
    r = ok(run("train", str(cfg), "--set", "train.max_minutes=0.00001", "--set", "train.scheduler=onecycle",
               "--set", "train.amp=true"))
    assert "time budget: stopped after epoch 1 of 30" in r.out
    # bf16 autocast is GPU-only: on CPU the run says so once and trains in fp32
    assert "train.amp ignored: on CPU" in r.out and "(bf16 autocast)" not in r.out
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    m = json.loads((folder / "metrics.json").read_text())
    assert m["epochs_run"] == 1 and np.isfinite(m["test.lattice.mae"])


def test_time_budget_schedule_shapes_and_replanning():
    from matgnn.training.trainer import cosine_factor, onecycle_factor

    assert onecycle_factor(0.0) == pytest.approx(1 / 25) and onecycle_factor(0.3) == pytest.approx(1.0)
    assert onecycle_factor(1.0) == pytest.approx(1 / 25e4) and onecycle_factor(2.0) == pytest.approx(1 / 25e4)
    assert cosine_factor(0.0) == 1.0 and cosine_factor(0.5) == pytest.approx(0.5) and cosine_factor(1.0) == 0.0
    # the schedule is planned over the epochs that fit: with 10 s epochs, 1 minute holds 6 of 100
    from matgnn.config import TrainConfig
    from matgnn.training.trainer import Trainer

    cfg = TrainConfig(epochs=100, max_minutes=1.0, scheduler="onecycle")
    t = Trainer.__new__(Trainer)
    t.cfg, t.device, t.epoch = cfg, torch.device("cpu"), 2
    t.history = [{"seconds": 10.0}, {"seconds": 10.0}]
    assert t.epochs_in_budget() == 6
    t.history = [{"seconds": 100.0}] * 2
    assert t.epochs_in_budget() == 2  # never fewer than the epochs run


def test_history_of_a_run_resumed_from_an_older_version_keeps_every_column(tmp_path):
    """A checkpoint written before ``train_pass_seconds`` existed: its rows lack the column, the new rows have it."""
    import csv

    from matgnn.training.checkpoints import write_history

    rows = [{"epoch": 1, "train_loss": 0.5, "seconds": 2.0},
            {"epoch": 2, "train_loss": 0.4, "seconds": 2.1, "train_pass_seconds": 1.9}]
    write_history(rows, tmp_path / "history.csv")
    read = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [r["train_pass_seconds"] for r in read] == ["", "1.9"] and read[1]["seconds"] == "2.1"


def test_each_family_trains_at_its_own_default_learning_rate(tmp_path):
    """``train.lr`` unset: the family's learning rate (the task suite chose 2e-3 for SchNet, 1e-3 for the rest), also
    when the family is switched by an override after the config was written, and the run folder saves the value
    used; a set ``train.lr`` wins, and a run that starts from a saved model takes the base value."""
    import csv

    import yaml

    from matgnn.models import MODELS
    from matgnn.models.base import MatgnnModel

    base = _cfg(tmp_path, epochs=1)
    assert base.train.lr is None and base.learning_rate() == MatgnnModel.default_lr == 1e-3
    assert {n for n, c in MODELS.items() if c.default_lr != 1e-3} == {"schnet"}
    schnet = RunConfig.model_validate(base.model_dump(mode="json")).with_overrides(["model.name=schnet"])
    assert schnet.learning_rate() == 2e-3
    assert schnet.with_overrides(["train.lr=5e-4"]).learning_rate() == 5e-4
    assert schnet.with_overrides(["transfer.from_model=elsewhere"]).learning_rate() == 1e-3
    run = train(schnet, progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 2e-3
    (first,) = csv.DictReader(open(run / "history.csv"))
    assert float(first["lr"]) == pytest.approx(2e-3)
