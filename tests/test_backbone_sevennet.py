"""`model: {name: sevennet}` the way users run it: our MLP and heads on SevenNet-0's frozen 128
invariant features per atom (weights from the installed sevenn wheel, nothing downloaded), cached
once per structure, with predict, evaluate and a reload that checks the backbone version."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.userdata import cif_folder, cli, ok, run_yaml, runs_in, with_model

pytest.importorskip("sevenn", reason="model 'sevennet' needs the sevenn package (pip install 'matgnn[foundation]')")


def test_sevennet_backbone_trains_predicts_and_caches_its_features(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    cache = tmp_path / "cache"
    env = {"MATGNN_CACHE_DIR": str(cache)}
    cfg = with_model(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=3),
                     "{name: sevennet, hidden: 16, layers: 2}")
    ok(cli("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["class"] == "SevenNetBackbone" and info["init_args"]["backbone_version"].endswith("-7net-0")
    assert np.isfinite(json.loads((run_dir / "metrics.json").read_text())["test.lattice.mae"])
    (folder_,) = list((cache / "embeddings").glob("sevennet-*"))
    files = sorted(folder_.rglob("*.npy"))
    assert len(files) == 12 and np.load(files[0]).shape[1] == 128
    stamps = [f.stat().st_mtime_ns for f in files]
    out = tmp_path / "p.csv"
    ok(cli("predict", str(run_dir), str(folder), "--out", str(out), env=env))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and all(np.isfinite(float(r["lattice"])) for r in rows)
    assert [f.stat().st_mtime_ns for f in sorted(folder_.rglob("*.npy"))] == stamps  # nothing computed again
    ok(cli("evaluate", str(run_dir), env=env))
    # the README's `matgnn baseline xgboost my_run.yaml --features sevennet`: the same cached features
    ok(cli("baseline", "xgboost", str(cfg), "--features", "sevennet", "--set", f"output_dir={tmp_path / 'b'}", env=env))
    (b,) = runs_in(tmp_path / "b")
    assert np.isfinite(json.loads((b / "metrics.json").read_text())["test.lattice.mae"])
    assert [f.stat().st_mtime_ns for f in sorted(folder_.rglob("*.npy"))] == stamps
    # a model trained on other SevenNet features is refused with a message, not silently reused
    info["init_args"]["backbone_version"] = "0.0.1-7net-0"
    (run_dir / "model" / "model.json").write_text(json.dumps(info))
    r = cli("predict", str(run_dir), str(folder), "--out", str(tmp_path / "q.csv"), env=env)
    assert r.returncode != 0 and "SevenNet 0.0.1-7net-0" in r.out


def test_shipped_sevennet_delta_gap_model_on_the_users_monolayer(tmp_path):
    """`matgnn predict bandgap-2d-sevennet FILE`: the shipped delta model (a 2DMatPedia PBE-gap base and a
    dft_2d correction, both on SevenNet-0 features) predicts a MoS2 monolayer's OptB88vdW gap; its card
    names the backbone, its licence, the base and its lineage."""
    from ase.build import mx2
    from ase.io import write

    write(tmp_path / "mos2.cif", mx2("MoS2", vacuum=8.0))
    r = ok(cli("predict", "bandgap-2d-sevennet", str(tmp_path / "mos2.cif"), "--out", str(tmp_path / "p.csv"),
               env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    (row,) = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert 0.5 < float(row["optb88vdw_bandgap"]) < 3.0, r.out  # MoS2 monolayer: ~1.7 eV in OptB88vdW
    card = " ".join(ok(cli("models", "bandgap-2d-sevennet")).out.split())
    assert "SevenNet-0" in card and "MIT licence" in card and "Delta learning" in card and "2DMatPedia" in card
    # both shipped 2D gap models as one ensemble (CHGNet and SevenNet features in one batch): the mean and σ
    ok(cli("predict", "bandgap-2d-chgnet,bandgap-2d-sevennet", str(tmp_path / "mos2.cif"), "--out",
           str(tmp_path / "both.csv"), env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    (both,) = list(csv.DictReader(open(tmp_path / "both.csv")))
    assert 0.5 < float(both["optb88vdw_bandgap"]) < 3.0 and float(both["optb88vdw_bandgap_std"]) >= 0


def test_ensemble_of_a_chgnet_and_a_sevennet_model(tmp_path):
    """`matgnn ensemble --combine` of a CHGNet run and a SevenNet run on one split (the mean of both backbones'
    models, as the README's 2D gap recipes use), then `predict` with σ. Both backbones' features travel in one
    batch: they used to share one batch field, so whichever came last overwrote the other and the CHGNet member
    crashed with a matrix-shape error (the same for a delta model or reference fallback mixing them)."""
    folder = cif_folder(tmp_path / "cifs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=2)
    for name in ("chgnet", "sevennet"):
        ok(cli("train", str(cfg), "--set", f"model.name={name}", "--set", "model.hidden=16", env=env))
    runs = runs_in(tmp_path / "runs")
    classes = sorted(json.loads((r / "model" / "model.json").read_text())["class"] for r in runs)
    assert classes == ["CHGNetBackbone", "SevenNetBackbone"]
    ens = tmp_path / "ens"
    ok(cli("ensemble", "--combine", str(runs[0]), "--combine", str(runs[1]), "--out", str(ens), env=env))
    out = tmp_path / "p.csv"
    r = ok(cli("predict", str(ens), str(folder), "--out", str(out), env=env))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and all(np.isfinite(float(row["lattice"])) for row in rows), r.out
    assert any(float(row["lattice_std"]) > 0 for row in rows)


def test_shipped_2d_gap_ensemble_gives_a_gap_and_its_uncertainty(tmp_path):
    """`matgnn predict bandgap-2d-ensemble FILE`: the shipped mean of a SevenNet and a CHGNet delta model gives a
    MoS2 monolayer's OptB88vdW gap with a recalibrated σ; its card names both backbones, their licences, and each
    member's 2DMatPedia base."""
    pytest.importorskip("chgnet", reason="bandgap-2d-ensemble's CHGNet member needs the chgnet package")
    from ase.build import mx2
    from ase.io import write

    write(tmp_path / "mos2.cif", mx2("MoS2", vacuum=8.0))
    r = ok(cli("predict", "bandgap-2d-ensemble", str(tmp_path / "mos2.cif"), "--out", str(tmp_path / "p.csv"),
               env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    (row,) = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert 0.5 < float(row["optb88vdw_bandgap"]) < 3.0 and float(row["optb88vdw_bandgap_std"]) > 0, r.out
    card = " ".join(ok(cli("models", "bandgap-2d-ensemble")).out.split())
    for words in ("SevenNet-0", "CHGNet 0.3.0", "MIT licence", "modified BSD licence", "Delta learning",
                  "2DMatPedia", "test.optb88vdw_bandgap.mae"):
        assert words in card, words
