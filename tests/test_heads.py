"""Multi-head training: per-element residual baselines for node heads, learned
uncertainty task weights, per-head validation metrics, one-hot (embedding) atom features."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from matgnn.config import RunConfig
from matgnn.models import build_model, load_model
from matgnn.training.run import element_means, train


def _cfg(tmp_path: Path, targets: list[dict], train_over: dict | None = None, model: dict | None = None) -> RunConfig:
    return RunConfig.model_validate({
        "source": {"kind": "emt", "n_structures": 40},
        "graphs": {"cutoff": 5.0},
        "targets": targets,
        "model": {"hidden": 16, "layers": 2, "head_hidden": 16, **(model or {})},
        "train": {"epochs": 3, "batch_size": 8, "patience": 10, "threads": 1, **(train_over or {})},
        "split": {"kind": "random", "train": 0.7, "val": 0.15, "seed": 3},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
    })


def test_element_means_ignore_missing_labels():
    labels = [{"m": np.array([1.0, 3.0, np.nan]), "z": np.array([26, 26, 8])},
              {"m": np.array([np.nan, 0.5]), "z": np.array([26, 8])}]
    table = element_means(labels, [0, 1], "m")
    assert table[26] == pytest.approx(2.0) and table[8] == pytest.approx(0.5)
    assert table[1] == pytest.approx(np.mean([1.0, 3.0, 0.5]))  # unseen element: overall mean


def test_element_baseline_is_stored_and_added_back(tmp_path):
    cfg = _cfg(tmp_path, [{"name": "atom_energy", "level": "node", "baseline": "element_mean"}])
    run = train(cfg, progress=False)
    model = load_model(run)
    split = json.loads((run / "split.json").read_text())
    # the stored table is the per-element mean of the training atoms' labels
    from matgnn.data.sources import make_source

    by_id = {s.id: s for s in make_source(cfg.source)}
    z = np.concatenate([by_id[i].numbers for i in split["train"]])
    y = np.concatenate([by_id[i].node_targets["atom_energy"] for i in split["train"]])
    for el in np.unique(z):
        assert float(model.targets[0].steps[0].element_reference[el]) == pytest.approx(y[z == el].mean(), rel=1e-5)
    # predictions of the reloaded model (baseline added back) equal the run's saved ones
    rows = list(csv.DictReader(open(run / "predictions_test_atoms.csv")))
    from matgnn.prediction.predict import graph_settings_of, predict_structures

    (pred,) = list(predict_structures(model, [by_id[rows[0]["id"]]], graph_settings_of(run)))
    first = [float(r["atom_energy_pred"]) for r in rows if r["id"] == rows[0]["id"]]
    np.testing.assert_allclose(pred["atom_energy"], first, rtol=1e-4, atol=1e-5)


def test_baseline_only_for_node_heads():
    with pytest.raises(ValueError, match="node-level"):
        RunConfig.model_validate({"targets": [{"name": "e", "level": "graph", "baseline": "element_mean"}]})


def test_uncertainty_weighting_learns_and_logs_task_weights(tmp_path):
    cfg = _cfg(tmp_path, [{"name": "mixing_energy"}, {"name": "atom_energy", "level": "node"}],
               {"task_weighting": "uncertainty", "lr": 0.05})
    run = train(cfg, progress=False)
    hist = list(csv.DictReader(open(run / "history.csv")))
    assert {"val_mae.mixing_energy", "val_mae.atom_energy", "task_weight.mixing_energy",
            "task_weight.atom_energy"} <= set(hist[0])
    w = [float(h["task_weight.atom_energy"]) for h in hist]
    assert all(np.isfinite(w)) and w[-1] != 1.0  # moved away from the initial exp(0)
    ckpt = torch.load(run / "checkpoint_last.pt", weights_only=False)
    assert ckpt["log_vars"].shape == (2,)


def test_onehot_atom_features_are_a_learned_embedding():
    m = build_model("zoo", [{"name": "y"}], operator="graphconv", cutoff=4.0, atom_features="onehot", hidden=8, layers=1, head_hidden=8, n_rbf=4)
    assert m.atom_features.dim == 100
    table = m.atom_features.table
    assert table[26].sum() == 1 and table[26, 25] == 1 and table[0].sum() == 0


def test_a_heads_units_are_saved_with_the_model_and_absent_when_not_named(tmp_path):
    """``units`` in the config's typed head reaches the model's head spec, its saved ``model.json`` and the reload;
    a head without units has no such key (so models saved before keep their exact specs)."""
    from matgnn.config import HeadConfig

    cfg = RunConfig.model_validate({"targets": [{"name": "gap", "units": "eV"}, {"name": "magmom", "level": "node"}]})
    assert cfg.targets[0].spec()["units"] == "eV" and "units" not in cfg.targets[1].spec()
    model = build_model("cgcnn", [h.spec() for h in cfg.targets], cutoff=5.0, hidden=8, layers=1)
    assert model.head_specs[0]["units"] == "eV" and "units" not in model.head_specs[1]
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "model.json").read_text())["init_args"]["heads"]
    assert saved[0]["units"] == "eV" and "units" not in saved[1]
    assert load_model(tmp_path / "m").head_specs == model.head_specs
    with pytest.raises(ValueError, match="units must be a string"):
        build_model("cgcnn", [{"name": "gap", "units": 3}], cutoff=5.0)
    assert HeadConfig(name="k").units is None
