"""A Matbench v0.1 data file as a source, the way users train on one: real dft_2d monolayers with their
exfoliation energies written in the exact `matbench_<task>.json.gz` layout (a pandas "split" frame of
pymatgen structure dicts), `matgnn train` with `source: {kind: matbench, ...}`, Matbench's ids in the
run's predictions; a file in another layout is refused naming it."""

from __future__ import annotations

import csv
import gzip
import json
import math

import numpy as np

from matgnn.data.sources.matbench import matbench_ids
from tests.conftest import shared_path
from tests.userdata import ok, run, runs_in, user_error


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
    ok(run("train", str(cfg), env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
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
    user_error(run("train", str(cfg), env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}), str(bad),
               "not a Matbench structure-task file")
