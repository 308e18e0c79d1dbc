"""`model: {name: sevennet_ft}`: SevenNet-0 itself fine-tuned with our heads, the way users run it: `matgnn
train` on a CIF folder, frozen backbone groups kept at the wheel's weights, the rest trained (its own layers at
`backbone_lr_scale`), predict from the run folder, `matgnn finetune` policies over its groups, and an element
SevenNet-0 does not know named in a one-line error."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read, write

from matgnn import keys
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

pytest.importorskip("sevenn", reason="model 'sevennet_ft' needs the sevenn package (pip install 'matgnn[foundation]')")


def _wheel_state() -> dict:
    from matgnn.models.backbones.sevennet import sevennet_network

    return sevennet_network().state_dict()


def test_sevennet_finetune_trains_the_backbone_except_frozen_groups(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    cfg = with_model(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=2),
                     "{name: sevennet_ft, hidden: 16, layers: 2, freeze: [embedding, conv_0]}")
    ok(cli("train", str(cfg)))
    (run_dir,) = runs_in(tmp_path / "runs")
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["class"] == "SevenNetFineTune" and info["init_args"]["freeze"] == ["embedding", "conv_0"]
    assert np.isfinite(json.loads((run_dir / "metrics.json").read_text())["test.lattice.mae"])

    from matgnn.models import load_model

    model = load_model(run_dir)
    groups = model.layer_groups()
    assert {"embedding", "conv_0", "conv_4", "backbone_readout", "readout", "head"} <= set(groups)
    wheel, trained = _wheel_state(), model.state_dict()
    for group, changed in (("embedding", False), ("conv_0", False), ("backbone_readout", False), ("conv_4", True)):
        diffs = [float((trained[n] - wheel[n[len("sevennet."):]]).abs().max()) for n in groups[group]]
        assert (max(diffs) > 0) == changed, group

    out = tmp_path / "p.csv"
    ok(cli("predict", str(run_dir), str(folder), "--out", str(out)))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and all(np.isfinite(float(r["lattice"])) for r in rows)

    new = tmp_path / "new"
    new.mkdir()
    write(new / "radon.cif", Atoms("Rn", positions=[[0, 0, 0]], cell=[4, 4, 4], pbc=True))  # not in MPtrj
    user_error(cli("predict", str(run_dir), str(new), "--out", str(tmp_path / "q.csv")), "radon", "SevenNet")


def _batch(structs: list[Atoms]) -> dict:
    """A batch of ASE structures with SevenNet's graphs, as the packer gives model ``sevennet_ft``."""
    from torch_geometric.data import Batch

    from matgnn import keys
    from matgnn.models.backbones.sevennet import add_graphs

    batch = {keys.N_ATOMS: torch.tensor([len(a) for a in structs]),
             keys.Z: torch.tensor(np.concatenate([a.numbers for a in structs])),
             keys.POS: torch.tensor(np.concatenate([a.positions for a in structs]), dtype=torch.float32),
             keys.CELL: torch.tensor(np.stack([a.cell[:] for a in structs]), dtype=torch.float32),
             keys.PBC: torch.ones(len(structs), 3, dtype=torch.bool),
             keys.STRUCTURE_ID: [f"s{k}" for k in range(len(structs))],
             keys.BATCH: torch.tensor(np.repeat(np.arange(len(structs)), [len(a) for a in structs]))}
    batch = Batch(**batch)
    batch.num_nodes, batch._num_graphs = int(batch[keys.N_ATOMS].sum()), len(structs)
    return add_graphs(batch)


def _energy_drift(model, graphs) -> float:
    """Mean |E/atom| difference between a fine-tuned model's SevenNet and the wheel's (through its energy readout)."""
    from matgnn.models.backbones.sevennet import sevennet_network

    wheel = sevennet_network().eval()
    with torch.no_grad():
        tuned = model._energy_per_atom(model.sevennet, model._run(model.sevennet, graphs, model._feature_modules))
        ref = model._energy_per_atom(wheel, model._run(wheel, graphs, model._feature_modules))
    return float((tuned - ref).abs().mean())


def test_sevennet_finetune_anchor_loss_keeps_the_backbones_energy(tmp_path):
    """`anchor_weight`: an auxiliary loss (no labels needed) on SevenNet's own energy per atom, read through its
    frozen energy readout. At the wheel's weights it is zero and that energy is SevenNet-0's own (its ASE
    calculator's); it pulls moved weights back; and the same `train` runs (Python API, reading the weights
    being trained after each epoch) drift less from SevenNet-0's energies with it than without."""
    from ase.build import bulk
    from sevenn.calculator import SevenNetCalculator

    from matgnn.models import model_class

    structs = [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("NaCl", "rocksalt", a=5.6)]
    batch = _batch(structs)
    model = model_class("sevennet_ft")(heads=[{"name": "y"}], hidden=16, anchor_weight=2.0).train()
    model(batch)
    assert float(model.auxiliary_loss().detach()) < 1e-5 and model.auxiliary_loss() is None  # once per forward
    calc = SevenNetCalculator("7net-0", device="cpu")
    own = [calc.get_potential_energy(a.copy()) / len(a) for a in structs]
    np.testing.assert_allclose([float(e) for (e,) in model._anchors.values()], own, atol=1e-4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if model.parameter_group(name) == "conv_4":
                p.add_(0.05 * torch.randn_like(p))
    model(batch)
    term = model.auxiliary_loss()
    assert float(term) > 1e-3
    term.backward()
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for n, p in model.named_parameters()
               if model.parameter_group(n) == "conv_4")

    folder = cif_folder(tmp_path / "cifs")
    graphs = _batch([read(f) for f in sorted(folder.glob("*.cif"))])[keys.backbone_graphs("sevennet")]
    drift = anchored_drifts(folder, tmp_path, "sevennet_ft", 2, lambda model: _energy_drift(model, graphs))
    assert drift[20.0] < 0.8 * drift[0.0], drift


def test_sevennet_finetune_features_start_at_the_frozen_backbones(tmp_path):
    """Before training, the fine-tunable network's per-atom features are exactly what `model: sevennet` reads
    from SevenNet's calculator (the same network, the same graphs), so fine-tuning starts from the frozen model."""
    from ase.build import bulk

    from matgnn.graphs.backbone_features import batch_structures
    from matgnn.models import model_class
    from matgnn.models.backbones.sevennet import SevennetFeatures

    batch = _batch([bulk("Cu", "fcc", a=3.6, cubic=True), bulk("NaCl", "rocksalt", a=5.6)])
    model = model_class("sevennet_ft")(heads=[{"name": "y"}], hidden=16, crystal_feature=False).eval()
    seen = []
    model.input.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().numpy()))
    model.node_features(batch)
    frozen = SevennetFeatures(root=tmp_path).features(batch_structures(batch))
    np.testing.assert_allclose(seen[0], np.concatenate([a for a, _ in frozen]), atol=1e-5)


def test_sevennet_finetune_policies_and_learning_rate_scale(tmp_path):
    """`backbone_lr_scale` from the CLI moves SevenNet's weights less than at full rate; `matgnn finetune`
    continues the run with a policy over SevenNet's groups; an unknown group is refused by name."""
    folder = cif_folder(tmp_path / "cifs", n=8)

    def train(scale: float, name: str):
        cfg = with_model(run_yaml(tmp_path / f"{name}.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / name,
                                  epochs=2), f"{{name: sevennet_ft, hidden: 16, backbone_lr_scale: {scale}}}")
        ok(cli("train", str(cfg)))
        (run_dir,) = runs_in(tmp_path / name)
        return run_dir

    from matgnn.models import load_model

    def moved(run_dir) -> float:
        wheel, state = _wheel_state(), load_model(run_dir).state_dict()
        return max(float((state[f"sevennet.{k}"] - v).abs().max()) for k, v in wheel.items()
                   if k.startswith("4_") and v.is_floating_point() and v.numel())

    full, gentle = train(1.0, "full"), train(0.02, "gentle")
    assert 0 < moved(gentle) < 0.5 * moved(full)

    new = run_yaml(tmp_path / "n.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "ft", epochs=1)
    ok(cli("finetune", str(full), str(new), "--freeze", "embedding,conv_0,conv_1,conv_2,conv_3", "--keep-heads"))
    (ft,) = runs_in(tmp_path / "ft")
    info = json.loads((ft / "transfer.json").read_text())
    assert {"embedding", "conv_0", "conv_3", "backbone_readout"} <= set(info["frozen_groups"])
    assert all(info["weight_shift"][g] == 0.0 for g in ("embedding", "conv_0", "conv_3"))
    assert info["weight_shift"]["conv_4"] > 0
    bad = with_model(run_yaml(tmp_path / "bad.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "bad"),
                     "{name: sevennet_ft, freeze: [conv_9]}")
    user_error(cli("train", str(bad)), "conv_9")
