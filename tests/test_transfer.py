"""Transfer learning: layer groups, freeze policies, new heads, weight shift, two-phase fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from matgnn.cli.main import app
from matgnn.config import RunConfig
from matgnn.models import build_model, load_model
from matgnn.training.finetune import finetune
from matgnn.training.run import train
from matgnn.training.transfer import freeze, layer_groups

runner = CliRunner()


@pytest.mark.parametrize("name,kw", [("cgcnn", {}), ("cgconv_net", {}), ("schnet", {}), ("pna", {"deg": [0, 1, 2]}),
                                     ("dimenet++", {}), ("zoo", {"operator": "gatv2conv"}),
                                     ("alignn", {"gcn_layers": 1})])
def test_every_family_has_the_named_layer_groups(name, kw):
    m = build_model(name, [{"name": "y", "level": "graph"}], cutoff=5.0, hidden=16, layers=2, head_hidden=16, **kw)
    groups = layer_groups(m)
    assert {"embedding", "conv_0", "conv_1", "head"} <= set(groups), sorted(groups)
    assert "other" not in groups, groups.get("other")
    if name == "alignn":  # its bond-graph layers continue the count after the ALIGNN layers
        assert any(n.startswith("gcn_layers.0.") for n in groups["conv_2"])
    frozen = freeze(m, "all_but_embedding_conv0")
    assert "conv_1" in frozen and "conv_0" not in frozen and "head" not in frozen
    assert not any(p.requires_grad for n, p in m.named_parameters() if n in groups["conv_1"])
    with pytest.raises(ValueError, match="not layer groups"):
        freeze(m, ["conv_9"])
    with pytest.raises(ValueError, match="unknown freeze policy"):
        freeze(m, "everything")


def _cfg(tmp_path, targets, **kw):
    return RunConfig.model_validate({
        "source": {"kind": "emt", "n_structures": 60}, "graphs": {"cutoff": 5.0},
        "targets": targets, "model": {"hidden": 16, "layers": 2, "head_hidden": 16},
        "train": {"epochs": 3, "batch_size": 8, "threads": 1, "tensorboard": False},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"), **kw})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre")
    return train(_cfg(tmp, [{"name": "mixing_energy"}], name="pre"), progress=False)


def test_freeze_all_but_embedding_keeps_the_frozen_trunk_and_reports_shift(tmp_path, pretrained):
    cfg = _cfg(tmp_path, [{"name": "atom_energy", "level": "node"}],
               graphs={"cutoff": 4.0}, transfer={"from_model": str(pretrained), "freeze": "all_but_embedding"})
    run = train(cfg, progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["graphs"]["cutoff"] == 5.0  # the source's graphs
    info = json.loads((run / "transfer.json").read_text())
    assert info["frozen_groups"] == ["conv_0", "conv_1"]
    from matgnn.artifacts import fingerprint

    assert info["source_sha256"] == fingerprint(pretrained / "model")  # the parent, by content
    assert any(n.startswith("convs.0.") for n in info["loaded"]) and all(n.startswith("heads.") for n in info["new"])
    src, new = load_model(pretrained).state_dict(), load_model(run).state_dict()
    for k in new:
        if k.startswith("convs."):  # frozen: weights and normalisation statistics unchanged
            torch.testing.assert_close(new[k], src[k], rtol=0, atol=0)
    assert info["weight_shift"]["conv_0"] == 0.0 and info["weight_shift"]["embedding"] > 0
    assert not (new["embed.weight"] == src["embed.weight"]).all()


def test_two_phase_finetune(tmp_path, pretrained):
    cfg = _cfg(tmp_path, [{"name": "mixing_energy"}], train={"epochs": 4, "batch_size": 8, "threads": 1,
                                                             "lr": 0.002, "tensorboard": False})
    r1, r2 = finetune(cfg, pretrained, two_phase=True, phase1_epochs=2, progress=False)
    t1, t2 = (json.loads((r / "transfer.json").read_text()) for r in (r1, r2))
    assert t1["frozen_groups"] == ["embedding"] and t1["weight_shift"]["embedding"] == 0.0
    assert t2["frozen_groups"] == [] and t2["weight_shift"]["embedding"] > 0
    assert any(n.startswith("heads.") for n in t2["loaded"])  # phase 2 continues phase 1's head
    c2 = yaml.safe_load((r2 / "config.yaml").read_text())
    assert c2["train"]["lr"] == pytest.approx(0.0002) and c2["train"]["epochs"] == 2


def test_finetune_cli(tmp_path, pretrained):
    cfg = _cfg(tmp_path, [{"name": "atom_energy", "level": "node"}])
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    r = runner.invoke(app, ["finetune", str(pretrained), str(path), "--freeze", "conv_1,head"])
    assert r.exit_code == 0, r.output
    assert "weight shift" in r.output
    r = runner.invoke(app, ["finetune", str(pretrained), str(path), "--freeze", "conv_7"])
    assert r.exit_code == 2 and "not layer groups" in " ".join(r.output.split())


def test_delta_learning_on_a_frozen_base(tmp_path, pretrained):
    from matgnn.data.sources import make_source
    from matgnn.graphs.batching import make_loader
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.graphs.packed import PackedGraphs
    from matgnn.models.delta import DeltaModel

    cfg = _cfg(tmp_path, [{"name": "mixing_energy"}], delta={"base_model": str(pretrained)},
               train={"epochs": 6, "batch_size": 8, "threads": 1, "tensorboard": False, "lr": 0.003})
    run = train(cfg, progress=False)
    m = json.loads((run / "metrics.json").read_text())
    assert "base.test.mixing_energy.mae" in m and "test.mixing_energy.mae" in m
    from matgnn.artifacts import fingerprint

    assert json.loads((run / "delta.json").read_text())["base_sha256"] == fingerprint(pretrained / "model")
    model = load_model(run)
    assert isinstance(model, DeltaModel)
    base, delta = load_model(pretrained), load_model(run / "delta_model")
    cache = build_graph_cache(make_source(cfg.source), cfg.graphs, cache_root=cfg.cache_dir, progress=False)
    batch = next(iter(make_loader(PackedGraphs(cache, range(10), ["mixing_energy"]), 10)))
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["mixing_energy"],
                                   base(batch)["mixing_energy"] + delta(batch)["mixing_energy"])
    with pytest.raises(ValueError, match="no head"):
        train(_cfg(tmp_path, [{"name": "atom_energy", "level": "node"}], delta={"base_model": str(pretrained)}),
              progress=False)


def test_lineage_is_found_by_hash_not_by_name_or_time(tmp_path, pretrained):
    """ship_model's lineage: a fine-tuned run's parent run folder is the one whose model hashes to the
    recorded source_sha256 — also after the parent folder moved; a parent whose weights changed is
    not taken for it."""
    import shutil

    from matgnn.artifacts import parent_of, parent_run

    parent_copy = tmp_path / "elsewhere" / "pre-run"
    shutil.copytree(pretrained, parent_copy)
    child = train(_cfg(tmp_path, [{"name": "mixing_energy"}], name="child",
                       transfer={"from_model": str(parent_copy)}), progress=False)
    rec = parent_of(child)
    assert rec.relation == "transfer" and rec.sha256 and parent_run(child) == parent_copy
    moved = tmp_path / "archive" / "pre-run"
    shutil.move(parent_copy, moved)
    assert parent_run(child) is None  # not where it was, and no roots to search
    assert parent_run(child, [tmp_path / "archive"]) == moved
    from matgnn.artifacts import lineage

    stages = lineage(child, [tmp_path / "archive"])  # oldest first, each with its config and metrics
    assert [r for r, _, _ in stages] == [moved, child] and all("test.mixing_energy.mae" in m for _, _, m in stages)
    state = torch.load(moved / "model" / "state.pt", weights_only=True)
    state["targets.0.standardize.std"] = state["targets.0.standardize.std"] * 2
    torch.save(state, moved / "model" / "state.pt")
    assert parent_run(child, [tmp_path / "archive"]) is None
    assert parent_of(pretrained) is None


def test_delta_on_a_base_that_names_the_target_otherwise_from_the_cli(tmp_path):
    """`delta: {base_model: RUN, base_heads: {lattice: a0}}`: a base trained on the same quantity under
    another name (a PBE-gap model for an OptB88vdW gap) is the frozen base; the saved delta model predicts
    base + residual under the target's name and reloads from its folder alone."""
    import csv as _csv

    from tests.userdata import cif_folder, cli, ok, run_yaml, runs_in, user_error

    folder = cif_folder(tmp_path / "cifs")
    rows = (folder / "id_prop.csv").read_text().splitlines()
    (folder / "id_prop_a0.csv").write_text("id,a0\n" + "\n".join(rows[1:]) + "\n")
    base_cfg = run_yaml(tmp_path / "base.yaml", f"{{kind: folder, path: {folder}, id_prop: id_prop_a0.csv}}",
                        tmp_path / "base_runs", epochs=3, target="a0")
    ok(cli("train", str(base_cfg)))
    (base_run,) = runs_in(tmp_path / "base_runs")
    cfg = run_yaml(tmp_path / "delta.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=3,
                   extra=f"delta: {{base_model: {base_run}, base_heads: {{lattice: a0}}}}\n")
    r = ok(cli("train", str(cfg)))
    assert "delta learning on the residuals" in r.out
    (delta_run,) = runs_in(tmp_path / "runs")
    info = json.loads((delta_run / "model" / "model.json").read_text())
    assert info["class"] == "DeltaModel" and info["init_args"]["base_heads"] == {"lattice": "a0"}
    m = json.loads((delta_run / "metrics.json").read_text())
    assert "base.test.lattice.mae" in m and "test.lattice.mae" in m
    out = tmp_path / "p.csv"
    ok(cli("predict", str(delta_run), str(folder), "--out", str(out)))
    assert len(list(_csv.DictReader(open(out)))) == 12
    bad = run_yaml(tmp_path / "bad.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "bad_runs", epochs=1,
                   extra=f"delta: {{base_model: {base_run}, base_heads: {{lattice: gap}}}}\n")
    user_error(cli("train", str(bad)), "gap", "base_heads")
    # fine-tuning starts from one network's layers: a delta run's model is two; its delta_model/ is the network
    plain = run_yaml(tmp_path / "plain.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "ft", epochs=1)
    user_error(cli("finetune", str(delta_run), str(plain)), "DeltaModel", "delta_model/")
    assert not (tmp_path / "ft").exists()
    ok(cli("finetune", str(delta_run / "delta_model"), str(plain)))


def test_delta_on_a_base_that_needs_extra_batch_fields(tmp_path):
    """A base that declares batch fields (a backbone's features) under a model that does not (CGCNN): the
    residual statistics are computed with the base's fields in the batches (this crashed before)."""
    pytest.importorskip("chgnet", reason="the base is a chgnet backbone model (pip install 'matgnn[foundation]')")
    from tests.userdata import cif_folder, cli, ok, run_yaml, runs_in, with_model

    folder = cif_folder(tmp_path / "cifs")
    base_cfg = with_model(run_yaml(tmp_path / "base.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "base_runs",
                                   epochs=2), "{name: chgnet, hidden: 8, layers: 1}")
    ok(cli("train", str(base_cfg)))
    (base_run,) = runs_in(tmp_path / "base_runs")
    cfg = run_yaml(tmp_path / "delta.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=2,
                   extra=f"delta: {{base_model: {base_run}}}\n")
    ok(cli("train", str(cfg)))
    (delta_run,) = runs_in(tmp_path / "runs")
    import math

    assert math.isfinite(json.loads((delta_run / "metrics.json").read_text())["test.lattice.mae"])
