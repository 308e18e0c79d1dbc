"""Process-wide CPU settings that matgnn's entry points make before heavy work: OpenMP threads that
yield on a busy machine, and a heap that keeps the memory it frees.

Both leave a user's own choice alone: ``OMP_WAIT_POLICY`` / ``OMP_NUM_THREADS`` for the threads, and
``MATGNN_MALLOC=system``, glibc's ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_TOP_PAD_`` /
``MALLOC_MMAP_MAX_``, a malloc entry in ``GLIBC_TUNABLES`` or a preloaded allocator (jemalloc,
tcmalloc, mimalloc) for the heap.
"""

from __future__ import annotations

import os
from pathlib import Path

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks at least this large are still mapped on their own (and unmapped when freed)
MMAP_THRESHOLD = 64 << 20
#: free memory at the heap's top beyond this is handed back to the system
TRIM_THRESHOLD = 256 << 20
_allocator_state: str | None = None
#: busy_machine_threading ran (the matgnn command, before torch was imported): the threads are settled
_threading_chosen = False


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``; elsewhere the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def busy_machine_threading() -> None:
    """Keep CPU training from collapsing on a shared machine (``benchmarks/busy_threads.py``: with
    another job running, torch's OpenMP spin-waiting made epochs 4× slower on one machine, 20–38× on
    another; yielding threads, ``OMP_WAIT_POLICY=PASSIVE``, do not collapse; on an idle machine spinning is
    faster). So when another
    task is runnable as the command starts (``/proc/loadavg``), the OpenMP threads yield instead of
    spinning. Must run before torch is imported; a user's own ``OMP_WAIT_POLICY`` / ``OMP_NUM_THREADS``
    always wins."""
    global _threading_chosen
    _threading_chosen = True
    if "OMP_WAIT_POLICY" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return
    if other_runnable_tasks():
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def other_runnable_tasks() -> int:
    """Tasks runnable on the machine right now besides this process's own threads (``/proc/loadavg``); 0
    where that cannot be read."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        own = sum(1 for t in Path("/proc/self/task").iterdir()  # this process's runnable threads
                  if (t / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R")
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - own)


def threads_beside_other_work() -> tuple[int, int] | None:
    """For a process whose OpenMP threads spin (torch imported before :func:`busy_machine_threading` could
    act — the Python API — and no ``OMP_WAIT_POLICY=PASSIVE`` / ``OMP_NUM_THREADS`` of the user's): when
    other tasks are runnable now and torch's threads would not fit beside them, ``(threads, others)`` — as
    many threads as cores are left over (at least 1). Spinning threads on a shared core wait on each other
    at every parallel operation: an MLP epoch on frozen CHGNet features took 80 s instead of 1.5 s beside
    one other single-threaded job on 2 cores. ``None``: leave torch's threads as they are — also in the
    ``matgnn`` command, which chose at its start (:func:`busy_machine_threading`), so a command's thread count
    (and with it the float rounding of its results) does not depend on what started beside it later."""
    if (_threading_chosen or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
            or "OMP_NUM_THREADS" in os.environ):
        return None
    others = other_runnable_tasks()
    if not others:
        return None
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    threads = max(1, cores - others)
    return (threads, others) if threads < torch.get_num_threads() else None


def _user_allocator() -> str | None:
    """What in the environment says the user chose the heap's behaviour themselves, if anything
    (``MATGNN_MALLOC=system`` keeps glibc's own adaptive behaviour)."""
    if os.environ.get("MATGNN_MALLOC") == "system":
        return "MATGNN_MALLOC=system"
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"):
        if name in os.environ:
            return name
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(lib in preload for lib in ("jemalloc", "tcmalloc", "mimalloc")):
        return "LD_PRELOAD"
    return None


def keep_freed_memory() -> str:
    """Have glibc's malloc keep the memory that tensors free, for the next batch to reuse.

    By default glibc adapts its mmap threshold and trims the heap's top whenever more than twice
    that threshold is free. A training or inference pass allocates and frees tensors of a few MB
    whose sizes change with every batch, so the heap kept shrinking and growing again, and every
    regrowth page-faulted its memory in afresh. On an ALIGNN epoch of ``dft_2d`` that was 910,000
    minor faults (153,000 with this), and a third of the time of forward passes over prebuilt batches
    in a profiling loop; the benchmarks gain less (README). Fixed thresholds stop that: blocks under
    ``MMAP_THRESHOLD`` come from the heap, and its top is returned only beyond ``TRIM_THRESHOLD`` free.
    Peak memory did not grow in the benchmarks, since freed blocks are reused.

    Idempotent. Returns what was done: ``"set"``, ``"user: <what>"`` (the user's own choice, left
    alone) or ``"unavailable"`` (not glibc)."""
    global _allocator_state
    if _allocator_state is not None:
        return _allocator_state
    chosen = _user_allocator()
    if chosen is not None:
        _allocator_state = f"user: {chosen}"
        return _allocator_state
    import ctypes
    import sys

    _allocator_state = "unavailable"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.gnu_get_libc_version  # noqa: B018 - glibc's own symbol: not musl or another libc
            ok = (libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD)) == 1
                  and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD)) == 1)
        except (OSError, AttributeError):
            ok = False
        if ok:
            _allocator_state = "set"
    return _allocator_state


def resolve_device(spec: str | None = "auto"):  # noqa: ANN201 - torch.device
    """The device a command computes on: ``auto`` (or None) is CUDA when torch sees a GPU, else the CPU;
    ``cpu``, ``cuda`` or ``cuda:N`` as given. Asking for CUDA that torch does not see is a one-line
    :class:`~matgnn.errors.UserError` (as training's ``train.device``)."""
    import torch

    from matgnn.errors import UserError

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: torch sees no CUDA device (this torch build: {torch.__version__}); "
                            "use --device cpu, or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UserError(f"--device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device
