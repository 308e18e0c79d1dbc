"""Long steps show progress in a log (stderr not a terminal): one plain line every
``$MATGNN_PROGRESS_SECONDS`` seconds (0 here: every step) and one at the end, with the count, the total
where it is known, the rate and the time left — backbone features, graph builds (with the total of a JSON
Lines source), prediction, baselines' fits, ensembles' members, sweeps' points. Matbench folds are checked
in ``tests/test_matbench_source.py``; the terminal bar is rich's own."""

from __future__ import annotations

import re

import pytest

from tests.userdata import cif_folder, cli, magmom_jsonl, ok, run_yaml

LOG = {"MATGNN_PROGRESS_SECONDS": "0"}


def _env(tmp_path):
    return {**LOG, "MATGNN_CACHE_DIR": str(tmp_path / "cache")}


def _config(tmp_path, fmt="cif"):
    folder = cif_folder(tmp_path / "data", fmt=fmt)
    return folder, run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")


def test_graph_build_of_a_json_lines_source_has_its_total(tmp_path):
    data = magmom_jsonl(tmp_path / "m.jsonl.gz", n=6)
    r = ok(cli("graphs", "build", str(data), "--cache-dir", str(tmp_path / "cache"), env=LOG))
    assert re.search(r"graphs \S+: 6/6 structures in [\d.]+ s \([\d.e+]+/s\)", r.out), r.out


def test_prediction_progress_and_rate(tmp_path):
    folder, _ = _config(tmp_path, fmt="vasp")
    r = ok(cli("predict", "bandgap-2d", str(folder), "--out", str(tmp_path / "p.csv"), env=_env(tmp_path)))
    assert re.search(r"predict: 5/12 structures \([\d.e+]+/s, \d+:\d\d left\)", r.out), r.out
    assert re.search(r"12 predictions → \S+ \([\d.e+]+ structures/s\)", r.out), r.out


def test_xgboost_fit_progress(tmp_path):
    pytest.importorskip("xgboost")
    _, cfg = _config(tmp_path)
    r = ok(cli("baseline", "xgboost", str(cfg), env=_env(tmp_path)))
    assert re.search(r"xgboost lattice on \d+ rows: \d+/800 rounds in [\d.]+ s", r.out), r.out


def test_backbone_feature_progress(tmp_path):
    pytest.importorskip("chgnet")
    _, cfg = _config(tmp_path)
    r = ok(cli("baseline", "linear", str(cfg), "--features", "chgnet", env=_env(tmp_path)))
    assert re.search(r"chgnet features: 12/12 structures in [\d.]+ s", r.out), r.out


def test_ensemble_and_sweep_progress(tmp_path):
    _, cfg = _config(tmp_path)
    r = ok(cli("ensemble", str(cfg), "--members", "2", env=_env(tmp_path)))
    assert "ensemble: 1/2 members" in r.out and re.search(r"ensemble: 2/2 members in [\d.]+ s", r.out), r.out
    r = ok(cli("sweep", str(cfg), "--grid", "model.hidden=8,16", env=_env(tmp_path)))
    assert re.search(r"sweep: 2/2 points in [\d.]+ s", r.out), r.out


def test_a_target_name_with_a_space_names_safe_files_and_the_summary_has_a_rate(tmp_path):
    folder, cfg = _config(tmp_path)
    (folder / "id_prop.csv").write_text((folder / "id_prop.csv").read_text().replace("id,lattice", "id,lattice a"))
    cfg.write_text(cfg.read_text().replace("name: lattice,", "name: lattice a,"))
    r = ok(cli("train", str(cfg), env=_env(tmp_path)))
    assert re.search(r"done in \d+ s \([\d.e+]+ training structures/s\)", r.out), r.out
    (run_dir,) = sorted((tmp_path / "runs").iterdir())
    names = sorted(p.name for p in run_dir.iterdir())
    assert "parity_lattice_a.png" in names and not [n for n in names if " " in n], names
