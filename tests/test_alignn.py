"""The ALIGNN-style line-graph model the way users run it: `matgnn train` with `model: alignn` on a
CIF folder (graph head) and on per-atom moments (node head), `matgnn predict`, `matgnn finetune`
with a freeze policy over its layer groups; and its triplets built once per batch by the packer."""

from __future__ import annotations

import csv
import json

import numpy as np
import torch
from ase.build import bulk

from matgnn import keys
from matgnn.data.structure import Structure
from matgnn.graphs.cache import graph_record
from matgnn.graphs.neighbors import GraphSettings
from matgnn.graphs.packed import PackedGraphs
from matgnn.graphs.triplets import periodic_triplets
from tests.userdata import cif_folder, cli, ok, run_yaml, runs_in, with_model

MODEL = "{name: alignn, hidden: 16, layers: 2, gcn_layers: 1, n_rbf: 16, n_angle: 8, embedding: 8}"


def test_alignn_trains_predicts_and_finetunes_from_the_cli(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    cfg = with_model(run_yaml(tmp_path / "a.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=3), MODEL)
    ok(cli("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["class"] == "ALIGNN" and info["init_args"]["layers"] == 2
    m = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(m["test.lattice.mae"])
    out = tmp_path / "p.csv"
    ok(cli("predict", str(run_dir), str(folder), "--out", str(out), env=env))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and all(np.isfinite(float(r["lattice"])) for r in rows)
    r = ok(cli("finetune", str(run_dir), str(cfg), "--freeze", "all_but_embedding_conv0", env=env))
    fine = [p for p in runs_in(tmp_path / "runs") if p != run_dir][0]
    t = json.loads((fine / "transfer.json").read_text())
    assert t["class"] == "ALIGNN" and "conv_1" in t["frozen_groups"] and "conv_2" in t["frozen_groups"], r.out


def test_the_packer_builds_the_triplets_once_per_batch():
    settings = GraphSettings(cutoff=4.0, max_neighbors=8)
    recs = []
    for k, (el, a) in enumerate([("Cu", 3.6), ("Ni", 3.5)]):
        at = bulk(el, "fcc", a=a, cubic=True)
        s = Structure(f"s{k}", at.numbers.astype(np.int64), at.positions, np.asarray(at.cell[:]), np.ones(3, bool))
        recs.append(graph_record(s, settings))
    with_triplets = PackedGraphs.from_records(recs, extras=["triplets"]).batch(torch.arange(2))
    plain = PackedGraphs.from_records(recs).batch(torch.arange(2))
    assert keys.TRIPLET_KJ in with_triplets and keys.TRIPLET_KJ not in plain
    kj, ji = periodic_triplets(plain[keys.EDGE_INDEX], plain[keys.CELL_OFFSETS], plain[keys.Z].size(0))
    assert torch.equal(with_triplets[keys.TRIPLET_KJ], kj) and torch.equal(with_triplets[keys.TRIPLET_JI], ji)
    # every triplet pairs edge k→j with an edge j→i that starts where it ends
    src, dst = plain[keys.EDGE_INDEX]
    assert torch.equal(dst[kj], src[ji]) and len(kj) > 0


def _chain(phi_deg: float):
    """Four atoms l-k-j-i, 1.5 Å bonds, 110° bond angles, dihedral ``phi_deg`` about k-j, in a 20 Å box."""
    theta, phi = np.radians(110.0), np.radians(phi_deg)
    k, j = np.zeros(3), np.array([1.5, 0.0, 0.0])
    l_ = k + 1.5 * np.array([np.cos(np.pi - theta), np.sin(np.pi - theta), 0.0]) * np.array([-1, 1, 1])
    i = j + 1.5 * np.array([np.cos(np.pi - theta), np.sin(np.pi - theta) * np.cos(phi),
                            np.sin(np.pi - theta) * np.sin(phi)])
    pos = np.array([l_, k, j, i]) + 5.0
    return Structure("chain", np.array([6, 6, 6, 6]), pos, np.eye(3) * 20.0, np.ones(3, bool))


def test_nested_line_graph_gives_the_dihedral_angle():
    """`dihedrals: true`: the nested line graph of a 4-atom chain (bonds only between neighbours) has the
    quadruplet l→k→j→i and its reverse, each with cos φ of the chain's dihedral angle about k-j."""
    from matgnn.graphs.geometry import edge_vectors
    from matgnn.models.alignn import dihedrals

    for phi in (60.0, 180.0):
        rec = graph_record(_chain(phi), GraphSettings(cutoff=1.6))
        batch = PackedGraphs.from_records([rec], extras=["triplets"]).batch(torch.arange(1))
        kj, ji = batch[keys.TRIPLET_KJ], batch[keys.TRIPLET_JI]
        index, cos = dihedrals(edge_vectors(batch), kj, ji, torch.stack([kj, ji]), batch[keys.EDGE_INDEX].size(1))
        assert index.size(1) == 2, phi
        torch.testing.assert_close(cos, torch.full((2,), float(np.cos(np.radians(phi))), dtype=cos.dtype),
                                   atol=1e-5, rtol=0)


def test_alignn_with_dihedrals_from_the_cli(tmp_path):
    folder = cif_folder(tmp_path / "cifs", n=8)
    model = MODEL.replace("}", ", dihedrals: true}")
    cfg = with_model(run_yaml(tmp_path / "a.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs"), model)
    ok(cli("train", str(cfg)))
    (run_dir,) = runs_in(tmp_path / "runs")
    assert json.loads((run_dir / "model" / "model.json").read_text())["init_args"]["dihedrals"] is True
    out = tmp_path / "p.csv"
    ok(cli("predict", str(run_dir), str(folder), "--out", str(out)))
    assert len(list(csv.DictReader(open(out)))) == 8


def test_memory_saving_layers_compute_exactly_what_they_replace():
    """The fused ``SiLU(batch_norm(x))`` and edge-gate sums hold fewer tensors for the backward pass; their
    outputs, gradients and running statistics equal the plain PyTorch composition, and ALIGNN's parameter
    names stay those of the separate norm (models saved before still load)."""
    from torch.nn import functional as F

    from matgnn.models.alignn import ALIGNN, _GatedSums
    from matgnn.models.layers import RowBatchNorm, RowBatchNormSiLU

    torch.manual_seed(0)
    plain, fused = RowBatchNorm(8), RowBatchNormSiLU(8)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5), plain.bias.uniform_(-0.5, 0.5)
    fused.load_state_dict(plain.state_dict())
    for _ in range(3):
        x = torch.randn(50, 8) * 3 + 1
        xa, xb, g = x.clone().requires_grad_(), x.clone().requires_grad_(), torch.randn(50, 8)
        ya, yb = F.silu(plain(xa)), fused(xb)
        (ya * g).sum().backward(), (yb * g).sum().backward()
        torch.testing.assert_close(ya, yb, rtol=0, atol=1e-6)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-6)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[k], v, rtol=0, atol=0)
    torch.testing.assert_close(plain.weight.grad, fused.weight.grad, rtol=0, atol=1e-5)
    plain.eval(), fused.eval()
    x = torch.randn(5, 8)
    torch.testing.assert_close(fused(x), F.silu(plain(x)), rtol=0, atol=0)

    m = torch.randn(30, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    src, dst = torch.randint(0, 7, (30,)), torch.randint(0, 5, (30,))
    assert torch.autograd.gradcheck(lambda m, v: _GatedSums.apply(m, v, src, dst, 5), (m, v))
    sigma = torch.sigmoid(m)
    num, den = _GatedSums.apply(m, v, src, dst, 5)
    torch.testing.assert_close(num, torch.zeros(5, 4, dtype=m.dtype).index_add(0, dst, sigma * v[src]))
    torch.testing.assert_close(den, torch.zeros(5, 4, dtype=m.dtype).index_add(0, dst, sigma))

    names = set(ALIGNN([{"name": "y"}], hidden=8, layers=1, gcn_layers=1, norm="batch").state_dict())
    assert {"atom_embedding.1.running_mean", "alignn_layers.0.bond_graph.norm_nodes.weight",
            "alignn_layers.0.bond_graph.norm_edges.bias"} <= names


def test_a_model_saved_before_the_wide_gaussians_keeps_its_narrow_ones(tmp_path):
    """The defaults became ALIGNN's release (layer norm, wide Gaussians). A model.json written before
    ``gaussians`` existed lacks it and must rebuild with the narrow Gaussians it was trained with, alone
    (``load_model``) and nested in a composite (``build_from_spec``); a new model gets the wide ones."""
    from matgnn.models.alignn import ALIGNN
    from matgnn.models.loading import load_model
    from matgnn.models.registry import build_from_spec, model_spec

    spacing = 8.0 / 15
    new = ALIGNN([{"name": "y"}], hidden=8, layers=1, gcn_layers=1, n_rbf=16, n_angle=8, embedding=8)
    assert new.init_args["norm"] == "layer" and abs(new.bond_rbf.width - (spacing / 2) ** 0.5) < 1e-12
    old = ALIGNN([{"name": "y"}], hidden=8, layers=1, gcn_layers=1, n_rbf=16, n_angle=8, embedding=8,
                 norm="batch", gaussians="narrow")
    assert abs(old.bond_rbf.width - spacing) < 1e-12 and abs(old.angle_rbf.width - 2.0 / 7) < 1e-12
    old.save(tmp_path / "m")
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    del info["init_args"]["gaussians"]  # as written before the argument existed
    (tmp_path / "m" / "model.json").write_text(json.dumps(info))
    loaded = load_model(tmp_path / "m")
    assert loaded.init_args["gaussians"] == "narrow" and loaded.bond_rbf.width == old.bond_rbf.width
    assert loaded.angle_rbf.width == old.angle_rbf.width
    spec = model_spec(old)
    spec["init_args"] = {k: v for k, v in spec["init_args"].items() if k != "gaussians"}
    assert build_from_spec(spec).bond_rbf.width == old.bond_rbf.width
