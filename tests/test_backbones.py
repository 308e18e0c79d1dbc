"""Pretrained backbones as models, the way users run them: `model: {name: chgnet}` trains our MLP and
heads on CHGNet 0.3.0's frozen features (weights from the installed wheel, nothing downloaded), the
features are computed once per structure and cached, predict/evaluate/ensembles work unchanged, and a
structure CHGNet refuses is named, never silently dropped."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.io import write

from tests.userdata import cif_folder, magmom_jsonl, ok, run, run_yaml, runs_in

pytest.importorskip("chgnet", reason="model 'chgnet' needs the chgnet package (pip install 'matgnn[foundation]')")

MODEL = "{name: chgnet, hidden: 16, layers: 2}"


def _with_model(cfg_path, model=MODEL):
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["model"] = yaml.safe_load(model)
    cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg_path


def _embeddings(cache):
    return sorted((cache / "embeddings" / "chgnet-0.3.0").rglob("*.npy"))


def test_chgnet_backbone_trains_predicts_and_caches_its_features(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    cache = tmp_path / "cache"
    env = {"MATGNN_CACHE_DIR": str(cache)}
    cfg = _with_model(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=3))
    ok(run("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["class"] == "CHGNetBackbone" and info["init_args"]["backbone_version"] == "0.3.0"
    assert np.isfinite(json.loads((run_dir / "metrics.json").read_text())["test.lattice.mae"])
    files = _embeddings(cache)
    assert len(files) == 12  # one per structure
    stamps = [f.stat().st_mtime_ns for f in files]
    ok(run("train", str(cfg), "--set", "model.hidden=8", env=env))  # a second model: nothing computed again
    assert [f.stat().st_mtime_ns for f in _embeddings(cache)] == stamps
    out = tmp_path / "p.csv"
    ok(run("predict", str(run_dir), str(folder), "--out", str(out), env=env))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and all(np.isfinite(float(r["lattice"])) for r in rows)
    ok(run("evaluate", str(run_dir), env=env))


def test_chgnet_backbone_node_head(tmp_path):
    data = magmom_jsonl(tmp_path / "m.jsonl.gz")
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"""source: {{kind: magmoms, path: {data}}}
targets: [{{name: magmom, level: node}}]
model: {MODEL}
train: {{epochs: 2, batch_size: 2}}
split: {{kind: random, train: 0.5, val: 0.25}}
output_dir: {tmp_path / 'runs'}
""")
    ok(run("train", str(cfg), env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    (run_dir,) = runs_in(tmp_path / "runs")
    atoms = list(csv.DictReader(open(run_dir / "predictions_test_atoms.csv")))
    assert atoms and all(np.isfinite(float(a["magmom_pred"])) for a in atoms)


def test_a_structure_chgnet_refuses_is_named(tmp_path):
    """One atom in a 7 Å cubic cell has its neighbours (its own images) at 7 Å: within our 8 Å graph,
    outside CHGNet's 6 Å one, so CHGNet refuses it. The prediction still comes (from zero backbone
    features) and the structure is named on stderr."""
    folder = cif_folder(tmp_path / "cifs")
    cache = tmp_path / "cache"
    env = {"MATGNN_CACHE_DIR": str(cache)}
    cfg = _with_model(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=2))
    ok(run("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    new = tmp_path / "new"
    new.mkdir()
    write(new / "lonely.cif", Atoms("Cu", positions=[[0, 0, 0]], cell=[7, 7, 7], pbc=True))
    write(new / "cu.cif", Atoms("Cu4", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
                                cell=[3.6] * 3, pbc=True))
    r = ok(run("predict", str(run_dir), str(new), "--out", str(tmp_path / "p.csv"), env=env))
    assert "lonely" in r.out and "rejected by CHGNet" in r.out
    assert len(list(csv.DictReader(open(tmp_path / "p.csv")))) == 2
