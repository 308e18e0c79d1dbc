"""Batch plans for one or several ranks, and data-parallel training with torchrun + gloo on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from matgnn.config import RunConfig
from matgnn.graphs.batching import BatchPlan
from matgnn.training.run import CHECKPOINT, train


def test_ranks_together_take_the_global_batches_of_one_process():
    one = BatchPlan(23, 8, shuffle=True, generator=torch.Generator().manual_seed(3)).batches()
    ranks = [BatchPlan(23, 4, shuffle=True, generator=torch.Generator().manual_seed(3), rank=r, world=2).batches()
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3  # 23 padded to 24, 12 per rank
    for k, glob in enumerate(one):
        together = torch.cat([ranks[0][k], ranks[1][k]])
        assert set(glob.tolist()) <= set(together.tolist())
    # every graph is seen; the padding repeats a graph from the start of the permutation
    assert set(torch.cat(ranks[0] + ranks[1]).tolist()) == set(range(23))


def test_evaluation_plans_see_every_graph_once():
    parts = [torch.cat(BatchPlan(11, 3, rank=r, world=3, pad=False).batches()) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(11))


def test_size_aware_batches_close_at_the_budget_and_ranks_take_equal_steps():
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 60, (200,), generator=g)
    plans = [BatchPlan(200, sizes=sizes, budget=150, shuffle=True, generator=torch.Generator().manual_seed(1),
                       rank=r, world=2) for r in range(2)]
    batches = [p.batches() for p in plans]
    assert len(batches[0]) == len(batches[1]) <= len(plans[0])
    for bs in batches:
        totals = [int(sizes[b].sum()) for b in bs]
        assert all(150 <= t < 150 + 60 for t in totals[:-1])  # closed on reaching the budget
    single = BatchPlan(200, sizes=sizes, budget=150).batches()
    assert sorted(torch.cat(single).tolist()) == list(range(200))
    assert len(single) <= len(BatchPlan(200, sizes=sizes, budget=150))
    with pytest.raises(ValueError, match="budget"):
        BatchPlan(10, sizes=sizes[:10])


def test_streamed_and_in_memory_runs_with_size_aware_batches_agree(tmp_path):
    def cfg(name, **train_kw):
        return RunConfig.model_validate({
            "source": {"kind": "emt", "n_structures": 60}, "graphs": {"cutoff": 5.0},
            "targets": [{"name": "mixing_energy"}, {"name": "atom_energy", "level": "node"}],
            "model": {"name": "schnet", "hidden": 16, "layers": 2, "head_hidden": 16},
            "train": {"epochs": 3, "batch_size": 8, "threads": 1, "batch_by": "atoms", **train_kw},
            "output_dir": str(tmp_path / name), "cache_dir": str(tmp_path / "cache")})

    a = train(cfg("ram", in_memory=True), progress=False)
    b = train(cfg("lmdb", in_memory=False), progress=False)
    c = train(cfg("lmdb_workers", in_memory=False, loader_workers=2), progress=False)
    ha, hb, hc = (json.loads((r / "metrics.json").read_text()) for r in (a, b, c))
    assert ha["test.mixing_energy.mae"] == pytest.approx(hb["test.mixing_energy.mae"], rel=1e-5)
    assert hb["test.mixing_energy.mae"] == pytest.approx(hc["test.mixing_energy.mae"], rel=1e-5)


# --- torchrun --------------------------------------------------------------------------------------

def _config(tmp_path: Path, batch_size: int, epochs: int, n: int = 96, node_head: bool = True) -> Path:
    cfg = {
        "source": {"kind": "emt", "n_structures": n}, "graphs": {"cutoff": 5.0},
        "targets": [{"name": "mixing_energy"}] + ([{"name": "atom_energy", "level": "node", "weight": 0.3}]
                                                  if node_head else []),
        # SchNet has no batch norm: per-process BN statistics would make 2 × B differ from 1 × 2B
        "model": {"name": "schnet", "hidden": 32, "layers": 2, "head_hidden": 32},
        "train": {"epochs": epochs, "batch_size": batch_size, "threads": 1, "checkpoint_every": 0,
                  "patience": 100, "scheduler": "onecycle", "tensorboard": False},
        "split": {"kind": "random", "seed": 3},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    RunConfig.model_validate(cfg).to_yaml(path)
    return path


def _torchrun(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "matgnn", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant, as a crash of the whole job would."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        out = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout
        todo.extend(int(x) for x in out.split())
    for p in found:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_until_released(run: Path, seconds: float = 60) -> None:
    """Wait for the killed run's processes to be gone: torchrun's agent starts its ranks in their own
    process group, so they end a moment after the agent (a new run on the folder is refused while one of them
    still holds its lock, as it should be)."""
    import fcntl

    deadline = time.time() + seconds
    while time.time() < deadline:
        with open(run / "run.lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return
            except OSError:
                time.sleep(0.2)
    pytest.fail(f"{run} still held after {seconds} s: {(run / 'run.lock').read_text()}")


def _only_run(root: Path) -> Path:
    (run,) = [p for p in (root / "runs").iterdir() if p.is_dir()]
    return run


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # a graph-level head: each rank's loss is the mean over its 8 graphs, DDP averages the two means,
    # which is the mean over the 16 graphs of the one-process batch (a node head would weight the
    # ranks' atoms equally per rank, not per atom, and differ by that)
    one = train(RunConfig.from_yaml(_config(tmp_path / "one", 16, 6, node_head=False)), progress=False)
    out = _finish(_torchrun([str(_config(tmp_path / "two", 8, 6, node_head=False))]))
    assert "distributed: 2 processes (gloo), batch 8 per process" in out
    two = _only_run(tmp_path / "two")
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    # same steps on the same graphs; only the order of floating-point sums differs (Adam amplifies it
    # to ~1e-4 relative after 6 epochs)
    for key in ("test.mixing_energy.mae", "val.mixing_energy.mae"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-3), key
    w1 = torch.load(one / CHECKPOINT, weights_only=False)["model"]
    w2 = torch.load(two / CHECKPOINT, weights_only=False)["model"]
    # Adam turns sign flips of near-zero gradient components into steps of ~lr, so compare whole tensors
    a = torch.cat([w1[k].flatten() for k in w1 if w1[k].is_floating_point()])
    b = torch.cat([w2[k].flatten() for k in w1 if w1[k].is_floating_point()])
    finite = torch.isfinite(a)  # the ±inf bounds of heads without a log transform: the same on both
    assert torch.equal(a[~finite], b[~finite])
    a, b = a[finite], b[finite]
    assert float((a - b).norm() / a.norm()) < 0.01
    # rank 0 alone wrote the run folder: one run, one history with one row per epoch
    assert len(list((tmp_path / "two" / "runs").iterdir())) == 1
    assert len((two / "history.csv").read_text().splitlines()) == 7


@pytest.mark.slow
def test_ddp_run_killed_and_resumed_ends_like_an_uninterrupted_one(tmp_path):
    epochs = 40
    full = _finish(_torchrun([str(_config(tmp_path / "a", 8, epochs, n=160))]))
    assert "done in" in full
    proc = _torchrun([str(_config(tmp_path / "b", 8, epochs, n=160))])
    ckpt, killed_at = None, 0
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        runs = list((tmp_path / "b" / "runs").glob("*/" + CHECKPOINT)) if (tmp_path / "b" / "runs").exists() else []
        if runs:
            ckpt = runs[0]
            try:
                killed_at = torch.load(ckpt, weights_only=False)["epoch"]
            except Exception:  # being replaced right now
                killed_at = 0
            if killed_at >= 3:
                _kill_tree(proc.pid)  # the agent and its ranks (torchrun starts them in their own group)
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert ckpt is not None and 3 <= killed_at < epochs, "the run was not interrupted mid-way"
    run_b = ckpt.parent
    _wait_until_released(run_b)
    assert not (run_b / "metrics.json").exists()
    out = _finish(_torchrun(["--resume", str(run_b)]))
    assert "continuing after epoch" in out
    run_a = _only_run(tmp_path / "a")
    wa = torch.load(run_a / CHECKPOINT, weights_only=False)
    wb = torch.load(run_b / CHECKPOINT, weights_only=False)
    assert wa["epoch"] == wb["epoch"] == epochs
    for k in wa["model"]:
        torch.testing.assert_close(wa["model"][k], wb["model"][k], rtol=0, atol=0)
    assert [h["val_loss"] for h in wa["history"]] == [h["val_loss"] for h in wb["history"]]
