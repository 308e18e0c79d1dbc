"""Matbench, the way users run it: real dft_2d monolayers with their exfoliation energies written in the
exact `matbench_<task>.json.gz` layout (a pandas "split" frame of pymatgen structure dicts) as a source
of `matgnn train`, and `matgnn matbench matbench_jdft2d CONFIG --data FILE` on the five official folds
(636 rows, so Matbench's own ids and folds apply), its results.json.gz read back by the matbench
package's own reader; a file in another layout is refused naming it."""

from __future__ import annotations

import csv
import gzip
import json
import math

import numpy as np

from matgnn.data.sources.matbench import matbench_ids
from tests.conftest import shared_path
from tests.userdata import cli, ok, runs_in, user_error


def _fixture(path, n=40):
    from pymatgen.core import Lattice, Structure

    from matgnn.data.sources import JarvisSource

    rows = []
    for s in JarvisSource("dft_2d", store_dir=str(shared_path("jarvis")), targets=["exfoliation_energy"]):
        if not math.isnan(s.graph_targets["exfoliation_energy"]):
            pmg = Structure(Lattice(s.cell), s.numbers.tolist(), s.positions, coords_are_cartesian=True)
            rows.append([pmg.as_dict(), s.graph_targets["exfoliation_energy"]])
        if len(rows) == n:
            break
    frame = {"index": list(range(n)), "columns": ["structure", "exfoliation_en"], "data": rows}
    with gzip.open(path, "wt") as f:
        json.dump(frame, f)
    return path


def test_matbench_ids_follow_matbench():
    assert matbench_ids("matbench_jdft2d", 636, [0, 9, 635]) == ["mb-jdft2d-001", "mb-jdft2d-010", "mb-jdft2d-636"]
    assert matbench_ids("matbench_mp_gap", 106113, [0])[0] == "mb-mp-gap-000001"


def test_train_on_a_matbench_data_file(tmp_path):
    data = _fixture(tmp_path / "matbench_jdft2d.json.gz")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""source: {{kind: matbench, path: {data}}}
targets: [{{name: exfoliation_en}}]
model: {{name: cgcnn, hidden: 16, layers: 2}}
train: {{epochs: 2, batch_size: 8}}
output_dir: {tmp_path / 'runs'}
""")
    ok(cli("train", str(cfg), env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    (run_dir,) = runs_in(tmp_path / "runs")
    rows = list(csv.DictReader(open(run_dir / "predictions_test.csv")))
    assert rows and all(r["id"].startswith("mb-jdft2d-") and len(r["id"]) == len("mb-jdft2d-01") for r in rows)
    assert all(np.isfinite(float(r["exfoliation_en_pred"])) for r in rows)


def test_a_file_in_another_layout_is_refused(tmp_path):
    bad = tmp_path / "matbench_jdft2d.json.gz"
    with gzip.open(bad, "wt") as f:
        json.dump({"structures": []}, f)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""source: {{kind: matbench, path: {bad}}}
targets: [{{name: exfoliation_en}}]
output_dir: {tmp_path / 'runs'}
""")
    user_error(cli("train", str(cfg), env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}), str(bad),
               "not a Matbench structure-task file")


def test_matbench_command_writes_results_matbench_reads(tmp_path):
    """The five official matbench_jdft2d folds over a file of 636 real dft_2d monolayers in the exact layout
    (not Matbench's own jdft2d data, which needs a download: the same format, ids and folds)."""
    import pytest

    pytest.importorskip("matbench", reason="needs the matbench package (pip install --no-deps matbench==0.6 matminer)")
    from matbench.bench import MatbenchBenchmark

    data = _fixture(tmp_path / "matbench_jdft2d.json.gz", n=636)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: cgcnn, hidden: 16, layers: 2}\ntrain: {epochs: 2, batch_size: 32}\n")
    out = tmp_path / "mb"
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache"), "MATGNN_PROGRESS_SECONDS": "0"}
    # split the work: two folds first (a log, not a terminal: progress comes as plain lines)
    r = ok(cli("matbench", "matbench_jdft2d", str(cfg), "--data", str(data), "--out", str(out), "--folds", "0,1",
               env=env))
    flat = " ".join(r.out.split())
    assert "matbench_jdft2d folds: 2/2 folds" in flat and "folds 0, 1 done, 2, 3, 4 missing" in flat, r.out
    assert "--folds 2,3,4" in flat and not (out / "results.json.gz").exists()
    assert len(runs_in(out / "runs")) == 2
    # the rest: folds 0 and 1 are kept (same config and data), 2..4 run, the submission written
    (tmp_path / "refs.bib").write_text("@article{xie2018, title={Crystal Graph Convolutional Neural Networks}}\n")
    r = ok(cli("matbench", "matbench_jdft2d", str(cfg), "--data", str(data), "--out", str(out), "--authors",
               "A. Author, B. Author", "--bibtex-refs", str(tmp_path / "refs.bib"), "--notes", "two epochs", env=env))
    flat = " ".join(r.out.split())
    assert "folds 0, 1 finished before" in flat and "running 2, 3, 4" in flat and "matbench_jdft2d: MAE" in flat
    assert len(runs_in(out / "runs")) == 5
    # another config into the same folder: refused, nothing run
    r = cli("matbench", "matbench_jdft2d", str(cfg), "--data", str(data), "--out", str(out), "--set",
            "train.epochs=1", env=env)
    user_error(r, "fold_0.json", "another config or data file")
    assert len(runs_in(out / "runs")) == 5
    user_error(cli("matbench", "matbench_jdft2d", str(cfg), "--data", str(data), "--out", str(out), "--folds", "7"),
               "--folds '7'", "0, 1, 2, 3, 4")
    check_matbench_submission(out / "submission")
    mb = MatbenchBenchmark.from_dict(json.loads(gzip.decompress((out / "submission" / "results.json.gz").read_bytes())))
    task = mb.tasks_map["matbench_jdft2d"]
    assert mb.is_valid and all(task.is_recorded.values())  # its own checks: every fold, every test id
    assert 0 < task.scores["mae"]["mean"] < 200
    info = json.loads((out / "submission" / "info.json").read_text())
    assert info["algorithm"] == "matgnn-cgcnn" and len(info["folds"]) == 5
    assert info["authors"] == "A. Author, B. Author" and "xie2018" in info["bibtex_refs"] and info["notes"] == "two epochs"
    script = (out / "submission" / "matgnn_matbench_jdft2d.py").read_text()
    compile(script, "matgnn_matbench_jdft2d.py", "exec")  # a valid script (it is never run here)
    assert "'matbench_jdft2d'" in script and (out / "submission" / "config.yaml").is_file()


def check_matbench_submission(folder):
    """Every check of the Matbench repository's ``scripts/test_submission.py`` (what its CI runs on each
    submission), applied to one submission folder: ``test_dir_structure_correct`` (a folder, no
    ``.ipynb_checkpoints``) and ``test_submissions`` (``info.json`` with ``notes`` and non-None ``authors``,
    ``algorithm``, ``algorithm_long``, ``bibtex_refs``, ``requirements``; ``results.json.gz`` read the way its
    ``MatbenchBenchmark.from_file`` reads a ``.gz`` — gzip, then JSON — and valid; at least one ``.py`` or
    ``.ipynb``; no file but the results over 10 MB)."""
    import glob
    import os

    from matbench.bench import MatbenchBenchmark

    assert folder.is_dir() and not (folder / ".ipynb_checkpoints").exists()
    info = json.loads((folder / "info.json").read_text())
    assert "notes" in info
    for key in ("authors", "algorithm", "algorithm_long", "bibtex_refs", "requirements"):
        assert info.get(key) is not None, key
    with gzip.open(folder / "results.json.gz", "rb") as f:  # fails on plain JSON (BadGzipFile)
        assert MatbenchBenchmark.from_dict(json.loads(f.read().decode("utf-8"))).is_valid
    assert glob.glob(str(folder / "*.ipynb")) + glob.glob(str(folder / "*.py"))
    for name in os.listdir(folder):
        if name != "results.json.gz":
            assert os.stat(folder / name).st_size / 1e6 <= 10, name


def test_matbench_command_without_data_says_where_it_looked(tmp_path):
    import pytest

    pytest.importorskip("matbench", reason="needs the matbench package")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {epochs: 1}\n")
    user_error(cli("matbench", "matbench_jdft2d", str(cfg), env={"MATMINER_DATA": str(tmp_path)}),
               "matbench_jdft2d.json.gz", "--data")
    user_error(cli("matbench", "matbench_nosuchtask", str(cfg), "--data", str(cfg)), "not a Matbench v0.1 task")
