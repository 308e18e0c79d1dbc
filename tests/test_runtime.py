"""Process-wide CPU settings (matgnn.runtime): the heap that keeps the memory tensors free, measured by
the page faults of batch-like allocations in a fresh process, and a user's own allocator choice left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: a fresh process allocates and frees the largest batch, then 40 times eight tensors of 0.2-12 MB (one batch's activations, of
#: sizes that change from batch to batch) and reports its minor page faults over the loop
_BATCHES = """
import json, resource, sys, torch
from matgnn.runtime import keep_freed_memory
state = keep_freed_memory() if sys.argv[1] == "keep" else "not called"
g = torch.Generator().manual_seed(0)
xs = [torch.ones(3_000_000) for _ in range(8)]  # warm-up: the largest batch faults its memory in either way
del xs
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
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
    default = _batches("default")
    kept = _batches("keep")
    assert kept["state"] == "set"
    # glibc's adaptive thresholds trim the heap after each batch and fault it in again on the next
    assert default["faults"] > 25_000, default
    # kept: later batches mostly fit in the memory the largest one freed (some growth from fragmentation)
    assert kept["faults"] < default["faults"] / 5, (kept, default)


def test_a_users_own_allocator_choice_is_left_alone():
    r = _batches("keep", MALLOC_TRIM_THRESHOLD_="1000000")
    assert r["state"] == "user: MALLOC_TRIM_THRESHOLD_"
    assert _batches("keep", GLIBC_TUNABLES="glibc.malloc.tcache_count=0")["state"] == "user: GLIBC_TUNABLES"
    assert _batches("keep", MATGNN_MALLOC="system")["state"] == "user: MATGNN_MALLOC=system"
