"""HTML run reports and EDA reports, rendered in headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matgnn.cli.main import app
from matgnn.commands.report import SECTIONS
from matgnn.config import RunConfig
from matgnn.training.run import train

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, shot: Path) -> str:
    """The DOM after load (scripts run) and a full-page screenshot, from headless Chromium."""
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium package for headless rendering (apt-get install chromium)")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    subprocess.run(flags + ["--window-size=1200,3000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, "no screenshot"
    return dom


def test_run_report_renders_completely(tmp_path):
    cfg = RunConfig.model_validate({
        "source": {"kind": "emt", "n_structures": 60}, "graphs": {"cutoff": 5.0},
        "targets": [{"name": "mixing_energy"}, {"name": "atom_energy", "level": "node", "baseline": "element_mean"}],
        "model": {"hidden": 16, "layers": 2, "head_hidden": 16},
        "train": {"epochs": 3, "batch_size": 8, "threads": 1, "tensorboard": False},
        "evaluation": {"exclude_elements": ["Ni"]},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})
    run = train(cfg, progress=False)
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    page = run / "report.html"
    html = page.read_text()
    assert "src=\"http" not in html and "<link" not in html  # self-contained
    dom = render(page, tmp_path / "report.png")
    for section in SECTIONS:
        assert f'id="{section}"' in dom, section
    # learning curve, validation MAE, 2 parity plots, 2 periodic-table heatmaps; all decoded
    n_images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    assert n_images >= 6
    assert 'data-images-ok="true"' in dom
    assert "mixing_energy" in dom and "atom_energy" in dom and "error by |label| bin" in dom
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "not a run folder" in " ".join(r.output.split())


def test_data_report_figures(tmp_path):
    out = tmp_path / "eda"
    r = runner.invoke(app, ["data", "report", "emt:50", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("hist_mixing_energy.png", "hist_atom_energy.png", "groups.png", "elements.png", "atoms.png",
                 "box_mixing_energy.png", "data_info.json", "skipped.csv"):
        assert (out / name).is_file(), name
    dom = render(out / "index.html", tmp_path / "eda.png")
    assert dom.count("<img") == 6 and "50 usable of 50 entries" in dom
