"""The fused CPU kernel of CGCNN's gated convolution (`matgnn.models.kernels`): the same function and
gradients as the PyTorch path, used only where it applies, and a machine that cannot build it still trains."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from tests.userdata import ok, run, run_yaml, runs_in


def _batch():
    """A real batch of three crystals (graphs at CGCNN's settings)."""
    from ase.build import bulk

    from matgnn.data.structure import Structure
    from matgnn.graphs.cache import graph_record
    from matgnn.graphs.neighbors import GraphSettings
    from matgnn.graphs.packed import PackedGraphs

    settings = GraphSettings(cutoff=6.0, max_neighbors=12)
    atoms = [bulk("NaCl", "rocksalt", a=5.64), bulk("Si", "diamond", a=5.43).repeat((2, 1, 1)),
             bulk("Fe", "bcc", a=2.87, cubic=True)]
    records = [graph_record(Structure.from_ase(a, f"s{k}"), settings) for k, a in enumerate(atoms)]
    return PackedGraphs.from_records(records).batch(torch.arange(len(records)))


def _conv_and_grads(conv, x, edge_index, edge_attr):
    out = conv(x, edge_index, edge_attr)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(),
                                [x, *conv.parameters()])
    return out.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_gated_conv_equals_the_pytorch_path(monkeypatch, dtype):
    from matgnn import keys
    from matgnn.models import kernels
    from matgnn.models.layers import GatedConv

    if kernels.extension() is None:
        pytest.skip("the fused CPU kernel could not be built on this machine (no C++ compiler?)")
    batch = _batch()
    edge_index = batch[keys.EDGE_INDEX]
    assert kernels.centre_ptr(edge_index[1], int(batch[keys.N_ATOMS].sum())) is not None  # graphs come sorted
    torch.manual_seed(0)
    conv = GatedConv(16, 10).to(dtype).train()
    n, e = int(batch[keys.N_ATOMS].sum()), edge_index.shape[1]
    x = (3 * torch.randn(n, 16, dtype=dtype)).requires_grad_()  # gates of several units, both signs
    edge_attr = torch.rand(e, 10, dtype=dtype)
    fused, fused_grads = _conv_and_grads(conv, x, edge_index, edge_attr)
    monkeypatch.setenv("MATGNN_KERNELS", "off")
    plain, plain_grads = _conv_and_grads(conv, x, edge_index, edge_attr)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(fused, plain, rtol=tol, atol=tol)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=tol * 10, atol=tol * 10)
    # edges not sorted by centre atom: the PyTorch path, the same answer
    order = torch.randperm(e)
    monkeypatch.setenv("MATGNN_KERNELS", "on")
    shuffled, _ = _conv_and_grads(conv, x, edge_index[:, order], edge_attr[order])
    assert kernels.centre_ptr(edge_index[1, order], n) is None
    torch.testing.assert_close(shuffled, plain, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["cgcnn", "cgconv_net"])
def test_models_with_the_kernel_train_as_without(monkeypatch, name):
    """A CGCNN and the seed research's CGConvNet: the same answers and gradients with and without the kernel
    (train mode: batch norm on batch statistics)."""
    from matgnn.models import kernels
    from matgnn.models.cgcnn import CGCNN, CGConvNet

    if kernels.extension() is None:
        pytest.skip("the fused CPU kernel could not be built on this machine (no C++ compiler?)")
    batch = _batch()
    torch.manual_seed(1)
    model = (CGCNN if name == "cgcnn" else CGConvNet)(heads=[{"name": "y", "level": "graph"}], hidden=32,
                                                       layers=3, cutoff=6.0, n_rbf=20, dropout=0.0).train()

    def answers():
        out = model(batch)["y"]
        return out.detach(), torch.autograd.grad(out.sum(), list(model.parameters()))

    fused, fused_grads = answers()
    monkeypatch.setenv("MATGNN_KERNELS", "off")
    plain, plain_grads = answers()
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    # a batch whose edges are not sorted by centre atom (looked at once per batch, then every layer takes the
    # PyTorch path): the same answers
    from matgnn import keys
    from matgnn.models.layers import gated_conv_edges

    monkeypatch.setenv("MATGNN_KERNELS", "on")
    order = torch.randperm(batch[keys.EDGE_INDEX].shape[1])
    batch[keys.EDGE_INDEX] = batch[keys.EDGE_INDEX][:, order]
    for key in (keys.CELL_OFFSETS, keys.EDGE_VEC, keys.EDGE_DIST):  # the per-edge fields a batch holds
        if key in batch:
            batch[key] = batch[key][order]
    h = torch.zeros(int(batch[keys.N_ATOMS].sum()), 4)
    assert gated_conv_edges(model.edge_features, batch, h)["ptr"] is False
    shuffled, shuffled_grads = answers()
    torch.testing.assert_close(shuffled, plain, rtol=1e-4, atol=1e-5)
    for a, b in zip(shuffled_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("update_edges", [True, False])
def test_fused_edge_gated_conv_equals_the_pytorch_path(monkeypatch, dtype, update_edges):
    """The ALIGNN-style edge-gated convolution: the same outputs and gradients with the fused kernel (edges sorted
    by target, some targets without edges) and without it, also where the edge update is not read (a last layer)."""
    from matgnn.models import kernels
    from matgnn.models.alignn import EdgeGatedConv

    if kernels.extension() is None:
        pytest.skip("the fused CPU kernel could not be built on this machine (no C++ compiler?)")
    torch.manual_seed(0)
    n, c, e = 40, 12, 300
    edge_index = torch.stack([torch.randint(0, n, (e,)), torch.sort(torch.randint(0, n - 5, (e,)))[0]])
    conv = EdgeGatedConv(c, "layer", update_edges=update_edges).to(dtype).train()
    x = (3 * torch.randn(n, c, dtype=dtype)).requires_grad_()  # gates far from 0.5, both signs
    y = torch.randn(e, c, dtype=dtype, requires_grad=True)
    assert kernels.offsets(edge_index[1], n, x) is not False

    def answers(ptr):
        xo, yo = conv(x, edge_index, y, ptr)
        loss = (xo * torch.linspace(-1, 1, xo.numel(), dtype=dtype).view_as(xo)).sum()
        if update_edges:
            loss = loss + (yo * torch.linspace(-2, 1, yo.numel(), dtype=dtype).view_as(yo)).sum()
        return xo.detach(), yo.detach(), torch.autograd.grad(loss, [x, y, *conv.parameters()], allow_unused=True)

    fused = answers(None)
    plain = answers(False)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(fused[0], plain[0], rtol=tol, atol=tol)
    torch.testing.assert_close(fused[1], plain[1], rtol=tol, atol=tol)
    for a, b in zip(fused[2], plain[2]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=tol * 10, atol=tol * 10)
    monkeypatch.setenv("MATGNN_KERNELS", "off")
    assert kernels.offsets(edge_index[1], n, x) is False
    assert kernels.offsets(edge_index[1, torch.randperm(e)], n, x) is False


@pytest.mark.parametrize("settings", [{}, {"angle_cutoff": None, "norm": "batch"}, {"dihedrals": True}])
def test_alignn_with_the_kernel_trains_as_without(monkeypatch, settings):
    """A whole ALIGNN-style model (bond graph, line graph, nested line graph): the same answers and gradients with
    and without the fused kernel."""
    from matgnn.models import kernels
    from matgnn.models.alignn import ALIGNN

    if kernels.extension() is None:
        pytest.skip("the fused CPU kernel could not be built on this machine (no C++ compiler?)")
    batch = _batch()
    torch.manual_seed(2)
    model = ALIGNN(heads=[{"name": "y", "level": "graph"}], hidden=16, layers=2, gcn_layers=1, cutoff=6.0, n_rbf=20,
                   n_angle=10, embedding=16, **settings).train()

    def answers():
        out = model(batch)["y"]
        return out.detach(), torch.autograd.grad(out.sum(), list(model.parameters()), allow_unused=True)

    calls = []
    real = kernels.edge_gated
    monkeypatch.setattr(kernels, "edge_gated", lambda *a: calls.append(1) or real(*a))
    fused, fused_grads = answers()
    assert len(calls) == 2 * 2 + 1 + (2 if settings.get("dihedrals") else 0)  # every convolution took the kernel
    monkeypatch.setenv("MATGNN_KERNELS", "off")
    plain, plain_grads = answers()
    assert len(calls) == 2 * 2 + 1 + (2 if settings.get("dihedrals") else 0)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
    for a, b in zip(fused_grads, plain_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_a_machine_that_cannot_build_the_kernel_still_trains(tmp_path):
    """A broken library in the build folder, a lock left by an interrupted build and no working C++ compiler: one
    line each, and the run trains on the PyTorch path (no hang, no traceback)."""
    from torch.utils import cpp_extension

    from matgnn.models import kernels

    ext_dir = tmp_path / "torch_extensions"
    env = {"TORCH_EXTENSIONS_DIR": str(ext_dir), "CXX": str(tmp_path / "no-such-compiler")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_EXTENSIONS_DIR", str(ext_dir))
        lock = Path(cpp_extension._get_build_directory(kernels._name(), False)) / "lock"
    assert ext_dir in lock.parents
    lock.touch()
    old = time.time() - 2 * kernels.STALE_LOCK_S
    os.utime(lock, (old, old))
    (lock.parent / f"{kernels._name()}.so").write_bytes(b"half a library")  # a build cut short, or a bad copy
    (lock.parent / "finished").touch()

    cfg = run_yaml(tmp_path / "c.yaml", "{kind: emt, n_structures: 24}", tmp_path / "runs", epochs=2,
                   target="mixing_energy")
    r = ok(run("train", str(cfg), env=env, timeout=600))
    flat = " ".join(r.out.split())
    assert "does not load" in flat and "building it again" in flat, r.out
    assert "left by an interrupted build" in flat, r.out
    assert flat.count("the fused CPU kernel could not be built") == 1, r.out
    assert "using the PyTorch path" in flat and "Traceback" not in r.out
    (run_dir,) = runs_in(tmp_path / "runs")
    assert (run_dir / "metrics.json").exists()
    # switched off: not even tried
    r = ok(run("train", str(cfg), env={**env, "MATGNN_KERNELS": "off"}, timeout=600))
    assert "fused CPU kernel" not in r.out
