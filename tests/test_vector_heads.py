"""Vector-valued graph heads (``components``): several targets predicted as one output, each
component standardised on its own, with its own metrics and prediction columns — driven through
the installed ``matgnn`` executable on a CIF folder whose ``id_prop.csv`` has two label columns,
and on the real JARVIS dft_2d gaps."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from matgnn.config import HeadConfig
from matgnn.models import build_model
from tests.conftest import shared_path
from tests.userdata import cif_folder, cli, ok, runs_in, user_error


def _two_label_folder(folder):
    """The user's CIF folder, its id_prop.csv with a second label (the volume per atom)."""
    cif_folder(folder)
    rows = list(csv.reader(open(folder / "id_prop.csv")))
    out = ["id,lattice,volume"] + [f"{sid},{a},{float(a) ** 3 / 4:.4f}" for sid, a in rows[1:]]
    (folder / "id_prop.csv").write_text("\n".join(out) + "\n")
    return folder


def _config(path, source, out, components="[lattice, volume]", epochs=3):
    path.write_text(f"""source: {source}
targets:
  - {{name: cell, components: {components}}}
model: {{name: cgcnn, hidden: 16, layers: 2}}
train: {{epochs: {epochs}, batch_size: 4, checkpoint_every: 0}}
split: {{kind: random, train: 0.6, val: 0.2}}
output_dir: {out}
""")
    return path


def test_vector_head_trains_predicts_and_evaluates_from_the_cli(tmp_path):
    folder = _two_label_folder(tmp_path / "cifs")
    cfg = _config(tmp_path / "vec.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    r = ok(cli("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    assert "test cell.lattice: MAE" in " ".join(r.out.split()) and "test cell.volume: MAE" in " ".join(r.out.split())
    m = json.loads((run_dir / "metrics.json").read_text())
    for comp in ("lattice", "volume"):
        assert m[f"test.cell.{comp}.count"] > 0 and math.isfinite(m[f"test.cell.{comp}.mae"])
        assert (run_dir / f"parity_cell.{comp}.png").is_file()
    assert m["test.cell.count"] == m["test.cell.lattice.count"] + m["test.cell.volume.count"]
    from matgnn.artifacts import RunFolder

    scores = RunFolder(run_dir).scores("test")  # the same numbers, structured as written (not parsed back)
    assert scores["cell.volume"]["mae"] == m["test.cell.volume.mae"] and set(scores) == {"cell", "cell.lattice",
                                                                                         "cell.volume"}
    history = next(csv.reader(open(run_dir / "history.csv")))  # validation MAE per component, every epoch
    assert {"val_mae.cell", "val_mae.cell.lattice", "val_mae.cell.volume"} <= set(history)
    header = next(csv.reader(open(run_dir / "predictions_test.csv")))
    assert header == ["id", "cell.lattice_true", "cell.lattice_pred", "cell.volume_true", "cell.volume_pred"]
    # each component is standardised on its own (volumes per atom are ~4x the lattice constants)
    model_info = json.loads((run_dir / "model" / "model.json").read_text())
    assert model_info["init_args"]["heads"][0]["components"] == ["lattice", "volume"]
    state = torch.load(run_dir / "model" / "state.pt", weights_only=True)
    mean = state["targets.0.standardize.mean"]
    assert mean.shape == (2,) and mean[1] > 3 * mean[0]

    out = tmp_path / "pred.csv"
    ok(cli("predict", str(run_dir), str(folder), "--out", str(out), "--sort-by", "-cell.volume", env=env))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and {"cell.lattice", "cell.volume"} <= set(rows[0])
    vols = [float(r["cell.volume"]) for r in rows]
    assert vols == sorted(vols, reverse=True)
    ok(cli("evaluate", str(run_dir), env=env))
    ev = json.loads((run_dir / "evaluation" / "metrics_test.json").read_text())
    assert ev["test.cell.volume.mae"] == pytest.approx(m["test.cell.volume.mae"], rel=1e-5)


def test_a_missing_component_is_a_user_error_naming_it(tmp_path):
    folder = _two_label_folder(tmp_path / "cifs")
    cfg = _config(tmp_path / "vec.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs",
                  components="[lattice, density]")
    user_error(cli("train", str(cfg), env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}), "density", "cell")
    assert runs_in(tmp_path / "runs") == []


def test_components_are_for_graph_heads_with_distinct_names():
    with pytest.raises(ValueError, match="graph-level"):
        HeadConfig(name="m", level="node", components=["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        HeadConfig(name="m", components=["a", "a"])


def test_vector_head_shapes_and_old_scalar_layout():
    heads = [HeadConfig(name="gap").spec(), HeadConfig(name="v", components=["a", "b", "c"]).spec()]
    model = build_model("cgcnn", heads, cutoff=6.0, hidden=8, layers=1)
    assert [t.standardize.mean.shape for t in model.targets] == [(1,), (3,)]  # one per value of each head
    model.set_normalization(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.ones(4))
    assert float(model.head_mean(0)) == 1.0 and model.head_mean(1).tolist() == [2.0, 3.0, 4.0]


def test_vector_head_on_jarvis_dft2d_gaps(tmp_path):
    """Three JARVIS gap columns (OptB88vdW, TBmBJ, HSE: the last two missing for most) as one head."""
    store = shared_path("jarvis")
    cfg = _config(tmp_path / "vec.yaml", f"{{kind: jarvis, dataset: dft_2d, store_dir: {store}}}", tmp_path / "runs",
                  components="[optb88vdw_bandgap, mbj_bandgap]", epochs=2)
    ok(cli("train", str(cfg)))
    (run_dir,) = runs_in(tmp_path / "runs")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["test.cell.optb88vdw_bandgap.count"] > m["test.cell.mbj_bandgap.count"] > 0
    table = np.genfromtxt(run_dir / "predictions_test.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert np.isnan(table["cellmbj_bandgap_true"]).any()  # missing labels stay missing, and are not scored
