"""Pretrained backbones as models, the way users run them: `model: {name: chgnet}` trains our MLP and
heads on CHGNet 0.3.0's frozen features (weights from the installed wheel, nothing downloaded), the
features are computed once per structure and cached, predict/evaluate/ensembles work unchanged, and a
structure CHGNet refuses is named, never silently dropped."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from tests.userdata import (
    cif_folder,
    cli,
    ok,
    run_yaml,
    runs_in,
    user_error,
    with_model,
)

pytest.importorskip("chgnet", reason="model 'chgnet' needs the chgnet package (pip install 'matgnn[foundation]')")

MODEL = "{name: chgnet, hidden: 16, layers: 2}"


def _embeddings(cache):
    return sorted((cache / "embeddings" / "chgnet-0.3.0").rglob("*.npy"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The user's CIF folder and one `matgnn train` with the chgnet model on it."""
    tmp = tmp_path_factory.mktemp("chgnet")
    folder = cif_folder(tmp / "cifs")
    cache = tmp / "cache"
    env = {"MATGNN_CACHE_DIR": str(cache)}
    cfg = with_model(run_yaml(tmp / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp / "runs", epochs=3), MODEL)
    ok(cli("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp / "runs")
    return {"tmp": tmp, "folder": folder, "cache": cache, "env": env, "cfg": cfg, "run": run_dir}


def test_chgnet_backbone_trains_predicts_and_caches_its_features(trained):
    tmp_path, folder, cache, env, cfg, run_dir = (trained[k] for k in ("tmp", "folder", "cache", "env", "cfg", "run"))
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["class"] == "CHGNetBackbone" and info["init_args"]["backbone_version"] == "0.3.0"
    assert np.isfinite(json.loads((run_dir / "metrics.json").read_text())["test.lattice.mae"])
    files = _embeddings(cache)
    assert len(files) == 12  # one per structure
    stamps = [f.stat().st_mtime_ns for f in files]
    ok(cli("train", str(cfg), "--set", "model.hidden=8", env=env))  # a second model: nothing computed again
    assert [f.stat().st_mtime_ns for f in _embeddings(cache)] == stamps
    out = tmp_path / "p.csv"
    ok(cli("predict", str(run_dir), str(folder), "--out", str(out), env=env))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and all(np.isfinite(float(r["lattice"])) for r in rows)
    ok(cli("evaluate", str(run_dir), env=env))


def test_a_structure_chgnet_refuses_gets_no_prediction_and_is_listed(trained, tmp_path):
    """One atom in a 7 Å cubic cell has its neighbours (its own images) at 7 Å: within our 8 Å graph,
    outside CHGNet's 6 Å one, so CHGNet refuses it. It gets no answer from zero features: it is listed in
    <out>_skipped.csv with CHGNet's reason and counted; the other structure is predicted."""
    env, run_dir = trained["env"], trained["run"]
    new = tmp_path / "new"
    new.mkdir()
    write(new / "lonely.cif", Atoms("Cu", positions=[[0, 0, 0]], cell=[7, 7, 7], pbc=True))
    write(new / "cu.cif", Atoms("Cu4", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
                                cell=[3.6] * 3, pbc=True))
    r = ok(cli("predict", str(run_dir), str(new), "--out", str(tmp_path / "p.csv"), env=env))
    assert "lonely" in r.out and "refused by CHGNet" in r.out and "1 skipped" in r.out, r.out
    first = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [row["id"] for row in first] == ["cu"]
    (skipped,) = list(csv.DictReader(open(tmp_path / "p_skipped.csv")))
    assert skipped["id"] == "lonely" and skipped["code"] == "backbone_refused" and "isolated" in skipped["detail"]
    # the refusal is remembered with CHGNet's reason beside the cached features: a later process does not run
    # CHGNet on it again, names it again and answers the same
    (marker,) = (trained["cache"] / "embeddings" / "chgnet-0.3.0").rglob("*.refused")
    assert json.loads(marker.read_text())["id"] == "lonely"
    r = ok(cli("predict", str(run_dir), str(new), "--out", str(tmp_path / "q.csv"), env=env))
    assert "lonely" in r.out and "refused by CHGNet" in r.out
    assert list(csv.DictReader(open(tmp_path / "q.csv"))) == first
    # all refused: one line, exit 2, nothing written
    r = cli("predict", str(run_dir), str(new / "lonely.cif"), "--out", str(tmp_path / "z.csv"), env=env)
    user_error(r, "none of the 1 structures could be used")
    assert not (tmp_path / "z.csv").exists()


def test_an_old_rejected_marker_is_not_trusted(trained, tmp_path):
    """Earlier versions wrote a ``.rejected`` marker for any failure (a missing package included): such a
    marker is ignored, the features are computed and the structure is predicted."""
    from matgnn.models.backbones.chgnet import ChgnetFeatures

    run_dir = trained["run"]
    cache = tmp_path / "cache"
    store = ChgnetFeatures(root=cache / "embeddings")
    new = tmp_path / "new"
    new.mkdir()
    atoms = Atoms("Cu4", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], cell=[3.61] * 3,
                  pbc=True)
    write(new / "cu.cif", atoms)
    from matgnn.data.sources.folder import read_structure_file
    from matgnn.graphs.backbone_features import record_structure
    from matgnn.graphs.cache import graph_record
    from matgnn.graphs.neighbors import GraphSettings

    rec = graph_record(read_structure_file(new / "cu.cif"), GraphSettings())
    key = store.key(*record_structure(rec)[1:])
    marker = store._path(key).with_suffix(".rejected")
    marker.parent.mkdir(parents=True)
    marker.write_text("cu")
    r = ok(cli("predict", str(run_dir), str(new), "--out", str(tmp_path / "p.csv"), env={"MATGNN_CACHE_DIR": str(cache)}))
    assert "refused" not in r.out and len(list(csv.DictReader(open(tmp_path / "p.csv")))) == 1, r.out
    assert store._path(key).is_file()  # computed and cached now


def test_shipped_2d_gap_model_on_the_users_monolayer(tmp_path):
    """`matgnn predict bandgap-2d-chgnet FILE`: the shipped backbone model (CHGNet features + our MLP,
    2DMatPedia → dft_2d), its card giving the backbone, licence and both training stages."""
    from ase.build import mx2

    write(tmp_path / "mos2.cif", mx2("MoS2", vacuum=8.0))
    r = ok(cli("predict", "bandgap-2d-chgnet", str(tmp_path / "mos2.cif"), "--out", str(tmp_path / "p.csv"),
               env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    (row,) = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert 0.5 < float(row["optb88vdw_bandgap"]) < 3.0, r.out  # MoS2 monolayer: ~1.7 eV in OptB88vdW
    card = ok(cli("models", "bandgap-2d-chgnet")).out
    assert "CHGNet 0.3.0" in card and "modified BSD" in " ".join(card.split()) and "2 stages" in card


def test_backbone_model_downstream_ensemble_with_sigma_report_and_deploy(trained, tmp_path):
    """Everything downstream works on a backbone model unchanged: `matgnn ensemble --combine` of the CHGNet
    run and a CGCNN run on the same split (different batch fields), `predict` with σ from that ensemble,
    `report` of the backbone run and `bench deploy` of it (which crashed: it built batches without the
    backbone's features; its cost per new structure is now reported)."""
    folder, env, cfg, run_dir = (trained[k] for k in ("folder", "env", "cfg", "run"))
    import yaml

    plain = tmp_path / "cgcnn.yaml"
    c = yaml.safe_load(cfg.read_text())
    c["model"] = {"name": "cgcnn", "hidden": 16, "layers": 2}
    c["output_dir"] = str(tmp_path / "runs")
    plain.write_text(yaml.safe_dump(c))
    ok(cli("train", str(plain), env=env))
    (cgcnn_run,) = runs_in(tmp_path / "runs")
    ens = tmp_path / "ens"
    ok(cli("ensemble", "--combine", str(run_dir), "--combine", str(cgcnn_run), "--out", str(ens), env=env))
    out = tmp_path / "p.csv"
    ok(cli("predict", str(ens), str(folder), "--out", str(out), env=env))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and all(float(r["lattice_std"]) >= 0 for r in rows)
    assert any(float(r["lattice_std"]) > 0 for r in rows)  # two different models disagree somewhere
    ok(cli("report", str(run_dir), env=env))
    assert (run_dir / "report.html").stat().st_size > 10_000
    r = ok(cli("bench", "deploy", str(run_dir), "--atoms", "8", "--batch", "2", "--repeats", "1", "--json", env=env))
    cost = json.loads(r.out[r.out.index("{"):])
    assert cost["parameters"] > 0 and cost["batch_fields"] == ["chgnet_features"] and cost["batch_fields_ms"] > 0


def test_baselines_on_backbone_features_from_the_cli(trained, tmp_path):
    """`matgnn baseline xgboost CFG --features chgnet` (graph head: mean/max/min of the atoms' CHGNet
    features) and `matgnn baseline linear ... --features chgnet` on per-atom moments (node head: the atom's
    feature beside its structure's mean), reusing the cached embeddings; unknown feature sets and kinds that
    take none are one-line errors."""
    from tests.userdata import magmom_jsonl, magmom_run_yaml, user_error

    env, cfg, cache = trained["env"], trained["cfg"], trained["cache"]
    stamps = [f.stat().st_mtime_ns for f in _embeddings(cache)]
    r = ok(cli("baseline", "xgboost", str(cfg), "--features", "chgnet", "--set", f"output_dir={tmp_path / 'b'}",
               env=env))
    (b,) = runs_in(tmp_path / "b")
    m = json.loads((b / "metrics.json").read_text())
    assert np.isfinite(m["test.lattice.mae"]) and m["chgnet_rejected"] == 0, r.out
    info = json.loads((b / "baseline.json").read_text())
    assert info["features"] == "chgnet" and len(info["descriptor_columns"]["graph"]) == 3 * 64
    assert [f.stat().st_mtime_ns for f in _embeddings(cache)] == stamps  # read from the cache, not recomputed

    mcfg = magmom_run_yaml(tmp_path / "m.yaml", magmom_jsonl(tmp_path / "m.jsonl.gz"), tmp_path / "mruns")
    ok(cli("baseline", "linear", str(mcfg), "--features", "chgnet", env=env))
    (mb,) = runs_in(tmp_path / "mruns")
    mm = json.loads((mb / "metrics.json").read_text())
    assert np.isfinite(mm["test.magmom.mae"]) and (mb / "predictions_test_atoms.csv").is_file()

    user_error(cli("baseline", "xgboost", str(cfg), "--features", "mace", env=env), "mace", "chgnet")
    user_error(cli("baseline", "element_mean", str(cfg), "--features", "chgnet", env=env), "element_mean")
    assert len(runs_in(tmp_path / "b")) == 1  # a refused call leaves no run folder


def test_regressor_on_backbone_features_is_a_model_like_any_other(trained, tmp_path):
    """`matgnn baseline xgboost CFG --features chgnet` saves its trees in the run folder: `predict` answers what the
    baseline scored on its test split, `evaluate` rescores it, `ensemble --combine` puts it beside the CHGNet
    network (σ from their disagreement); a per-atom ridge on the features predicts moments per atom. The trees are
    XGBoost's own JSON (data); a model.json or state.pt someone edited is refused in one line."""
    import torch

    from tests.userdata import magmom_jsonl, magmom_run_yaml, user_error

    env, cfg, folder = trained["env"], trained["cfg"], trained["folder"]
    r = ok(cli("baseline", "xgboost", str(cfg), "--features", "chgnet", "--set", f"output_dir={tmp_path / 'b'}",
               env=env))
    (b,) = runs_in(tmp_path / "b")
    assert f"matgnn predict {b}" in " ".join(r.out.split())
    info = json.loads((b / "model" / "model.json").read_text())
    assert info["class"] == "BackboneRegressor" and info["init_args"]["kind"] == "xgboost" and info["graphs"]
    state = torch.load(b / "model" / "state.pt", weights_only=True)
    assert "learner" in json.loads(bytes(state["model_0"].numpy()))  # XGBoost's JSON model: numbers, no code
    out = tmp_path / "p.csv"
    ok(cli("predict", str(b), str(folder), "--out", str(out), env=env))
    answers = {row["id"]: float(row["lattice"]) for row in csv.DictReader(open(out))}
    scored = {row["id"]: float(row["lattice_pred"]) for row in csv.DictReader(open(b / "predictions_test.csv"))}
    assert len(answers) == 12 and scored
    assert all(abs(answers[i] - v) <= 1e-4 * max(1.0, abs(v)) for i, v in scored.items()), (answers, scored)
    before = json.loads((b / "metrics.json").read_text())["test.lattice.mae"]
    ok(cli("evaluate", str(b), env=env))
    assert json.loads((b / "metrics.json").read_text())["test.lattice.mae"] == pytest.approx(before, rel=1e-4)

    ens = tmp_path / "ens"
    ok(cli("ensemble", "--combine", str(b), "--combine", str(trained["run"]), "--out", str(ens), env=env))
    ok(cli("predict", str(ens), str(folder), "--out", str(tmp_path / "e.csv"), env=env))
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert len(rows) == 12 and any(float(row["lattice_std"]) > 0 for row in rows)

    ref = tmp_path / "ref"  # the trees as a reference's fallback: s0 answered from the reference, the rest by them
    ref.mkdir()
    (ref / "s0.cif").write_bytes((folder / "s0.cif").read_bytes())
    (ref / "id_prop.csv").write_text("id,lattice\ns0,9.5\n")
    ok(cli("reference", str(ref), "--target", "lattice", "--fallback", str(b), "--out", str(tmp_path / "refm"),
           env=env))
    ok(cli("predict", str(tmp_path / "refm"), str(folder), "--out", str(tmp_path / "r.csv"), env=env))
    via_ref = {row["id"]: float(row["lattice"]) for row in csv.DictReader(open(tmp_path / "r.csv"))}
    assert via_ref["s0"] == pytest.approx(9.5)
    assert via_ref["s1"] == pytest.approx(answers["s1"], abs=1e-5)

    mcfg = magmom_run_yaml(tmp_path / "m.yaml", magmom_jsonl(tmp_path / "m.jsonl.gz"), tmp_path / "mruns")
    ok(cli("baseline", "linear", str(mcfg), "--features", "chgnet", env=env))
    (mb,) = runs_in(tmp_path / "mruns")
    ok(cli("predict", str(mb), str(folder), "--out", str(tmp_path / "m.csv"), env=env))
    atoms = list(csv.DictReader(open(tmp_path / "m_atoms.csv")))
    assert atoms and all(np.isfinite(float(a["magmom"])) for a in atoms)

    # trees have no layers to fine-tune: one line, and no run folder; as a delta learning base they serve
    user_error(cli("finetune", str(b), str(cfg), "--set", f"output_dir={tmp_path / 'ft'}", env=env),
               "BackboneRegressor", "delta.base_model")
    assert not (tmp_path / "ft").exists()

    info["init_args"]["sizes"] = [7]  # an edited model.json: the weights no longer fit
    (b / "model" / "model.json").write_text(json.dumps(info))
    user_error(cli("predict", str(b), str(folder), "--out", str(tmp_path / "q.csv"), env=env), "state.pt",
               "does not fit")
    info["init_args"]["sizes"] = [len(state["model_0"])]
    (b / "model" / "model.json").write_text(json.dumps(info))
    state["model_0"] = torch.full_like(state["model_0"], ord("x"))  # not an XGBoost model any more
    torch.save(state, b / "model" / "state.pt")
    user_error(cli("predict", str(b), str(folder), "--out", str(tmp_path / "q.csv"), env=env), "lattice",
               "not readable")


def test_shipped_backbone_moment_model_warm_starts_dft(tmp_path):
    """`matgnn predict magmom-mp-chgnet fe.cif --magmom-export OUT`: the shipped CHGNet-feature moment model
    gives bcc Fe ~2.2 μB per atom and writes the DFT starting-moment files; its card names the backbone,
    its licence and the MPtrj overlap of the test structures."""
    from ase.build import bulk

    write(tmp_path / "fe.cif", bulk("Fe", "bcc", a=2.87, cubic=True))
    out, starts = tmp_path / "p.csv", tmp_path / "starts"
    ok(cli("predict", "magmom-mp-chgnet", str(tmp_path / "fe.cif"), "--out", str(out), "--magmom-export", str(starts),
           env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    rows = list(csv.DictReader(open(out.with_name("p_atoms.csv"))))
    assert len(rows) == 2 and all(1.5 < float(r["magmom"]) < 3.0 for r in rows)  # bcc Fe: ~2.2 μB
    assert any(starts.iterdir())
    card = " ".join(ok(cli("models", "magmom-mp-chgnet")).out.split())
    assert "CHGNet 0.3.0" in card and "modified BSD" in card and "MPtrj" in card
    # loading it takes CHGNet's moment weights from its own state, not from the chgnet package (a second)
    import subprocess
    import sys

    code = ("import sys; from matgnn.models import load_model; from matgnn.pretrained import model_path; "
            "m = load_model(model_path('magmom-mp-chgnet')); "
            "print('chgnet' in sys.modules, bool(m.backbone_magmom_weight.isfinite().all()))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "True"]


def test_moment_head_learns_the_residual_to_chgnets_own_moment(tmp_path):
    """`targets: [{name: magmom, level: node, baseline: backbone}]` on `model: chgnet`: the head learns the
    residual to CHGNet's zero-shot moment of each atom (its own magmom head on the cached features). With the
    residual at zero a saved model predicts exactly CHGNet's moments, and an atom of an element the training
    set never labelled always gets CHGNet's answer. SevenNet (no moment head) and CGCNN say why they cannot."""
    import torch
    from ase.build import bulk
    from chgnet.model import CHGNet
    from pymatgen.io.ase import AseAtomsAdaptor

    from matgnn import load_model
    from tests.userdata import CRYSTALS, magmom_jsonl, magmom_run_yaml, user_error

    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    data = magmom_jsonl(tmp_path / "m.jsonl.gz")  # no Co in it

    def config(model: str, name: str):
        cfg = magmom_run_yaml(tmp_path / f"{name}.yaml", data, tmp_path / f"runs-{name}", model)
        cfg.write_text(cfg.read_text().replace("level: node}", "level: node, baseline: backbone}"))
        return cfg

    ok(cli("train", str(config(MODEL, "chgnet")), env=env))
    (run_dir,) = runs_in(tmp_path / "runs-chgnet")
    assert np.isfinite(json.loads((run_dir / "metrics.json").read_text())["test.magmom.mae"])
    for model, name in (("{name: sevennet, hidden: 16}", "sevennet"), ("{name: cgcnn, hidden: 16}", "cgcnn")):
        user_error(cli("train", str(config(model, name)), env=env), "baseline 'backbone'", "magnetic moments")
        assert runs_in(tmp_path / f"runs-{name}") == []

    model = load_model(run_dir)
    seen = {int(z) for z in torch.nonzero(model.targets[0].steps[0].labelled_elements).ravel()}  # the elements training labelled
    el, a = next((el, a) for el, a in CRYSTALS if bulk(el).numbers[0] in seen)
    fe, co = bulk(el, "fcc", a=a), bulk("Co", "hcp", a=2.51, c=4.07)  # "fe": a labelled element; Co never is
    write(tmp_path / "fe.cif", fe)
    write(tmp_path / "co.cif", co)
    chgnet = CHGNet.load(model_name="0.3.0", verbose=False)
    own = {k: np.asarray(chgnet.predict_structure(AseAtomsAdaptor.get_structure(a), task="em")["m"]).ravel()
           for k, a in (("fe", fe), ("co", co))}

    def atoms_csv(model_dir, name):
        out = tmp_path / f"{name}.csv"
        ok(cli("predict", str(model_dir), str(tmp_path / "fe.cif"), str(tmp_path / "co.cif"), "--out", str(out),
               env=env))
        rows = list(csv.DictReader(open(out.with_name(f"{name}_atoms.csv"))))
        return {k: np.array([float(r["magmom"]) for r in rows if r["id"].startswith(k)]) for k in ("fe", "co")}

    trained_rows = atoms_csv(run_dir, "trained")
    np.testing.assert_allclose(trained_rows["co"], own["co"], atol=1e-4)  # Co: never labelled in training
    last = [m for m in model.heads["magmom"].modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    info = json.loads((run_dir / "model" / "model.json").read_text())  # its graph settings, trained elements, ...
    model.save(tmp_path / "zero-residual", extra={k: v for k, v in info.items()
                                                  if k not in ("class", "module", "version", "init_args")})
    zero_rows = atoms_csv(tmp_path / "zero-residual", "zero")
    for k in ("fe", "co"):
        np.testing.assert_allclose(zero_rows[k], own[k], atol=1e-4)
    assert not np.allclose(trained_rows["fe"], own["fe"], atol=1e-3)  # a labelled element: the residual moves it
