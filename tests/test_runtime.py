"""Process-wide CPU settings (matgnn.runtime): the heap that keeps the memory tensors free, measured by
the page faults of batch-like allocations in a fresh process, and a user's own allocator choice left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
