"""Shared helpers: every benchmark writes benchmarks/results/<name>.json in the shape of
../shared/BENCHMARKS.md."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("MATGNN_SHARED_DATA") or ROOT.parent / "shared" / "data")  # empty: unset
#: what a measured field holds when it could not be measured (never a made-up default)
UNKNOWN = "unknown"


def hardware() -> str:
    from matgnn.runtime import cpu_model

    model = cpu_model()
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024**2:.0f} GB RAM"
    except (OSError, ValueError):
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{os.cpu_count()} CPU cores ({model}){mem}, {gpu}"


#: what a benchmark's numbers depend on: a change here (committed or not) means a rerun
MEASURED_PATHS = ("src", "benchmarks", "tools", "pyproject.toml")


def dirty_paths() -> list[str]:
    """Uncommitted changes (and untracked files) under the measured paths, results excluded."""
    out = subprocess.check_output(["git", "status", "--porcelain", "--", *MEASURED_PATHS, ":!benchmarks/results",
                                   ":!benchmarks/runs"], cwd=ROOT, text=True)
    return [line[3:] for line in out.splitlines() if line.strip()]


#: a copy of a clean commit without its .git (the GPU machine gets the working tree only): the sender
#: names the commit in $MATGNN_BENCH_COMMIT after checking the tree was clean; the results say so
SENT_COMMIT = os.environ.get("MATGNN_BENCH_COMMIT")


def _in_git_checkout() -> bool:
    try:
        subprocess.check_output(["git", "rev-parse", "--git-dir"], cwd=ROOT, stderr=subprocess.DEVNULL)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


#: $MATGNN_BENCH_IGNORE_GIT (set by gpu_checks.sh on the device machine, whose copy of .git can be older than
#: the working tree sent with it): treat the tree as a copy of $MATGNN_BENCH_COMMIT
IN_CHECKOUT = not (SENT_COMMIT and os.environ.get("MATGNN_BENCH_IGNORE_GIT")) and _in_git_checkout()


def git_commit() -> str:
    """HEAD's sha; outside a git checkout the sent commit ($MATGNN_BENCH_COMMIT), else "unknown"."""
    if not IN_CHECKOUT:
        return SENT_COMMIT or "unknown"
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


#: the code a benchmark measures is the code at its start (edits made while it runs do not count)
COMMIT_AT_START = git_commit()
if not IN_CHECKOUT and SENT_COMMIT:
    DIRTY_AT_START: list[str] = []
else:
    try:
        DIRTY_AT_START = dirty_paths()
    except (OSError, subprocess.CalledProcessError):
        DIRTY_AT_START = ["(git status failed)"]


def refuse_dirty_tree() -> None:
    """Results come only from a clean commit: exit with the changed paths otherwise."""
    if DIRTY_AT_START:
        raise SystemExit("refusing to run a benchmark on a dirty tree (commit first; results name the commit "
                         "they measured): " + ", ".join(DIRTY_AT_START[:10]))


if Path(sys.argv[0]).resolve().parent == ROOT / "benchmarks":  # run as a benchmark script: check before the work
    refuse_dirty_tree()


@contextlib.contextmanager
def kernels(switch: str):
    """``MATGNN_KERNELS=switch`` (``on``/``off``) inside the block; the caller's own setting (or its absence) after."""
    before = os.environ.get("MATGNN_KERNELS")
    os.environ["MATGNN_KERNELS"] = switch
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MATGNN_KERNELS", None)
        else:
            os.environ["MATGNN_KERNELS"] = before


def target(goal: float, direction: str, value: float) -> dict[str, Any]:
    met = value >= goal if direction == ">=" else value <= goal
    return {"goal": goal, "direction": direction, "value": value, "met": bool(met)}


def missed_targets(targets: dict[str, dict], reasons: Callable[[str], tuple[str, str]]) -> dict[str, dict]:
    """Every missed target of ``targets``: by how much (relative to its goal), why, and what would close it
    (``reasons(key)`` → ``(why, what_would_close_it)``)."""
    out = {}
    for key, t in targets.items():
        if not t["met"]:
            why, close = reasons(key)
            out[key] = {"by": round(abs(t["value"] / t["goal"] - 1), 4) if t["goal"] else None,
                        "why": why, "what_would_close_it": close}
    return out


def write_result(name: str, started: float, data: dict, metrics: dict, anchors: dict, targets: dict,
                 extra: dict | None = None) -> Path:
    refuse_dirty_tree()
    if COMMIT_AT_START != git_commit():
        raise SystemExit(f"refusing to write {name}.json: HEAD moved from {COMMIT_AT_START} while it ran")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": COMMIT_AT_START,
        "command": "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                                         else sys.argv[0], *sys.argv[1:]]),
        "hardware": hardware(),
        "wall_seconds": round(time.time() - started, 1),
        "data": data,
        "metrics": metrics,
        "anchors": anchors,
        "targets": targets,
    }
    if not IN_CHECKOUT and SENT_COMMIT:
        out["tree"] = (f"a copy of commit {SENT_COMMIT} without .git, sent to the device machine (the sender checked "
                       "the tree was clean); $MATGNN_BENCH_COMMIT names it")
    if extra:
        out.update(extra)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


class PeakRSS:
    """Peak summed RSS of a process and its children, sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        import psutil

        self.proc, self.every, self.peak, self._stop = psutil.Process(pid), every, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop:
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(self.every)

    def stop(self) -> float:
        self._stop = True
        self.thread.join()
        return self.peak / 2**30
