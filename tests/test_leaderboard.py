"""JARVIS-Leaderboard journeys through the installed executable: `matgnn leaderboard define` writes
benchmark files in the leaderboard's layout (our k folds), `matgnn train` on one of them, `matgnn
leaderboard export` writes the contribution (the CSV zip named as the leaderboard names them, with
`id,prediction` for every test id, metadata.json, config.yaml, run.sh); runs that cannot be
contributions are refused with the reason; the official dft_3d split is the real-data case."""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile

import numpy as np

from tests.conftest import shared_path
from tests.userdata import cif_folder, cli, ok, run, run_yaml, runs_in, user_error


def _fold_file(folder, k=0):
    return folder / f"my_cifs_lattice_fold{k}.json.zip"


def test_define_train_export_on_the_users_own_benchmark(tmp_path):
    cifs = cif_folder(tmp_path / "my_cifs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    r = ok(run("leaderboard", "define", str(cifs), "lattice", "--out", str(tmp_path / "bench"), "--folds", "3",
               env=env))
    assert "12 labelled structures" in " ".join(r.out.split())
    fold0 = _fold_file(tmp_path / "bench")
    with zipfile.ZipFile(fold0) as z:
        bench = json.loads(z.read(z.namelist()[0]))
    assert set(bench) == {"train", "val", "test"} and sum(len(v) for v in bench.values()) == 12
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {cifs}}}", tmp_path / "runs", epochs=2,
                   extra=f"split: {{kind: ids, ids_file: {fold0}}}\n")
    cfg.write_text(cfg.read_text().replace("split: {kind: random, train: 0.6, val: 0.2}\n", ""))
    ok(run("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    r = ok(run("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "contrib"), "--name", "my_model",
               "--team", "us", "--email", "me@example.org", env=env))
    folder = tmp_path / "contrib" / "my_model"
    name = "AI-SinglePropertyPrediction-lattice_fold0-my_cifs-test-mae.csv"
    with zipfile.ZipFile(folder / f"{name}.zip") as z:
        assert z.namelist() == [name]
        rows = list(csv.DictReader(io.StringIO(z.read(name).decode())))
    assert list(rows[0]) == ["id", "prediction"] and sorted(r["id"] for r in rows) == sorted(bench["test"])
    mae = np.mean([abs(float(r["prediction"]) - bench["test"][r["id"]]) for r in rows])
    run_mae = json.loads((run_dir / "metrics.json").read_text())["test.lattice.mae"]
    assert abs(mae - run_mae) < 1e-4
    meta = json.loads((folder / "metadata.json").read_text())
    for key in ("model_name", "team_name", "author_email", "date_submitted", "time_taken_seconds", "software_used",
                "hardware_used", "project_url", "database_version", "os", "language"):
        assert key in meta, key
    assert meta["team_name"] == "us" and "note" not in meta
    assert os.access(folder / "run.sh", os.X_OK) and (folder / "config.yaml").is_file()
    # a name with shell characters or a path in it is refused; nothing is written outside --out
    for bad in ("x; touch PWNED", "../escape", "$(id)", ".hidden"):
        r = cli("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "contrib2"), "--name", bad, env=env)
        user_error(r, "--name", "a contribution name is letters, digits")
    assert not (tmp_path / "contrib2").exists() and not (tmp_path / "escape").exists()


def test_a_run_that_is_not_on_a_leaderboard_split_is_refused(tmp_path):
    cifs = cif_folder(tmp_path / "my_cifs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    ok(run("train", str(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {cifs}}}", tmp_path / "runs")), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    user_error(run("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "contrib"), env=env),
               "random split", "leaderboard")
    user_error(run("leaderboard", "export", str(tmp_path / "nowhere"), env=env), "not a finished run folder")
    assert not (tmp_path / "contrib").exists()


def test_official_dft3d_split_partial_coverage_is_said(tmp_path):
    """The official band-gap split has 5,572 test ids; our dft_3d subset holds structures for a few dozen:
    the export refuses, and with --partial writes the file and says so in metadata.json."""
    store = shared_path("jarvis")
    split = shared_path("jarvis_leaderboard", "dft_3d_optb88vdw_bandgap.json.zip")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""source: {{kind: jarvis, dataset: dft_3d, store_dir: {store}}}
targets: [{{name: optb88vdw_bandgap}}]
model: {{name: cgcnn, hidden: 16, layers: 2}}
train: {{epochs: 2}}
split: {{kind: ids, ids_file: {split}}}
output_dir: {tmp_path / 'runs'}
""")
    ok(run("train", str(cfg)))
    (run_dir,) = runs_in(tmp_path / "runs")
    user_error(run("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "c")), "of the 5572 test ids",
               "--partial")
    ok(run("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "c"), "--partial"))
    meta = json.loads((tmp_path / "c" / "matgnn_cgcnn" / "metadata.json").read_text())
    assert meta["note"].startswith("partial") and meta["database_version"] != "unknown"
    assert (tmp_path / "c" / "matgnn_cgcnn" /
            "AI-SinglePropertyPrediction-optb88vdw_bandgap-dft_3d-test-mae.csv.zip").is_file()
