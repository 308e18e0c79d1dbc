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
from tests.userdata import cif_folder, cli, ok, run_yaml, runs_in, user_error


def _fold_file(folder, k=0):
    return folder / f"my_cifs_lattice_fold{k}.json.zip"


def test_define_train_export_on_the_users_own_benchmark(tmp_path):
    cifs = cif_folder(tmp_path / "my_cifs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    r = ok(cli("leaderboard", "define", str(cifs), "lattice", "--out", str(tmp_path / "bench"), "--folds", "3",
               env=env))
    assert "12 labelled structures" in " ".join(r.out.split())
    fold0 = _fold_file(tmp_path / "bench")
    with zipfile.ZipFile(fold0) as z:
        bench = json.loads(z.read(z.namelist()[0]))
    assert set(bench) == {"train", "val", "test"} and sum(len(v) for v in bench.values()) == 12
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {cifs}}}", tmp_path / "runs", epochs=2,
                   extra=f"split: {{kind: ids, ids_file: {fold0}}}\n")
    cfg.write_text(cfg.read_text().replace("split: {kind: random, train: 0.6, val: 0.2}\n", ""))
    ok(cli("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    urls = ["--project-url", "https://example.org/my_model"]
    r = ok(cli("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "contrib"), "--name", "my_model",
               "--team", "us", "--email", "me@example.org", *urls, env=env))
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
    assert meta["team_name"] == "us" and "note" not in meta
    assert list(meta["time_taken_seconds"]) == [f"{name}.zip"]
    # a second property into the same contribution: added, nothing overwritten
    ok(cli("train", str(cfg), "--set", f"split.ids_file={_fold_file(tmp_path / 'bench', 1)}", env=env))
    run1 = next(r for r in runs_in(tmp_path / "runs") if r != run_dir)
    ok(cli("leaderboard", "export", str(run1), "--out", str(tmp_path / "contrib"), "--name", "my_model",
           "--team", "us", "--email", "me@example.org", *urls, env=env))
    check_contributions(tmp_path / "contrib")
    meta = json.loads((folder / "metadata.json").read_text())
    zips = sorted(p.name for p in folder.glob("*.csv.zip"))
    assert len(zips) == 2 and sorted(meta["time_taken_seconds"]) == zips
    assert sorted(p.name for p in (folder / "configs").iterdir()) == [z.replace(".csv.zip", ".yaml") for z in zips]
    script = (folder / "run.sh").read_text()
    assert os.access(folder / "run.sh", os.X_OK) and all(z.replace(".csv.zip", "") in script for z in zips)
    assert str(tmp_path) not in script and str(tmp_path) not in "".join(
        p.read_text() for p in (folder / "configs").iterdir())  # no path of this machine
    assert "pip install git+https://example.org/my_model@" in script, script  # matgnn at the recorded commit
    # no e-mail, no project URL: refused (the leaderboard's checks would refuse the folder)
    user_error(cli("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "c3"), *urls, env=env), "--email")
    user_error(cli("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "c3"), "--email", "a@b.org",
                   env=env), "--project-url")
    assert not (tmp_path / "c3").exists()
    # a name with shell characters or a path in it is refused; nothing is written outside --out
    for bad in ("x; touch PWNED", "../escape", "$(id)", ".hidden"):
        r = cli("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "contrib2"), "--name", bad,
                "--email", "me@example.org", *urls, env=env)
        user_error(r, "--name", "a contribution name is letters, digits")
    assert not (tmp_path / "contrib2").exists() and not (tmp_path / "escape").exists()


def test_a_run_that_is_not_on_a_leaderboard_split_is_refused(tmp_path):
    cifs = cif_folder(tmp_path / "my_cifs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    ok(cli("train", str(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {cifs}}}", tmp_path / "runs")), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    user_error(cli("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "contrib"), env=env),
               "random split", "leaderboard")
    user_error(cli("leaderboard", "export", str(tmp_path / "nowhere"), env=env), "not a finished run folder")
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
    ok(cli("train", str(cfg)))
    (run_dir,) = runs_in(tmp_path / "runs")
    who = ["--email", "me@example.org", "--project-url", "https://example.org/m"]
    user_error(cli("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "c"), *who),
               "of the 5572 test ids", "--partial")
    ok(cli("leaderboard", "export", str(run_dir), "--out", str(tmp_path / "c"), "--partial", *who))
    meta = json.loads((tmp_path / "c" / "matgnn_cgcnn" / "metadata.json").read_text())
    note = meta["note"]["AI-SinglePropertyPrediction-optb88vdw_bandgap-dft_3d-test-mae.csv.zip"]
    assert note.startswith("partial") and meta["database_version"] != "unknown"
    config = (tmp_path / "c" / "matgnn_cgcnn" / "configs" /
              "AI-SinglePropertyPrediction-optb88vdw_bandgap-dft_3d-test-mae.yaml").read_text()
    assert "store_dir: null" in config and str(store) not in config
    assert (tmp_path / "c" / "matgnn_cgcnn" /
            "AI-SinglePropertyPrediction-optb88vdw_bandgap-dft_3d-test-mae.csv.zip").is_file()


def check_contributions(root):
    """The JARVIS-Leaderboard repository's own contribution checks (``jarvis_leaderboard/rebuild.py``), applied
    to a folder of contributions laid out as its ``contributions/``: ``check_metadata_json_exists``,
    ``check_metadata_info_exists`` (the keys it requires and an ``@`` in ``author_email``),
    ``check_run_sh_exists``, ``check_at_least_one_csv_zip_exists``, and the name split of
    ``check_json_zip_exists_for_csv_zip`` (``<category>-<task>-<property>-<dataset>-...``: the benchmark file it
    looks for is ``benchmarks/<category>/<task>/<dataset>_<property>.json.zip``); plus the types of the ~400
    real contributions' ``metadata.json`` (``time_taken_seconds`` a mapping keyed by the ``.csv.zip`` names,
    ``git_url`` a list)."""
    for contribution in (p for p in root.iterdir() if p.is_dir()):
        names = os.listdir(contribution)
        assert any("metadata.json" in n for n in names)  # check_metadata_json_exists
        assert any("run.sh" in n for n in names)  # check_run_sh_exists
        zips = [n for n in names if "csv.zip" in n]
        assert zips  # check_at_least_one_csv_zip_exists
        meta = json.loads((contribution / "metadata.json").read_text())
        for key in ("author_email", "project_url", "git_url", "model_name", "team_name", "time_taken_seconds",
                    "software_used", "hardware_used"):  # check_metadata_info_exists
            assert key in meta, key
        assert "@" in meta["author_email"]
        assert isinstance(meta["time_taken_seconds"], dict) and set(meta["time_taken_seconds"]) == set(zips)
        assert isinstance(meta["git_url"], list)
        for z in zips:  # check_json_zip_exists_for_csv_zip's reading of the name
            parts = z.split("-")
            assert parts[0] == "AI" and parts[1] == "SinglePropertyPrediction" and z.endswith("-test-mae.csv.zip")
            assert f"{parts[3]}_{parts[2]}.json.zip"
