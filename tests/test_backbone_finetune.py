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

from tests.userdata import (
    anchored_drifts,
    cif_folder,
    cli,
    ok,
    run_yaml,
    runs_in,
    user_error,
    with_model,
)

pytest.importorskip("chgnet", reason="model 'chgnet_ft' needs the chgnet package (pip install 'matgnn[foundation]')")


def test_chgnet_finetune_trains_the_backbone_except_frozen_groups(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    cfg = with_model(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=3),
                     "{name: chgnet_ft, hidden: 16, layers: 2, freeze: [embedding, conv_0]}")
    ok(cli("train", str(cfg)))
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
    ok(cli("predict", str(run_dir), str(folder), "--out", str(out)))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and all(np.isfinite(float(r["lattice"])) for r in rows)
    assert torch.isfinite(torch.tensor([float(r["lattice"]) for r in rows])).all()

    new = tmp_path / "new"
    new.mkdir()
    write(new / "lonely.cif", Atoms("Cu", positions=[[0, 0, 0]], cell=[7, 7, 7], pbc=True))
    r = cli("predict", str(run_dir), str(new), "--out", str(tmp_path / "q.csv"))
    user_error(r, "lonely", "CHGNet")


def test_chgnet_finetune_refuses_an_unknown_frozen_group(tmp_path):
    folder = cif_folder(tmp_path / "cifs", n=6)
    cfg = with_model(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs"),
                     "{name: chgnet_ft, freeze: [conv_9]}")
    user_error(cli("train", str(cfg)), "conv_9")


def _energy_drift(model, wheel, graphs) -> float:
    """Mean |E| difference (eV/atom) between a fine-tuned model's CHGNet and the wheel's on CHGNet graphs."""
    tuned = model.chgnet
    was = tuned.training
    tuned.eval()
    try:
        return float((tuned(graphs, task="e")["e"] - wheel(graphs, task="e")["e"]).abs().mean())
    finally:
        tuned.train(was)


def _weight_change(run_dir, group: str) -> float:
    from chgnet.model import CHGNet

    from matgnn.models import load_model

    model = load_model(run_dir)
    wheel = CHGNet.load(model_name="0.3.0", verbose=False).state_dict()
    trained = model.state_dict()
    return max(float((trained[n] - wheel[n[len("chgnet."):]]).abs().max()) for n in model.layer_groups()[group])


def test_chgnet_finetune_backbone_learning_rate_scale_from_the_cli(tmp_path):
    """`backbone_lr_scale` moves CHGNet's own layers less than our MLP and heads: two `matgnn train`
    runs on the same folder, lr and epochs, one with the backbone at 2 % of train.lr."""
    folder = cif_folder(tmp_path / "cifs")
    runs = {}
    for tag, extra in (("plain", ""), ("gentle", ", backbone_lr_scale: 0.02")):
        cfg = with_model(run_yaml(tmp_path / f"{tag}.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / tag,
                                  epochs=3), f"{{name: chgnet_ft, hidden: 16, layers: 2{extra}}}")
        ok(cli("train", str(cfg), "--set", "train.lr=0.003", "--set", "train.scheduler=none"))
        (runs[tag],) = runs_in(tmp_path / tag)
    info = json.loads((runs["gentle"] / "model" / "model.json").read_text())
    assert info["init_args"]["backbone_lr_scale"] == 0.02
    assert _weight_change(runs["gentle"], "conv_3") < 0.3 * _weight_change(runs["plain"], "conv_3")
    assert _weight_change(runs["gentle"], "conv_3") > 0  # slower, not frozen
    out = tmp_path / "p.csv"
    ok(cli("predict", str(runs["gentle"]), str(folder), "--out", str(out)))
    assert len(list(csv.DictReader(open(out)))) == 12


def test_chgnet_finetune_anchor_loss_keeps_the_backbones_energy(tmp_path):
    """`anchor_weight`: an auxiliary loss (no labels needed) keeps CHGNet's own energy near the pretrained
    model's while it is fine-tuned on another target. Through the Python API (`train` with an
    `on_epoch_end` hook reading the weights being trained, not the best epoch's), the same runs with and
    without the anchor."""
    from chgnet.model import CHGNet
    from pymatgen.core import Structure

    folder = cif_folder(tmp_path / "cifs")
    wheel = CHGNet.load(model_name="0.3.0", verbose=False).eval()
    graphs = [wheel.graph_converter(Structure.from_file(p)) for p in sorted(folder.glob("*.cif"))]
    drift = anchored_drifts(folder, tmp_path, "chgnet_ft", 3, lambda model: _energy_drift(model, wheel, graphs))
    # same seed, data and steps: without the anchor the two runs would drift alike (measured 0.018 vs 0.030)
    assert drift[20.0] < 0.8 * drift[0.0], drift


def test_matgnn_finetune_continues_a_chgnet_ft_run_with_a_freeze_policy(tmp_path):
    """`matgnn finetune RUN CFG --freeze embedding,conv_0,conv_1,conv_2`: a fine-tuned CHGNet run continued on
    new data; transfer.json lists the frozen groups (the model's own fixed `backbone_readout` among them) and
    their weight shift is zero, the last block's is not."""
    folder = cif_folder(tmp_path / "cifs")
    cfg = with_model(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "src", epochs=2),
                     "{name: chgnet_ft, hidden: 16, layers: 2}")
    ok(cli("train", str(cfg)))
    (src,) = runs_in(tmp_path / "src")
    new = run_yaml(tmp_path / "n.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "ft", epochs=2)
    ok(cli("finetune", str(src), str(new), "--freeze", "embedding,conv_0,conv_1,conv_2", "--keep-heads"))
    (ft,) = runs_in(tmp_path / "ft")
    info = json.loads((ft / "transfer.json").read_text())
    assert {"embedding", "conv_0", "conv_1", "conv_2", "backbone_readout"} <= set(info["frozen_groups"])
    assert all(info["weight_shift"][g] == 0.0 for g in ("embedding", "conv_0", "conv_2"))
    assert info["weight_shift"]["conv_3"] > 0
    assert json.loads((ft / "model" / "model.json").read_text())["class"] == "CHGNetFineTune"
