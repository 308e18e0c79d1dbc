"""Every model: identical outputs when atoms are translated and wrapped, when the whole crystal
(atoms and cell) is rotated, permutation invariance (graph heads) / equivariance (node heads),
and the same intensive prediction for a 2x2x1 supercell; DimeNet++ keeps all periodic triplets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from torch_geometric.data import Batch

from matgnn.data.structure import Structure
from matgnn.graphs.cache import graph_record
from matgnn.graphs.dataset import record_to_data
from matgnn.graphs.extras import BUILDERS
from matgnn.graphs.neighbors import GraphSettings
from matgnn.models import OPERATORS, build_model, load_model
from matgnn.models.base import batch_fields_of
from matgnn.models.dimenet import periodic_triplets

SETTINGS = GraphSettings(cutoff=4.5, max_neighbors=12)
HEADS = [{"name": "y", "level": "graph"}, {"name": "m", "level": "node"}]
NAMES = ["cgcnn", "cgconv_net", "schnet", "pna", "dimenet++", "alignn", "alignn+dihedrals", "chgnet"] + [
    op for op in OPERATORS]


def _atoms():
    a = bulk("NaCl", "rocksalt", a=5.0).repeat((1, 1, 2))
    a.symbols[1] = "Br"
    a.set_cell(a.cell[:] @ np.array([[1.0, 0.05, 0.0], [0.0, 1.0, 0.1], [0.02, 0.0, 1.0]]), scale_atoms=True)
    a.rattle(0.05, seed=4)
    return a


def _graph(atoms, settings=SETTINGS, model=None):
    s = Structure("t", atoms.numbers.astype(np.int64), atoms.positions.copy(), np.asarray(atoms.cell[:], float),
                  np.asarray(atoms.pbc, bool), {"y": 0.0}, {"m": np.zeros(len(atoms))})
    batch = Batch.from_data_list([record_to_data(graph_record(s, settings))])
    for field in batch_fields_of(model):  # what the model declares (CHGNet's features), as the packer adds it
        BUILDERS[field](batch)
    return batch


def _model(name):
    if name == "splineconv":
        pytest.importorskip("torch_spline_conv", reason="splineconv needs the compiled torch-spline-conv extension")
    torch.manual_seed(0)
    extra = {"deg": [0, 0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 10, 30]} if name == "pna" else {}
    radial = {"num_radial": 6} if name == "dimenet++" else {"n_rbf": 8}  # DimeNet++'s own radial basis
    if name.startswith("alignn"):
        radial.update(n_angle=8, embedding=8, gcn_layers=1, dihedrals=name.endswith("+dihedrals"))
        name = "alignn"
    if name == "chgnet":  # frozen CHGNet features: no radial basis of ours
        pytest.importorskip("chgnet", reason="model 'chgnet' needs the chgnet package")
        radial = {}
    m = build_model(name, HEADS, cutoff=SETTINGS.cutoff, hidden=16, layers=2, head_hidden=16, **radial, **extra)
    return m.eval()


def _rotation(axis, angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix about ``axis`` by ``angle`` radians."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


@pytest.mark.parametrize("name", NAMES)
def test_invariances(name):
    model = _model(name)
    atoms = _atoms()
    with torch.no_grad():
        ref = model(_graph(atoms, model=model))
        moved = atoms.copy()
        moved.translate([0.7, -1.3, 2.9])
        moved.wrap()
        out = model(_graph(moved, model=model))
        torch.testing.assert_close(out["y"], ref["y"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out["m"], ref["m"], atol=1e-4, rtol=1e-4)

        perm = np.random.default_rng(0).permutation(len(atoms))
        out = model(_graph(atoms[perm], model=model))
        torch.testing.assert_close(out["y"], ref["y"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out["m"], ref["m"][perm], atol=1e-4, rtol=1e-4)

        turned = atoms.copy()  # a proper rotation of atoms and cell (DimeNet++ reads angles)
        rot = _rotation([0.3, -0.8, 0.5], 1.1)
        turned.set_cell(atoms.cell[:] @ rot.T, scale_atoms=False)
        turned.positions = atoms.positions @ rot.T
        out = model(_graph(turned, model=model))
        torch.testing.assert_close(out["y"], ref["y"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out["m"], ref["m"], atol=1e-4, rtol=1e-4)

        big = model(_graph(atoms.repeat((2, 2, 1)), model=model))
        torch.testing.assert_close(big["y"], ref["y"], atol=1e-4, rtol=1e-4)  # intensive (mean pooling)
        torch.testing.assert_close(big["m"], ref["m"].repeat(4), atol=1e-4, rtol=1e-4)


def test_saved_model_reloads_with_no_extra_arguments(tmp_path):
    model = _model("pna")
    model.set_normalization(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    g = _graph(_atoms())
    with torch.no_grad():
        torch.testing.assert_close(again(g)["y"], model(g)["y"])


def test_periodic_triplets_keep_image_triplets_and_drop_reverse_edges():
    # one-atom cell: every neighbour is an image of the centre itself
    a = bulk("Po", "sc", a=3.0)
    g = _graph(a, GraphSettings(cutoff=3.5))  # first shell only
    idx_kj, idx_ji = periodic_triplets(g.edge_index, g.cell_offsets, 1)
    n_edges = g.edge_index.shape[1]
    assert n_edges == 6
    # each of the 6 edges pairs with the 5 others (its reverse excluded); PyG's
    # index-based exclusion (k != i) would leave no triplet at all here.
    assert len(idx_kj) == 6 * 5
    off = g.cell_offsets
    assert not bool(((off[idx_kj] == -off[idx_ji]).all(-1)).any())


@pytest.mark.parametrize("name", ["cgcnn", "schnet"])
def test_attention_pooling_is_intensive(name):
    torch.manual_seed(0)
    model = build_model(name, HEADS, cutoff=SETTINGS.cutoff, hidden=16, layers=2, head_hidden=16, n_rbf=8,
                        pooling="attention").eval()
    atoms = _atoms()
    with torch.no_grad():
        ref = model(_graph(atoms))["y"]
        torch.testing.assert_close(model(_graph(atoms.repeat((2, 2, 1))))["y"], ref, atol=1e-4, rtol=1e-4)
        perm = np.random.default_rng(1).permutation(len(atoms))
        torch.testing.assert_close(model(_graph(atoms[perm]))["y"], ref, atol=1e-4, rtol=1e-4)


def test_log_transform_maps_predictions_back():
    heads = [{"name": "y", "level": "graph", "transform": "log"}]
    model = build_model("cgcnn", heads, cutoff=SETTINGS.cutoff, hidden=8, layers=1, head_hidden=8, n_rbf=8).eval()
    model.set_normalization(torch.tensor([2.0]), torch.tensor([0.5]))
    g = _graph(_atoms())
    with torch.no_grad():
        z = model.forward_normalized(g)["y"]
        torch.testing.assert_close(model(g)["y"], torch.expm1(z * 0.5 + 2.0))
    assert float(model.transform_target(0, torch.tensor(0.0))) == 0.0
    with pytest.raises(ValueError, match="transform"):
        build_model("cgcnn", [{"name": "y", "transform": "sqrt"}], cutoff=4.0)


@pytest.mark.parametrize("aggr", ["add", "mean"])
def test_factorised_gated_conv_is_pyg_cgconv(aggr):
    """GatedConv computes CGConv's function (x_i W_i + x_j W_j + e W_e instead of [x_i,x_j,e] W)."""
    from torch_geometric.nn import CGConv

    from matgnn.models.layers import GatedConv

    torch.manual_seed(1)
    x, e = torch.randn(40, 16), torch.randn(300, 7)
    edge_index = torch.randint(0, 40, (2, 300))
    ref = CGConv(16, dim=7, aggr=aggr, batch_norm=True)
    ours = GatedConv(16, 7, aggr=aggr).load_pyg_cgconv(ref)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ref(x1, edge_index, e), ours(x2, edge_index, e)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-4, rtol=1e-4)


def test_pna_conv_in_training_order_is_pygs_pnaconv():
    """PNA's convolution in training computes PyG's PNAConv from the same parameters (W_i x_i + W_j x_j +
    (W_e E) r instead of the encoder and W over [x_i, x_j, E r]; its own aggregation and min/max backward): the
    same outputs and gradients of the inputs and of every parameter, with atoms without edges and tied messages
    (a tie's gradient split evenly, as PyTorch's scatter_reduce does); in evaluation it is PyG's own path, bit
    for bit."""
    from torch_geometric.nn import PNAConv

    from matgnn.models.pna import _PNAConv

    torch.manual_seed(3)
    n, n_edges, f, d = 30, 200, 16, 7
    x, e = torch.randn(n, f, dtype=torch.float64), torch.randn(n_edges, d, dtype=torch.float64)
    edge_index = torch.randint(0, n - 5, (2, n_edges))  # the last five atoms have no edges
    # 40 edges twice (as symmetric neighbours give): equal messages, so ties for the min and the max
    edge_index, e = torch.cat([edge_index, edge_index[:, :40]], dim=1), torch.cat([e, e[:40]])
    kw = {"aggregators": ["mean", "min", "max", "std"], "scalers": ["identity", "amplification", "attenuation"],
          "deg": torch.tensor([5, 3, 8, 10, 4]), "edge_dim": d, "towers": 1, "pre_layers": 1, "post_layers": 1,
          "divide_input": False}
    ref, ours = PNAConv(f, f, **kw).double(), _PNAConv(f, kw["deg"], d).double()
    ours.load_state_dict(ref.state_dict())
    got = {}
    for name, conv in (("ref", ref), ("ours", ours)):
        xi, ei = x.clone().requires_grad_(), e.clone().requires_grad_()
        out = conv(xi, edge_index, ei)
        (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        got[name] = (out, xi.grad, ei.grad, {k: p.grad for k, p in conv.named_parameters()})
    (a, ax, ae, ap), (b, bx, be, bp) = got["ref"], got["ours"]
    torch.testing.assert_close(b, a)
    torch.testing.assert_close(bx, ax)
    torch.testing.assert_close(be, ae)
    assert ap.keys() == bp.keys()
    for k in ap:
        torch.testing.assert_close(bp[k], ap[k], msg=k)
    ref.eval()
    ours.eval()
    with torch.no_grad():
        assert torch.equal(ours(x, edge_index, e), ref(x, edge_index, e))


@pytest.mark.parametrize("name", ["cgcnn", "cgconv_net", "schnet", "pna"])
def test_forward_and_backward_under_bf16_autocast(name):
    """Mixed precision (the CUDA path uses bf16 autocast; CPU autocast exercises the same dtype mixing)."""
    model = _model(name).train()
    batch = _graph(_atoms())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_normalized(batch)
    loss = sum(v.float().square().mean() for v in out.values())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_gated_conv_mixes_fp32_atoms_with_bf16_messages():
    """Under autocast the messages come out of bf16 matmuls while the residual stream may be fp32."""
    from matgnn.models.layers import GatedConv

    conv = GatedConv(8, 4)
    x, e = torch.randn(10, 8), torch.randn(30, 4)
    edge_index = torch.randint(0, 10, (2, 30))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x, edge_index, e)
    assert out.shape == (10, 8) and torch.isfinite(out.float()).all()


def test_each_model_takes_exactly_its_own_settings():
    """The `model:` section is the chosen model's own config class: settings reach the model,
    and a setting it would not use is an error (SchNet and DimeNet++ embed Z themselves; DimeNet++'s
    radial basis is num_radial Bessel functions)."""
    from pydantic import ValidationError

    from matgnn.config import RunConfig

    cfg = RunConfig.model_validate({"model": {"name": "dimenet++", "hidden": 8, "layers": 1, "num_radial": 4}})
    model = build_model(cfg.model, HEADS, cutoff=4.0)
    assert model.init_args["num_radial"] == 4 and model.init_args["hidden"] == 8
    for bad in ({"name": "schnet", "atom_features": "onehot"}, {"name": "dimenet++", "n_rbf": 20},
                {"name": "pna", "operator": "gcnconv"}, {"name": "zoo"}, {"name": "gcnconv", "operator": "sageconv"}):
        with pytest.raises(ValidationError):
            RunConfig.model_validate({"model": bad})
    # an operator's name selects the zoo model with that operator
    zoo = build_model(RunConfig.model_validate({"model": {"name": "gcnconv", "hidden": 8}}).model, HEADS, cutoff=4.0)
    assert zoo.operator == "gcnconv"
    # configs of matgnn < 0.2 wrote every key for every model; their unused defaults are dropped on reading
    legacy = {"name": "schnet", "operator": None, "hidden": 16, "layers": 2, "atom_features": "cgcnn", "n_rbf": 40,
              "dropout": 0.0, "pooling": "mean", "head_hidden": 16}
    assert RunConfig.model_validate({"model": legacy}).model.model_dump() == {
        "name": "schnet", "hidden": 16, "layers": 2, "dropout": 0.0, "pooling": "mean", "head_hidden": 16,
        "n_rbf": 40, "n_filters": None}


def test_training_statistics_hook():
    """A model computes what it needs from the training graphs through one hook (PNA: degrees)."""
    from matgnn.models import PNA, model_class

    recs = [graph_record(Structure("a", np.array([11, 17]), np.array([[0, 0, 0], [2.5, 0, 0.0]]), np.eye(3) * 5.0,
                                   np.ones(3, bool)), SETTINGS)]
    stats = model_class("pna").training_statistics(recs)
    assert set(stats) == {"deg"} and sum(stats["deg"]) == 2 and model_class("cgcnn").training_statistics(recs) == {}
    assert model_class("pna") is PNA


@pytest.mark.parametrize("name", ["cgcnn", "schnet", "pna", "dimenet++", "alignn", "gatv2conv"])
def test_edge_vectors_inside_the_model_carry_gradients(name):
    """With positions that require grad, every model computes its edge vectors from positions, cell
    and offsets: the same numbers as the cached ones, gradients reach the positions (forces by
    autograd), and a translation-invariant output has forces summing to zero."""
    from matgnn.graphs.geometry import edge_vectors

    model = _model(name)
    batch = _graph(_atoms())
    cached = model(batch)["y"]
    np.testing.assert_allclose(edge_vectors(batch, from_positions=True).numpy(), batch.edge_vec.numpy(), atol=1e-5)
    batch.pos.requires_grad_(True)
    energy = model(batch)["y"]
    assert torch.allclose(energy, cached, atol=1e-5)
    (forces,) = torch.autograd.grad(-energy.sum(), batch.pos)
    assert forces.abs().sum() > 0 and torch.isfinite(forces).all()
    assert forces.sum(0).abs().max() < 1e-4 * max(1.0, float(forces.abs().max()))
