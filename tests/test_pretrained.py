"""Shipped models: present, loadable by name, documented by a model card, usable from the CLI."""

from __future__ import annotations

import csv

import pytest
from ase.build import bulk
from ase.io import write
from typer.testing import CliRunner

from matgnn.cli.main import app
from matgnn.models import load_model
from matgnn.prediction.predict import Predictor
from matgnn.pretrained import available, is_ensemble, model_card, model_path

runner = CliRunner()
SHIPPED = {"magmom-mp": ("magmom", "node"), "magmom-mp-ensemble": ("magmom", "node"),
           "bandgap-2d": ("optb88vdw_bandgap", "graph")}


def test_the_shipped_models_are_there_with_complete_cards():
    assert set(SHIPPED) <= set(available())
    for name, (head, level) in SHIPPED.items():
        model = Predictor([name]) if is_ensemble(name) else load_model(model_path(name))
        assert [(s["name"], s["level"]) for s in model.head_specs] == [(head, level)]
        card = model_card(name)
        for section in ("## Data", "## Split", "## Metrics", "## Date", "## Licence", "## Citation"):
            assert section in card, (name, section)
        assert "test." in card  # held-out metrics quoted from the run
        size = sum(f.stat().st_size for f in model_path(name).rglob("*") if f.is_file())
        assert size < 5e6, f"{name} is {size / 1e6:.1f} MB; shipped models must stay small"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_predict_with_a_shipped_model_by_name(tmp_path, name):
    a = bulk("Fe", "bcc", a=2.87, cubic=True)
    write(tmp_path / "fe.cif", a)
    out = tmp_path / "p.csv"
    r = runner.invoke(app, ["predict", name, str(tmp_path / "fe.cif"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    head, level = SHIPPED[name]
    path = out.with_name("p_atoms.csv") if level == "node" else out
    rows = list(csv.DictReader(open(path)))
    assert rows and all(float(x[head]) == float(x[head]) for x in rows)  # finite numbers
    if name.startswith("magmom-mp"):
        assert 1.0 < float(rows[0][head]) < 3.5  # bcc Fe: ~2.2 μB
    if is_ensemble(name):  # the members' mean with a recalibrated σ
        assert all(float(x[head + "_std"]) > 0 for x in rows)


def test_models_command_lists_and_prints_cards():
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and all(n in r.output for n in SHIPPED)
    r = runner.invoke(app, ["models", "magmom-mp"])
    assert r.exit_code == 0 and "## Citation" in r.output
    r = runner.invoke(app, ["models", "nope"])
    assert r.exit_code == 2


def test_deployment_cost_of_a_shipped_ensemble_counts_every_member():
    from matgnn.prediction.deploy import deploy_cost

    ens = Predictor(["magmom-mp-ensemble"])
    cost = deploy_cost("magmom-mp-ensemble", n_atoms=8, batch=2, repeats=1)
    assert cost["parameters"] == sum(p.numel() for m in ens.members for p in m.parameters())
    assert cost["class"] == "CGCNN+PNA" and cost["cpu.batched_ms_per_structure"] > 0
