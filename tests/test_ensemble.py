"""Ensembles: members, mean and σ, calibration metrics and recalibration; bootstrap members."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from matgnn.cli.main import app
from matgnn.commands.report import build_report
from matgnn.config import RunConfig
from matgnn.evaluation.uncertainty import (
    calibration_metrics,
    miscalibration_area,
    recalibration_factor,
)

runner = CliRunner()


def test_calibration_metrics_on_known_distributions():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.1, 2.0, 20000)
    err = rng.normal(0, sigma)
    m = calibration_metrics(err, sigma)
    assert m["miscalibration_area"] < 0.01 and m["mean_squared_z"] == pytest.approx(1.0, abs=0.05)
    assert m["spearman_sigma_abs_error"] > 0.4
    assert miscalibration_area(err, sigma / 3) > 0.2  # overconfident by 3×
    assert recalibration_factor(err, sigma / 3) == pytest.approx(3.0, rel=0.05)


def test_ensemble_cli_writes_members_predictions_with_sigma_and_calibration(tmp_path):
    cfg = RunConfig.model_validate({
        "source": {"kind": "emt", "n_structures": 80}, "graphs": {"cutoff": 5.0},
        "targets": [{"name": "mixing_energy"}, {"name": "atom_energy", "level": "node"}],
        "model": {"hidden": 16, "layers": 2, "head_hidden": 16},
        "train": {"epochs": 3, "batch_size": 8, "threads": 1, "tensorboard": False},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    r = runner.invoke(app, ["ensemble", str(path), "--members", "3", "--bootstrap"])
    assert r.exit_code == 0, r.output
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("ensemble-")]
    assert len(list((folder / "members").iterdir())) == 3
    m = json.loads((folder / "metrics.json").read_text())
    for h in ("mixing_energy", "atom_energy"):
        for key in ("mae", "best_member_mae", "miscalibration_area", "mean_squared_z", "spearman_sigma_abs_error",
                    "recalibration_factor", "recalibrated.miscalibration_area"):
            assert f"test.{h}.{key}" in m, (h, key)
        assert f"members.test.{h}.mae.std" in m
    rows = list(csv.DictReader(open(folder / "predictions_test.csv")))
    assert rows and float(rows[0]["mixing_energy_std"]) >= 0
    atoms = list(csv.DictReader(open(folder / "predictions_test_atoms.csv")))
    assert atoms and "atom_energy_std" in atoms[0]
    assert (folder / "calibration_mixing_energy.png").is_file()
    # bootstrap members trained on different resamples
    logs = [json.loads((p / "split.json").read_text()) for p in (folder / "members").iterdir()]
    assert len({tuple(s["train"]) for s in logs}) == 1  # split.json keeps the base split ...
    cfgs = [(p / "config.yaml").read_text() for p in (folder / "members").iterdir()]
    assert len({c.split("bootstrap:")[1].split()[0] for c in cfgs}) == 3  # ... and each member its own resample
    html = build_report(folder).read_text()
    assert "miscalibration area" in html and "recalibrated σ" in html
    # the folder predicts new structures: the members' mean, σ recalibrated as fitted on validation
    from ase.build import bulk
    from ase.io import write

    from matgnn.artifacts import ensemble_members
    from matgnn.models.calibration import Recalibration
    from matgnn.prediction.predict import (
        Predictor,
        predict_structures,
        read_structures,
        structure_files,
    )

    members, saved = ensemble_members(folder)
    recal = {h: Recalibration.from_dict(v) for h, v in saved.items()}
    assert len(members) == 3 and set(recal) == {"mixing_energy", "atom_energy"}
    assert 1 <= m["test.mixing_energy.recalibration_bins"] == len(recal["mixing_energy"].params)
    (tmp_path / "in").mkdir()
    for k, (el, a) in enumerate([("Cu", 3.6), ("Ni", 3.52), ("Pd", 3.89)]):
        write(tmp_path / "in" / f"s{k}.cif", bulk(el, "fcc", a=a, cubic=True))
    structures = list(read_structures(structure_files([tmp_path / "in"])))
    from_folder, from_members = Predictor([folder]), Predictor(members)
    a = list(predict_structures(from_folder, structures, from_folder.settings))
    b = list(predict_structures(from_members, structures, from_members.settings))
    for ra, rb in zip(a, b):
        assert ra["mixing_energy"] == pytest.approx(rb["mixing_energy"], abs=1e-6)
        want = recal["mixing_energy"](np.array([rb["mixing_energy_std"]]), np.array([rb["mixing_energy"]]))[0]
        assert ra["mixing_energy_std"] == pytest.approx(want, rel=1e-5)
        np.testing.assert_allclose(ra["atom_energy_std"],
                                   recal["atom_energy"](np.asarray(rb["atom_energy_std"]), np.asarray(rb["atom_energy"])),
                                   rtol=1e-5)


def test_two_parameter_recalibration_recovers_scale_and_floor():
    from matgnn.evaluation.uncertainty import fit_recalibration, recalibrate

    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.05, 1.0, 20000)
    err = rng.normal(0, np.sqrt((2 * sigma) ** 2 + 0.3**2))
    s, floor = fit_recalibration(err, sigma)
    assert s == pytest.approx(2.0, rel=0.05) and floor == pytest.approx(0.3, rel=0.15)
    assert miscalibration_area(err, recalibrate(sigma, (s, floor))) < 0.01


def test_binned_recalibration_calibrates_errors_that_depend_on_the_prediction():
    from matgnn.evaluation.uncertainty import (
        Recalibration,
        fit_binned_recalibration,
        fit_recalibration,
        recalibrate,
    )

    rng = np.random.default_rng(2)

    def draw(n):  # small predictions are 20x more confident than the spread says, large ones 3x less
        pred = rng.uniform(0, 3, n)
        sigma = rng.uniform(0.05, 0.5, n)
        err = rng.normal(0, np.where(pred < 1.5, 0.05, 3.0) * sigma)
        return err, sigma, pred

    (ev, sv, pv), (et, st, pt) = draw(20000), draw(20000)
    one = miscalibration_area(et, recalibrate(st, fit_recalibration(ev, sv)))
    rec = fit_binned_recalibration(ev, sv, pv, bins=4)
    assert len(rec.params) == 4
    binned = miscalibration_area(et, rec(st, pt))
    assert one > 0.1 and binned < 0.02, (one, binned)
    again = Recalibration.from_dict(json.loads(json.dumps(rec.to_dict())))
    np.testing.assert_allclose(again(st, pt), rec(st, pt))
    assert Recalibration.from_dict([2.0, 0.1])(np.array([1.0]))[0] == pytest.approx(np.sqrt(4.01))
    # few validation points: fewer bins, each with min_count points; many tied predictions merge bins
    assert len(fit_binned_recalibration(ev[:70], sv[:70], pv[:70], bins=4, min_count=30).params) <= 2
    tied = fit_binned_recalibration(ev[:400], sv[:400], np.r_[np.zeros(390), np.ones(10)], bins=4, min_count=30)
    assert len(tied.params) == 1


def test_combined_ensemble_of_different_architectures(tmp_path):
    """`matgnn ensemble --combine RUN --combine RUN --out F`: runs trained already (here a CGCNN and
    a SchNet on one split) become an ensemble folder — mean prediction, σ, per-atom metrics with
    the exclusion set — which `matgnn predict` uses like a trained ensemble."""
    from ase.build import bulk
    from ase.io import write

    from matgnn.training.run import train

    def cfg(name, model, seed=42):
        return RunConfig.model_validate({
            "source": {"kind": "emt", "n_structures": 60}, "graphs": {"cutoff": 5.0},
            "targets": [{"name": "atom_energy", "level": "node"}],
            "model": {"name": model, "hidden": 8, "layers": 1, "head_hidden": 8},
            "train": {"epochs": 2, "batch_size": 8, "threads": 1, "tensorboard": False},
            "split": {"seed": seed}, "evaluation": {"exclude_elements": ["Cu"]},
            "output_dir": str(tmp_path / "runs"), "name": name, "cache_dir": str(tmp_path / "cache")})

    a, b = train(cfg("a", "cgcnn"), progress=False), train(cfg("b", "schnet"), progress=False)
    out = tmp_path / "ens"
    r = runner.invoke(app, ["ensemble", "--combine", str(a), "--combine", str(b), "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    pa, pb, pe = (list(csv.DictReader(open(f / "predictions_test_atoms.csv"))) for f in (a, b, out))
    mean = np.array([(float(x["atom_energy_pred"]) + float(y["atom_energy_pred"])) / 2 for x, y in zip(pa, pb)])
    assert np.allclose([float(r["atom_energy_pred"]) for r in pe], mean, atol=1e-4)
    true = np.array([float(r["atom_energy_true"]) for r in pe])
    assert m["test.atom_energy.mae"] == pytest.approx(np.abs(mean - true).mean(), rel=1e-3)
    no_cu = np.array([r["z"] != "29" for r in pe])
    assert m["test.atom_energy.without_Cu.mae"] == pytest.approx(np.abs(mean - true)[no_cu].mean(), rel=1e-3)
    assert json.loads((out / "ensemble.json").read_text())["members"] == ["../runs/" + a.name, "../runs/" + b.name]

    write(tmp_path / "ni.cif", bulk("Ni", "fcc", a=3.52))
    r = runner.invoke(app, ["predict", str(out), str(tmp_path / "ni.cif"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    assert "atom_energy_std" in (tmp_path / "p_atoms.csv").read_text().splitlines()[0]

    c = train(cfg("c", "cgcnn", seed=7), progress=False)  # another split: refused
    r = runner.invoke(app, ["ensemble", "--combine", str(a), "--combine", str(c), "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "split differs" in r.output
    r = runner.invoke(app, ["ensemble", "--combine", str(a), "--combine", str(b)])
    assert r.exit_code == 2 and "--out" in r.output


def test_an_ensemble_is_one_model_that_saves_loads_and_travels_alone(tmp_path):
    """`load_model(ENSEMBLE_FOLDER)` is one EnsembleModel (mean and σ of its members); the folder's
    model/ holds the same ensemble as an ordinary model folder (nested member specs + all weights),
    so a `--combine` folder mailed without the runs it points at still predicts, with σ."""
    import shutil

    import torch
    from ase.build import bulk
    from ase.io import write

    from matgnn.models import load_model
    from matgnn.models.ensemble import EnsembleModel
    from matgnn.training.run import train

    def cfg(name, model):
        return RunConfig.model_validate({
            "source": {"kind": "emt", "n_structures": 50}, "graphs": {"cutoff": 5.0},
            "targets": [{"name": "mixing_energy"}],
            "model": {"name": model, "hidden": 8, "layers": 1, "head_hidden": 8},
            "train": {"epochs": 2, "batch_size": 8, "threads": 1, "tensorboard": False},
            "output_dir": str(tmp_path / "runs"), "name": name, "cache_dir": str(tmp_path / "cache")})

    a, b = train(cfg("a", "cgcnn"), progress=False), train(cfg("b", "schnet"), progress=False)
    out = tmp_path / "ens"
    assert runner.invoke(app, ["ensemble", "--combine", str(a), "--combine", str(b), "--out", str(out)]).exit_code == 0
    whole = load_model(out)
    assert isinstance(whole, EnsembleModel) and len(whole.members) == 2
    saved = json.loads((out / "model" / "model.json").read_text())
    assert saved["class"] == "EnsembleModel" and [m["class"] for m in saved["init_args"]["members"]] == ["CGCNN", "SchNet"]
    again = load_model(out / "model")
    for x, y in zip(whole.state_dict().values(), again.state_dict().values()):
        assert torch.equal(x, y)

    write(tmp_path / "cu.cif", bulk("Cu", "fcc", a=3.6))
    here = tmp_path / "p1.csv"
    assert runner.invoke(app, ["predict", str(out), str(tmp_path / "cu.cif"), "--out", str(here)]).exit_code == 0
    mailed = tmp_path / "inbox" / "ens"
    shutil.copytree(out, mailed)  # ensemble.json points at ../runs/..., which the recipient does not have
    there = tmp_path / "p2.csv"
    r = runner.invoke(app, ["predict", str(mailed), str(tmp_path / "cu.cif"), "--out", str(there)])
    assert r.exit_code == 0, r.output
    (r1,), (r2,) = csv.DictReader(open(here)), csv.DictReader(open(there))
    assert float(r1["mixing_energy"]) == pytest.approx(float(r2["mixing_energy"]), abs=1e-6)
    assert float(r1["mixing_energy_std"]) == pytest.approx(float(r2["mixing_energy_std"]), rel=1e-5)
    assert float(r2["mixing_energy_std"]) > 0
