"""Baselines: descriptors, per-element mean / ridge / XGBoost fitted and scored like a run,
CHGNet zero-shot moments with rejected structures listed."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase.build import bulk

from matgnn.baselines import run_baseline
from matgnn.baselines.descriptors import DescriptorSpace
from matgnn.config import RunConfig
from matgnn.data.structure import Structure
from matgnn.graphs.cache import graph_record
from matgnn.graphs.neighbors import GraphSettings

from .conftest import shared_path


def test_descriptors_of_rocksalt():
    a = bulk("NaCl", "rocksalt", a=5.64)
    s = Structure("nacl", a.numbers, a.positions, np.asarray(a.cell[:]), np.ones(3, bool), {}, {})
    rec = graph_record(s, GraphSettings(cutoff=3.0, max_neighbors=None))
    space = DescriptorSpace([11, 17])
    x = space.atoms(rec).toarray()
    names = space.names()
    na, cl = x[0], x[1]
    assert na[names.index("is_Na")] == 1 and na[names.index("n_Cl")] == 6 and na[names.index("n_Na")] == 0
    assert cl[names.index("is_Cl")] == 1 and cl[names.index("n_Na")] == 6
    for row in (na, cl):
        assert row[names.index("coordination")] == 6
        assert row[names.index("d_min")] == pytest.approx(2.82) and row[names.index("d_max")] == pytest.approx(2.82)
    g = space.graphs([rec]).toarray()[0]
    assert g[names.index("is_Na")] == pytest.approx(0.5)  # composition fraction


def _cfg(tmp_path, targets):
    return RunConfig.model_validate({
        "source": {"kind": "emt", "n_structures": 60}, "graphs": {"cutoff": 5.0}, "targets": targets,
        "split": {"kind": "random", "train": 0.7, "val": 0.15, "seed": 2},
        "evaluation": {"exclude_elements": ["Cu"]},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})


@pytest.mark.parametrize("kind", ["element_mean", "linear", "xgboost"])
def test_feature_baselines_write_a_scored_run(tmp_path, kind):
    pytest.importorskip("xgboost")
    cfg = _cfg(tmp_path, [{"name": "atom_energy", "level": "node"}, {"name": "mixing_energy"}])
    run = run_baseline(cfg, kind, progress=False)
    m = json.loads((run / "metrics.json").read_text())
    for head in ("atom_energy", "mixing_energy"):
        assert np.isfinite(m[f"test.{head}.mae"]) and m[f"test.{head}.count"] > 0
        assert (run / f"per_element_{head}.csv").is_file() and (run / f"parity_{head}.png").is_file()
    assert "test.atom_energy.without_Cu.mae" in m
    assert m["test.atom_energy.without_Cu.count"] < m["test.atom_energy.count"]
    assert (run / "errors_by_bin_atom_energy.csv").read_text().startswith("lo,hi,count,mae")
    if kind == "element_mean":  # node prediction = the element's mean over training atoms
        split = json.loads((run / "split.json").read_text())
        from matgnn.data.sources import make_source

        by_id = {s.id: s for s in make_source(cfg.source)}
        z = np.concatenate([by_id[i].numbers for i in split["train"]])
        y = np.concatenate([by_id[i].node_targets["atom_energy"] for i in split["train"]])
        row = next(csv.DictReader(open(run / "predictions_test_atoms.csv")))
        assert float(row["atom_energy_pred"]) == pytest.approx(y[z == int(row["z"])].mean(), rel=1e-5)


@pytest.mark.parametrize("kind", ["chgnet", "chgnet_finetuned"])
def test_chgnet_magmoms_zero_shot_and_finetuned(tmp_path, kind):
    pytest.importorskip("chgnet")
    path = shared_path("mp_magmoms", "mp_magmoms.jsonl.gz")
    cfg = RunConfig.model_validate({
        "source": {"kind": "magmoms", "path": str(path), "limit": 12}, "graphs": {"cutoff": 6.0},
        "targets": [{"name": "magmom", "level": "node"}], "split": {"kind": "random", "train": 0.5, "val": 0.1},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})
    run = run_baseline(cfg, kind, progress=False, finetune_epochs=1)
    m = json.loads((run / "metrics.json").read_text())
    assert m["test.magmom.count"] > 0 and 0 <= m["test.magmom.mae"] < 1.0
    if kind == "chgnet_finetuned":
        assert m["finetune_structures"] == 6 and m["finetune_seconds"] > 0
    assert m["test.structures_per_s"] > 0
    assert (run / "chgnet_rejected_test.csv").read_text().startswith("id,reason")


def test_chgnet_baseline_needs_one_node_head(tmp_path):
    with pytest.raises(ValueError, match="node-level head"):
        run_baseline(_cfg(tmp_path, [{"name": "mixing_energy"}]), "chgnet", progress=False)
