"""Shared fixtures. Tests that need the real DFT data skip (with the reason) when
``../shared/data`` is absent, as in a user's fresh clone; CI has it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MATGNN_SHARED_DATA", ROOT.parent / "shared" / "data"))


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
