"""The command line and a whole (small) training run on the embedded EMT set."""

from __future__ import annotations

import csv
import json

import numpy as np
import torch
import yaml
from typer.testing import CliRunner

from matgnn import load_model
from matgnn.cli.main import app

runner = CliRunner()


def test_data_info_and_graphs_build(tmp_path):
    r = runner.invoke(app, ["data", "info", "emt:25", "--out", str(tmp_path / "info")])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "info" / "data_info.json").read_text())
    assert info["kept"] == 25 and info["graph_targets"]["mixing_energy"]["labelled"] == 25
    assert info["node_targets"]["atom_energy"]["structures"] == 25
    r = runner.invoke(app, ["graphs", "build", "emt:25", "--cutoff", "5", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert "built 25" in r.output
    r = runner.invoke(app, ["graphs", "build", "emt:25", "--cutoff", "5", "--cache-dir", str(tmp_path / "c")])
    assert "reused complete cache" in r.output


def test_bad_source_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["data", "info", str(tmp_path / "nothing.txt")])
    assert r.exit_code == 2 and "cannot tell what source" in r.output


def test_train_writes_a_self_describing_run_that_reloads(tmp_path):
    cfg = {
        "source": {"kind": "emt", "n_structures": 60},
        "graphs": {"cutoff": 5.0, "max_neighbors": 12},
        "targets": [{"name": "mixing_energy", "level": "graph"}, {"name": "atom_energy", "level": "node", "weight": 0.5}],
        "model": {"hidden": 32, "layers": 2, "head_hidden": 32},
        "train": {"epochs": 3, "batch_size": 16},
        "output_dir": str(tmp_path / "runs"),
        "cache_dir": str(tmp_path / "cache"),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", str(tmp_path / "run.yaml"), "--set", "train.lr=0.002"])
    assert r.exit_code == 0, r.output
    (run_dir,) = list((tmp_path / "runs").iterdir())
    for name in ("config.yaml", "split.json", "load_report.json", "skipped.csv", "history.csv", "metrics.json",
                 "model/model.json", "model/state.pt", "predictions_test.csv", "predictions_test_atoms.csv",
                 "parity_mixing_energy.png", "parity_atom_energy.png", "learning_curve.png"):
        assert (run_dir / name).is_file(), name
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["lr"] == 0.002 and saved["train"]["epochs"] == 3
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 60
    assert np.isfinite(metrics["test.mixing_energy.mae"]) and metrics["test.atom_energy.count"] > 0
    # throughput of whole epochs and of their training passes alone (as other tools print it)
    assert 0 < metrics["train_structures_per_s"] <= metrics["train_pass_structures_per_s"]
    history = list(csv.DictReader(open(run_dir / "history.csv")))
    assert all(0 < float(h["train_pass_seconds"]) <= float(h["seconds"]) for h in history)
    split = json.loads((run_dir / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])

    # The model reloads from the run folder alone and reproduces the saved predictions.
    model = load_model(run_dir)
    from torch_geometric.loader import DataLoader

    from matgnn.data.sources import EmtAlloySource
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.graphs.dataset import GraphDataset
    from matgnn.graphs.neighbors import GraphSettings

    cache = build_graph_cache(EmtAlloySource(60), GraphSettings(cutoff=5.0), cache_root=tmp_path / "cache", progress=False)
    idx = [cache.ids.index(i) for i in split["test"]]
    batch = next(iter(DataLoader(GraphDataset(cache, idx, ["mixing_energy"], ["atom_energy"]), batch_size=100)))
    with torch.no_grad():
        pred = model(batch)["mixing_energy"].numpy()
    lines = (run_dir / "predictions_test.csv").read_text().splitlines()[1:]
    saved_pred = {ln.split(",")[0]: float(ln.split(",")[2]) for ln in lines}
    np.testing.assert_allclose(pred, [saved_pred[i] for i in batch.structure_id], rtol=1e-4, atol=1e-6)


def test_unknown_target_names_what_exists(tmp_path):
    r = runner.invoke(app, ["train", "--set", "source.n_structures=10", "--set", "targets=[{name: band_gap}]",
                            "--set", f"output_dir={tmp_path}", "--set", f"cache_dir={tmp_path / 'c'}"])
    assert r.exit_code == 2
    assert "band_gap" in r.output and "mixing_energy" in r.output


def test_bench_deploy_reports_costs(tmp_path):
    from matgnn.config import RunConfig
    from matgnn.training.run import train

    cfg = RunConfig.model_validate({
        "source": {"kind": "emt", "n_structures": 20}, "graphs": {"cutoff": 5.0},
        "model": {"hidden": 8, "layers": 1, "head_hidden": 8}, "train": {"epochs": 1, "threads": 1},
        "output_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")})
    run = train(cfg, progress=False)
    r = runner.invoke(app, ["bench", "deploy", str(run), "--atoms", "16", "--batch", "4", "--repeats", "2", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output[r.output.index("{"):])
    assert res["n_atoms"] == 16 and res["parameters"] > 0 and res["load_s"] > 0
    assert res["cpu.single_ms"] > 0 and res["cpu.batched_ms_per_structure"] > 0
