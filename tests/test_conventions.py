"""The command line follows the conventions users bring from other tools: ``--version``, ``-h``, shell
completion, ``-q``/``-v``, one rule for outputs (``--out`` a file, ``--out-dir`` a folder; old spellings still
work and say the new name), ``--device`` on the commands that compute, ``train`` on a SOURCE with
``--target`` like ``data info`` and ``graphs build``, and no dependency's warnings in a user's terminal."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.userdata import cif_folder, cli, ok, run, run_yaml, runs_in, user_error


def test_version_and_short_help():
    r = ok(cli("--version"))
    assert r.out.startswith("matgnn ") and f"torch {torch.__version__}" in r.out
    assert "Usage: matgnn" in ok(cli("-h")).out
    assert "Usage: matgnn predict" in ok(cli("predict", "-h")).out


def test_shell_completion_script():
    """The completion script for a named shell, whatever the shell the tests run under (``--show-completion``
    detects the user's own shell from the process tree, which a CI job or a background run may not have)."""
    for shell in ("bash", "zsh", "fish"):
        r = ok(cli(env={"_MATGNN_COMPLETE": f"source_{shell}"}))
        assert "matgnn" in r.out and "complete" in r.out.lower(), r.out


def test_quiet_prints_only_results_and_errors(tmp_path):
    folder = cif_folder(tmp_path / "cifs", fmt="vasp")
    r = ok(cli("-q", "predict", "bandgap-2d", str(folder), "--out", str(tmp_path / "p.csv")))
    assert r.out.strip() == "" and len(list(csv.DictReader(open(tmp_path / "p.csv")))) == 12
    user_error(cli("-q", "predict", "bandgap-2d", str(tmp_path / "nothing")), "no such file or folder")
    user_error(cli("-q", "-v", "models"), "-q or -v")


def test_out_names_a_file_out_dir_a_folder_and_old_spellings_say_so(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    r = ok(cli("data", "info", str(folder), "--out-dir", str(tmp_path / "info")))
    assert (tmp_path / "info" / "data_info.json").is_file() and "is now --out-dir" not in r.out
    r = ok(cli("data", "info", str(folder), "--out", str(tmp_path / "info2")))
    assert (tmp_path / "info2" / "data_info.json").is_file() and "--out is now --out-dir" in r.out
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    r = ok(cli("train", str(cfg), "--output-dir", str(tmp_path / "old"), env={"MATGNN_CACHE_DIR": str(tmp_path)}))
    assert "--output-dir is now --out-dir" in r.out and len(runs_in(tmp_path / "old")) == 1


def test_train_on_a_source_with_target(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    ok(cli("train", str(folder), "--target", "lattice", "--epochs", "1", "--out-dir", str(tmp_path / "a"), env=env))
    ok(cli("train", str(folder), "--epochs", "1", "--out-dir", str(tmp_path / "b"), env=env))  # its only label
    ok(cli("train", "emt:40", "--epochs", "1", "--out-dir", str(tmp_path / "c"), env=env))
    assert all(len(runs_in(tmp_path / k)) == 1 for k in "abc")
    (folder / "id_prop.csv").write_text((folder / "id_prop.csv").read_text().replace("id,lattice", "id,lattice,b")
                                        .replace("\n", ",1\n").replace("id,lattice,b,1", "id,lattice,b"))
    user_error(cli("train", str(folder), env=env), "--target NAME", "lattice, b")
    user_error(cli("train", str(run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "r")),
                   "--target", "lattice"), "--target goes with a SOURCE")


def test_device_option_of_predict_and_evaluate(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    ok(cli("predict", "bandgap-2d", str(folder), "--out", str(tmp_path / "p.csv"), "--device", "cpu", env=env))
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    ok(cli("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    ok(cli("evaluate", str(run_dir), "--device", "cpu", env=env))
    ok(cli("evaluate", str(run_dir), "--device", "auto", env=env))
    user_error(cli("predict", "bandgap-2d", str(folder), "--device", "gpu7"), "--device", "auto, cpu, cuda")
    if not torch.cuda.is_available():
        user_error(cli("predict", "bandgap-2d", str(folder), "--out", str(tmp_path / "q.csv"), "--device", "cuda"),
                   "torch sees no CUDA device")
        assert not (tmp_path / "q.csv").exists()


@pytest.mark.parametrize("args", [["models"], ["predict", "bandgap-2d", "-h"]])
def test_no_dependency_warnings_in_a_users_terminal(args):
    """The installed executable, as a user starts it: nothing on stderr but matgnn's own lines."""
    r = ok(run(*args))
    assert "Warning" not in r.stderr, r.stderr
