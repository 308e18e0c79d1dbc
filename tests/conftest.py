"""Shared fixtures. Tests that need the real DFT data skip (with the reason) when
``../shared/data`` is absent, as in a user's fresh clone; CI has it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MATGNN_SHARED_DATA") or ROOT.parent / "shared" / "data")  # empty: unset


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs the real data at {p} (../shared/data is absent, as in a fresh clone)")
    return p


@pytest.fixture
def jarvis_dir() -> str:
    return str(shared_path("jarvis"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.cache from tests."""
    monkeypatch.setenv("MATGNN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "matgnn-cache"))


def pytest_sessionstart(session) -> None:  # noqa: ANN001
    """Build the fused CPU kernel once before the tests (about a minute on a fresh machine; `make setup` does
    it too), so no subprocess test pays the build inside its own time limit."""
    from matgnn.models import kernels

    kernels.extension()


#: what makes a test slow, read from its source: a process of its own (the installed executable, torchrun), a
#: training run, or a pretrained backbone
_SLOW_SIGNS = ("run(", "_torchrun(", "train(", '"train"', "chgnet", "sevennet", "Popen(", "matbench")


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """Markers applied automatically, so no one has to remember them: ``slow`` on every test whose source (or
    one of its module's fixtures it uses) starts a process, trains or loads a backbone. ``make test`` runs
    everything; ``make test-fast`` (``-m "not slow"``) the rest, for the edit loop."""
    import inspect

    slow = pytest.mark.slow
    cache: dict[object, str] = {}

    def source(obj: object) -> str:
        if obj not in cache:
            try:
                cache[obj] = inspect.getsource(obj)
            except (OSError, TypeError):
                cache[obj] = ""
        return cache[obj]

    for item in items:
        fn = getattr(item, "function", None)
        if fn is None:
            continue
        text = source(fn)
        for name in getattr(item, "fixturenames", ()):
            fixture = getattr(item.module, name, None)
            if fixture is not None and callable(fixture):
                text += source(getattr(fixture, "__wrapped__", fixture))
        if any(sign in text for sign in _SLOW_SIGNS):
            item.add_marker(slow)
