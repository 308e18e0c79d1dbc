"""`model: {name: chgnet_ft}`: CHGNet 0.3.0 itself fine-tuned with our heads, the way users run it:
`matgnn train` on a CIF folder, frozen backbone groups kept at the wheel's weights, the rest trained,
predict from the run folder, layer groups for freeze policies, and a structure CHGNet cannot make a
graph of named in a one-line error."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from tests.userdata import cif_folder, ok, run, run_yaml, runs_in, user_error, with_model

pytest.importorskip("chgnet", reason="model 'chgnet_ft' needs the chgnet package (pip install 'matgnn[foundation]')")


def test_chgnet_finetune_trains_the_backbone_except_frozen_groups(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    cfg = with_model(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=3),
                     "{name: chgnet_ft, hidden: 16, layers: 2, freeze: [embedding, conv_0]}")
    ok(run("train", str(cfg)))
    (run_dir,) = runs_in(tmp_path / "runs")
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["class"] == "CHGNetFineTune" and info["init_args"]["freeze"] == ["embedding", "conv_0"]
    assert np.isfinite(json.loads((run_dir / "metrics.json").read_text())["test.lattice.mae"])

    from chgnet.model import CHGNet

    from matgnn.models import load_model

    model = load_model(run_dir)
    groups = model.layer_groups()
    assert {"embedding", "conv_0", "conv_3", "backbone_readout", "readout", "head"} <= set(groups)
    wheel = CHGNet.load(model_name="0.3.0", verbose=False).state_dict()
    trained = model.state_dict()
    for group, changed in (("embedding", False), ("conv_0", False), ("backbone_readout", False), ("conv_3", True)):
        diffs = [float((trained[n] - wheel[n[len("chgnet."):]]).abs().max()) for n in groups[group]]
        assert (max(diffs) > 0) == changed, group
    out = tmp_path / "p.csv"
    ok(run("predict", str(run_dir), str(folder), "--out", str(out)))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and all(np.isfinite(float(r["lattice"])) for r in rows)
    assert torch.isfinite(torch.tensor([float(r["lattice"]) for r in rows])).all()

    new = tmp_path / "new"
    new.mkdir()
    write(new / "lonely.cif", Atoms("Cu", positions=[[0, 0, 0]], cell=[7, 7, 7], pbc=True))
    r = run("predict", str(run_dir), str(new), "--out", str(tmp_path / "q.csv"))
    user_error(r, "lonely", "CHGNet")


def test_chgnet_finetune_refuses_an_unknown_frozen_group(tmp_path):
    folder = cif_folder(tmp_path / "cifs", n=6)
    cfg = with_model(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs"),
                     "{name: chgnet_ft, freeze: [conv_9]}")
    user_error(run("train", str(cfg)), "conv_9")
