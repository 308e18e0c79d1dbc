"""Process-wide CPU settings (matgnn.runtime): the heap that keeps the memory tensors free, measured by
the page faults of batch-like allocations in a fresh process, and a user's own allocator choice left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: a fresh process allocates and frees the largest batch, then 80 times eight tensors of 0.2-12 MB (one batch's activations, of
#: sizes that change from batch to batch) and reports its minor page faults over the last 40 (the steady state: the first 40
#: let the kept heap settle its fragmentation, which varied from machine to machine)
_BATCHES = """
import json, resource, sys, torch
from matgnn.runtime import keep_freed_memory
state = keep_freed_memory() if sys.argv[1] == "keep" else "not called"
g = torch.Generator().manual_seed(0)
xs = [torch.ones(3_000_000) for _ in range(8)]  # the largest batch faults its memory in either way
del xs
for step in range(80):  # the first 40 batches settle the heap's fragmentation; the last 40 are measured
    if step == 40:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    xs = [torch.ones(int(n)) for n in torch.randint(50_000, 3_000_000, (8,), generator=g)]
    del xs
print(json.dumps({"state": state, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _batches(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "MATGNN_MALLOC")}
    out = subprocess.run([sys.executable, "-c", _BATCHES, mode], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_memory_is_reused_without_page_faults():
    kept = _batches("keep")
    assert kept["state"] == "set"
    # a heap that hands every freed block back (what glibc's adaptive thresholds do after some batches, not reliably
    # after which: an earlier form of this test compared with them and flaked) faults all of it in again: ~500k faults
    returned = _batches("keep", MALLOC_TRIM_THRESHOLD_="0", MALLOC_MMAP_THRESHOLD_="131072")
    assert returned["state"] == "user: MALLOC_MMAP_THRESHOLD_"
    assert returned["faults"] > 100_000, returned
    # kept: once settled, the batches reuse the memory earlier ones freed
    assert kept["faults"] < returned["faults"] / 100, (kept, returned)


def test_a_users_own_allocator_choice_is_left_alone():
    r = _batches("keep", MALLOC_TRIM_THRESHOLD_="1000000")
    assert r["state"] == "user: MALLOC_TRIM_THRESHOLD_"
    assert _batches("keep", GLIBC_TUNABLES="glibc.malloc.tcache_count=0")["state"] == "user: GLIBC_TUNABLES"
    assert _batches("keep", MATGNN_MALLOC="system")["state"] == "user: MATGNN_MALLOC=system"


_API_TRAIN = """
import json, os, sys, torch
from rich.console import Console
from matgnn.config import RunConfig
from matgnn.training.run import train
torch.set_num_threads(len(os.sched_getaffinity(0)))  # torch imported first: its OpenMP threads spin, as in a notebook
before = torch.get_num_threads()
cfg = RunConfig().with_overrides(["train.epochs=1", "train.tensorboard=false", f"output_dir={sys.argv[1]}"])
console = Console(stderr=False, record=True, width=200)
train(cfg, progress=False, console=console)
print(json.dumps({"before": before, "after": torch.get_num_threads(), "log": console.export_text()}))
"""


def test_python_api_training_beside_another_job_fits_its_threads_to_the_free_cores(tmp_path):
    """The Python API imports torch before matgnn can make its threads yield (the CLI does): beside another busy
    job, spinning threads on a shared core collapse the speed, so the run trains on the cores left over, says so,
    and gives the caller's process its thread count back."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    matgnn = str(Path(sys.executable).parent / "matgnn")
    try:
        out = subprocess.run([sys.executable, "-c", _API_TRAIN, str(tmp_path / "runs")], env=clean,
                             capture_output=True, text=True, timeout=600)
        # the command chose at its start (threads that yield), and keeps its thread count
        cli = subprocess.run([matgnn, "train", "--epochs", "1", "--set", "train.tensorboard=false", "--output-dir",
                              str(tmp_path / "cli_runs")], env=clean, capture_output=True, text=True, timeout=600)
    finally:
        busy.kill()
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "other task(s) running on this machine: training on" in got["log"], got["log"]
    assert f"instead of {got['before']}" in got["log"]
    assert got["after"] == got["before"]
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    assert "other task(s) running" not in cli.stdout + cli.stderr
