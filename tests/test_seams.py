"""Where two parts meet: optional packages × backbones × the embedding cache, resume × changed data, two
processes × one run folder, the CLI's messages × text that looks like markup. Each case drives the CLI's
entry point (in-process through :func:`tests.userdata.cli`, or as a real process where concurrency is the
point) and checks exit code, message and files."""

from __future__ import annotations

import csv
import json
import sys

import pytest
from ase.build import mx2
from ase.io import write

from tests.userdata import cif_folder, cli, ok, run, run_yaml, runs_in, user_error


def _blocked(monkeypatch, *packages: str) -> None:
    """The packages as a fresh install without the ``[foundation]`` extra sees them: not importable
    (``sys.modules[name] = None`` is Python's own marker of an absent module)."""
    for p in packages:
        monkeypatch.setitem(sys.modules, p, None)


@pytest.fixture(scope="module")
def mos2(tmp_path_factory):
    d = tmp_path_factory.mktemp("mos2")
    write(d / "mos2.cif", mx2("MoS2", "2H", a=3.18, thickness=3.19, vacuum=10))
    return d / "mos2.cif"


@pytest.mark.parametrize("model, package", [("bandgap-2d-chgnet", "chgnet"), ("bandgap-2d-sevennet", "sevenn"),
                                            ("bandgap-2d-ensemble", "sevenn"), ("magmom-mp-chgnet", "chgnet")])
def test_a_shipped_backbone_model_without_its_extra_names_it_and_caches_nothing(model, package, mos2, tmp_path,
                                                                               monkeypatch):
    pytest.importorskip("chgnet")
    pytest.importorskip("sevenn")
    _blocked(monkeypatch, "chgnet", "sevenn")
    cache = tmp_path / "cache"
    r = cli("predict", model, str(mos2), "--out", str(tmp_path / "p.csv"), env={"MATGNN_CACHE_DIR": str(cache)})
    user_error(r, f"needs the {package} package", "pip install 'matgnn[foundation]'")
    assert not (tmp_path / "p.csv").exists()
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*")), sorted(cache.rglob("*"))


def test_after_installing_the_extra_the_answer_is_a_fresh_installs(mos2, tmp_path, monkeypatch):
    """The shared cache of a user who first ran without chgnet holds nothing that changes the answer once
    chgnet is installed (before: a `.rejected` marker and −0.082 eV for ever)."""
    pytest.importorskip("chgnet")
    shared = {"MATGNN_CACHE_DIR": str(tmp_path / "shared")}
    with monkeypatch.context() as m:
        _blocked(m, "chgnet", "sevenn")
        user_error(cli("predict", "bandgap-2d-chgnet", str(mos2), "--out", str(tmp_path / "a.csv"), env=shared),
                   "chgnet")
    ok(cli("predict", "bandgap-2d-chgnet", str(mos2), "--out", str(tmp_path / "a.csv"), env=shared))
    ok(cli("predict", "bandgap-2d-chgnet", str(mos2), "--out", str(tmp_path / "b.csv"),
           env={"MATGNN_CACHE_DIR": str(tmp_path / "fresh")}))
    (a,), (b,) = (list(csv.DictReader(open(tmp_path / f))) for f in ("a.csv", "b.csv"))
    assert a == b and float(a["optb88vdw_bandgap"]) > 0.3, (a, b)


def test_models_lists_each_models_extras(monkeypatch):
    r = ok(cli("models"))
    rows = {line.split("\t")[0]: line for line in r.out.splitlines() if "\t" in line}
    assert "needs: -" in rows["bandgap-2d"]
    assert "sevenn" in rows["bandgap-2d-ensemble"] and "chgnet" in rows["bandgap-2d-ensemble"]
    _blocked(monkeypatch, "sevenn")
    r = ok(cli("models"))
    line = next(ln for ln in r.out.splitlines() if ln.startswith("bandgap-2d-sevennet\t"))
    assert "sevenn (missing: pip install 'matgnn[foundation]')" in line, line


def test_matgnn_models_says_the_name_rule_and_bad_entries(tmp_path):
    import shutil

    from matgnn.artifacts import SHIPPED_DIR

    mine = tmp_path / "mine"
    shutil.copytree(SHIPPED_DIR / "bandgap-2d", mine / "bandgap-2d")
    (tmp_path / "file").write_text("x")
    env = {"MATGNN_MODELS": f"{mine}:{tmp_path / 'nope'}:{tmp_path / 'file'}"}
    r = ok(cli("models", env=env))
    flat = " ".join(r.out.split())
    assert f"{mine / 'bandgap-2d'} is not used: the name 'bandgap-2d' is taken by an earlier model" in flat
    assert "nope: no such folder" in flat and "file: not a folder" in flat
    user_error(cli("predict", "no-such-model", str(tmp_path), env=env), "nope: no such folder")


def test_messages_and_help_print_literally(tmp_path):
    """A path with brackets in an error, an install hint in a help text: printed as written."""
    r = cli("predict", "bandgap-2d", str(tmp_path / "[weird] name.cif"))
    user_error(r, "[weird] name.cif: the pattern matches no file")
    r = ok(cli("baseline", "--help"))
    assert "pip install 'matgnn[foundation]'" in " ".join(r.out.split())


def test_model_card_text_loses_terminal_control_characters(tmp_path):
    import shutil

    from matgnn.artifacts import SHIPPED_DIR

    mine = tmp_path / "mine"
    shutil.copytree(SHIPPED_DIR / "bandgap-2d", mine / "mailed")
    (mine / "mailed" / "MODEL_CARD.md").write_text("# x\n\x1b[2J\x1b]0;owned\x07Gap model \x1b[31mred\x1b[0m\n")
    r = ok(cli("models", "mailed", env={"MATGNN_MODELS": str(mine)}))
    assert "\x1b" not in r.out and "\x07" not in r.out and "Gap model red" in r.out
    r = ok(cli("models", env={"MATGNN_MODELS": str(mine)}))
    assert "\x1b" not in r.out and "Gap model red" in r.out


@pytest.fixture
def trained_run(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    ok(cli("train", str(cfg), "--set", "train.checkpoint_every=1", env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    return folder, run_dir, env


def test_resume_refuses_changed_labels_and_records_an_override(trained_run):
    folder, run_dir, env = trained_run
    assert (run_dir / "data_fingerprint.json").is_file() and (run_dir / "checkpoint_last.pt").is_file()
    ids = (folder / "id_prop.csv").read_text().splitlines()
    scaled = [ids[0]] + [f"{line.split(',')[0]},{float(line.split(',')[1]) * 10:.4f}" for line in ids[1:]]
    (folder / "id_prop.csv").write_text("\n".join(scaled) + "\n")
    before = sorted(p.name for p in run_dir.iterdir())
    r = cli("train", "--resume", str(run_dir), env=env)
    user_error(r, "the data changed since the run started", "labels of", "train structures", "--allow-changed-data")
    assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written
    r = ok(cli("train", "--resume", str(run_dir), "--allow-changed-data", env=env))
    assert "resuming with changed data" in r.out
    (entry,) = json.loads((run_dir / "data_changes.json").read_text())
    assert entry["allowed_by"] == "--allow-changed-data" and "labels of" in entry["changed"][0]


def test_resume_on_the_same_data_goes_on(trained_run):
    _, run_dir, env = trained_run
    r = ok(cli("train", "--resume", str(run_dir), env=env))
    assert "changed" not in r.out and not (run_dir / "data_changes.json").exists()


def test_a_second_process_cannot_train_a_held_run_folder(trained_run):
    """A real second process: while this one holds the run folder, `--resume` there says who holds it."""
    import os

    from matgnn.artifacts import RunFolder

    _, run_dir, env = trained_run
    held = RunFolder(run_dir)
    held.lock()
    try:
        r = run("train", "--resume", str(run_dir), env=env)
        user_error(r, "is being trained by", f"PID {os.getpid()}")
    finally:
        held.unlock()
    ok(cli("train", "--resume", str(run_dir), env=env))  # released: resumes


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """Files a user has that read as something else unless read with care."""
    import gzip

    from ase.build import bulk

    d = tmp_path_factory.mktemp("odd")
    write(d / "cu.cif", bulk("Cu", "fcc", a=3.6, cubic=True))
    write(d / "ag.cif", bulk("Ag", "fcc", a=4.09, cubic=True))
    cu, ag = (d / "cu.cif").read_text(), (d / "ag.cif").read_text()
    (d / "multi.cif").write_text(cu.replace("data_image0", "data_cu") + "\n" + ag.replace("data_image0", "data_ag"))
    last = "Cu  Cu4       1.0  0.5  0.5  0.0  1.0000"
    assert last in cu
    (d / "negocc.cif").write_text(cu.replace(last, last.replace("1.0000", "-1.0000")))
    (d / "bigocc.cif").write_text(cu.replace(last, last.replace("1.0000", "1.5000")))
    write(d / "cu.vasp", bulk("Cu", "fcc", a=3.6, cubic=True), format="vasp")
    lines = (d / "cu.vasp").read_text().splitlines()
    (d / "trunc.vasp").write_text("\n".join(lines[:9]) + "\n")
    (d / "inf.vasp").write_text("\n".join([lines[0], lines[1], "inf 0 0", *lines[3:]]) + "\n")
    write(d / "frames.extxyz", [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Ag", "fcc", a=4.09, cubic=True)])
    (d / "frames.extxyz.gz").write_bytes(gzip.compress((d / "frames.extxyz").read_bytes()))
    (d / "frames.extxyz").unlink()
    return d


def _predict(tmp_path, *files):
    out = tmp_path / "p.csv"
    return cli("predict", "bandgap-2d", *map(str, files), "--out", str(out)), out


def test_every_data_block_of_a_cif_is_read(odd_files, tmp_path):
    r, out = _predict(tmp_path, odd_files / "multi.cif")
    ok(r)
    assert [row["id"] for row in csv.DictReader(open(out))] == ["multi[cu]", "multi[ag]"]
    # one id, one file (a folder with id_prop.csv): several blocks are an error naming them
    from matgnn.data.sources.folder import read_structure_file
    from matgnn.errors import StructureError

    with pytest.raises(StructureError, match="holds 2 data blocks"):
        read_structure_file(odd_files / "multi.cif")


@pytest.mark.parametrize("name, words", [("negocc.cif", "site Cu4 has occupancy -1.0000"),
                                         ("bigocc.cif", "site Cu4 has occupancy 1.5000"),
                                         ("trunc.vasp", "ends after 1 of its 4 atom positions"),
                                         ("inf.vasp", "lattice vector 1 (line 3) is not three finite numbers")])
def test_a_file_that_would_read_as_something_else_is_named(odd_files, tmp_path, name, words):
    r, out = _predict(tmp_path, odd_files / name)
    user_error(r, words)
    assert not out.exists()


def test_gzipped_extxyz_frames_are_read(odd_files, tmp_path):
    r, out = _predict(tmp_path, odd_files / "frames.extxyz.gz")
    ok(r)
    assert [row["formula"] for row in csv.DictReader(open(out))] == ["Cu", "Ag"]


def _mailed(tmp_path, edit_args=None, edit_state=None):
    """A copy of the shipped bandgap-2d folder, edited as someone might have before mailing it."""
    import shutil

    import torch

    from matgnn.artifacts import SHIPPED_DIR

    folder = tmp_path / "mailed"
    shutil.copytree(SHIPPED_DIR / "bandgap-2d", folder)
    if edit_args:
        info = json.loads((folder / "model.json").read_text())
        info["init_args"].update(edit_args)
        (folder / "model.json").write_text(json.dumps(info))
    if edit_state:
        state = torch.load(folder / "state.pt", weights_only=True)
        edit_state(state)
        torch.save(state, folder / "state.pt")
    return folder


def test_non_finite_weights_are_refused_on_load(mos2, tmp_path):
    def nan(state):
        state[next(k for k in state if k.endswith("weight"))][0] = float("nan")

    folder = _mailed(tmp_path, edit_state=nan)
    user_error(cli("predict", str(folder), str(mos2), "--out", str(tmp_path / "p.csv")), "state.pt", "non-finite")
    assert not (tmp_path / "p.csv").exists()


def test_a_non_finite_answer_is_listed_not_written(mos2, tmp_path):
    def huge(state):
        for k, v in state.items():
            if k.startswith("heads") and v.is_floating_point():
                v.mul_(1e30)

    folder = _mailed(tmp_path, edit_state=huge)
    r = cli("predict", str(folder), str(mos2), "--out", str(tmp_path / "p.csv"))
    user_error(r, "not a finite number")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("args, words", [({"hidden": 200000}, "hidden: 200000 is beyond the bound"),
                                         ({"layers": 100000}, "layers: 100000 is beyond the bound")])
def test_size_arguments_of_a_mailed_model_are_bounded_before_allocation(mos2, tmp_path, args, words):
    import time

    folder = _mailed(tmp_path, edit_args=args)
    t0 = time.perf_counter()
    user_error(cli("predict", str(folder), str(mos2), "--out", str(tmp_path / "p.csv")), words)
    assert time.perf_counter() - t0 < 10


def test_a_graph_setting_beyond_its_bound_is_one_line(tmp_path):
    folder = cif_folder(tmp_path / "cifs")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    r = cli("train", str(cfg), "--set", "graphs.cutoff=1e9")
    user_error(r, "cutoff")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_fifo_as_state_pt_is_refused_not_read(mos2, tmp_path):
    """A real process with a time limit: a FIFO read would block it for ever."""
    import os

    folder = _mailed(tmp_path)
    (folder / "state.pt").unlink()
    os.mkfifo(folder / "state.pt")
    r = run("predict", str(folder), str(mos2), "--out", str(tmp_path / "p.csv"), timeout=120)
    user_error(r, "state.pt", "not a regular file")


def test_interrupts_of_the_pooled_graph_build(tmp_path):
    """Ctrl-C (SIGINT to the whole process group) during a two-worker graph build: exit 130 within seconds,
    every time, no worker traceback, no process left; a killed parent takes its workers with it."""
    import os
    import signal
    import subprocess
    import time

    from tests.userdata import MATGNN

    def start(k):
        # Ctrl-C's own disposition, as in a terminal: a harness that starts the tests in the background may hand
        # its children SIGINT ignored (a shell without job control does), which a terminal never does
        return subprocess.Popen([MATGNN, "graphs", "build", "emt:20000", "--workers", "2", "--cache-dir",
                                 str(tmp_path / f"c{k}")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def group(p):
        return subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()

    def wait_for_workers(p):
        t0 = time.time()
        while len(group(p)) < 3 and time.time() - t0 < 60:
            time.sleep(0.2)
        time.sleep(1.0)

    for k in range(3):
        p = start(k)
        wait_for_workers(p)
        os.killpg(p.pid, signal.SIGINT)
        t0 = time.time()
        try:
            out, _ = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            pytest.fail(f"try {k}: still running 20 s after Ctrl-C")
        assert p.returncode == 130 and time.time() - t0 < 10, (p.returncode, out)
        assert "Traceback" not in out, out
        time.sleep(0.5)
        assert group(p) == []
    p = start(9)
    wait_for_workers(p)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(3)
    assert group(p) == [], "workers outlived their parent"


def test_hidden_part_files_of_a_killed_predict_are_removed(mos2, tmp_path):
    import shutil

    out = tmp_path / "p.csv"
    dead = 2 ** 22 + 12345  # beyond the default pid_max of 4194304: no such process
    (tmp_path / f".p.csv.part-{dead}").write_text("half")
    (tmp_path / f".p_atoms.csv.part-{dead}").write_text("half")
    import os

    mine = tmp_path / f".p.csv.part-{os.getppid()}"  # a live process's (a prediction still running): kept
    mine.write_text("running")
    ok(cli("predict", "bandgap-2d", str(mos2), "--out", str(out)))
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == [mine.name], left
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)


def test_raw_tracebacks_that_are_user_errors(tmp_path, mos2):
    # an unknown JARVIS dataset
    user_error(cli("data", "info", "jarvis:nope", "--out", str(tmp_path / "i")), "unknown JARVIS dataset", "dft_2d")
    # a run whose config.yaml carries a !!python tag: refused, nothing executed, one line
    folder = cif_folder(tmp_path / "cifs")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "cache")}
    ok(cli("train", str(cfg), env=env))
    (run_dir,) = runs_in(tmp_path / "runs")
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(f'x: !!python/object/apply:os.system ["touch {tmp_path}/PWNED"]\n' + text)
    user_error(cli("evaluate", str(run_dir), env=env), "config.yaml (line 1)", "not plain YAML")
    assert not (tmp_path / "PWNED").exists()
    # --set with a value of the wrong type: one plain line, no URL
    r = cli("train", str(cfg), "--set", "train.epochs=abc", env=env)
    user_error(r, "train.epochs", "valid integer")
    assert "http" not in r.out and len(r.out.strip().splitlines()) == 1, r.out


def test_a_matbench_file_with_no_readable_structure_is_one_line(tmp_path):
    import gzip

    pytest.importorskip("matbench")
    frame = {"index": [0, 1], "columns": ["structure", "exfoliation_en"],
             "data": [[{"lattice": "broken"}, 1.0], [{"sites": []}, 2.0]]}
    path = tmp_path / "matbench_jdft2d.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(frame, f)
    folder = cif_folder(tmp_path / "cifs")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    r = cli("matbench", "matbench_jdft2d", str(cfg), "--data", str(path), "--out", str(tmp_path / "mb"))
    user_error(r, "none of its 2 structures could be read")


def test_a_full_disk_while_predicting_names_the_output(mos2, tmp_path):
    """A real process under a file-size limit (how a full disk looks to it)."""
    out = tmp_path / "p.csv"
    out.write_text("earlier results\n")
    r = run("predict", "bandgap-2d", str(mos2), "--out", str(out), max_file_bytes=60)
    user_error(r, f"{out}: could not write the predictions")
    assert out.read_text() == "earlier results\n"
    assert not [p for p in tmp_path.iterdir() if ".part-" in p.name]


@pytest.mark.parametrize("args, package", [(["baseline", "xgboost"], "xgboost"),
                                           (["baseline", "linear", "--features", "sevennet"], "sevenn"),
                                           (["baseline", "chgnet"], "chgnet")])
def test_a_command_needing_a_missing_extra_says_so_before_any_work(args, package, tmp_path, monkeypatch):
    _blocked(monkeypatch, package)
    folder = cif_folder(tmp_path / "cifs")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    r = cli(args[0], args[1], str(cfg), *args[2:], env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")})
    user_error(r, f"needs the {package} package", "pip install 'matgnn[")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_arguments_that_do_not_fit_the_weights_are_refused_before_building(mos2, tmp_path):
    """A CGCNN folder with hidden 128 instead of 64 (within bounds): the meta-device skeleton's shapes are
    compared with state.pt's first, so the message names a tensor and nothing was built. (PNA cannot be built
    on the meta device — PyG's PNAConv reads its degree histogram — and is checked right after building.)"""
    import shutil

    from matgnn.artifacts import SHIPPED_DIR

    folder = tmp_path / "cgcnn"
    shutil.copytree(SHIPPED_DIR / "magmom-mp-ensemble" / "members" / "m0-cgcnn", folder)
    info = json.loads((folder / "model.json").read_text())
    info["init_args"]["hidden"] = 2 * info["init_args"]["hidden"]
    (folder / "model.json").write_text(json.dumps(info))
    user_error(cli("predict", str(folder), str(mos2), "--out", str(tmp_path / "p.csv")), "has shape",
               "nothing was built")
    folder = _mailed(tmp_path, edit_args={"hidden": 128})  # PNA
    user_error(cli("predict", str(folder), str(mos2), "--out", str(tmp_path / "p.csv")), "state.pt does not fit")


def _with_lonely(folder):
    """``folder`` plus one atom alone in a 7 Å cell: CHGNet (6 Å graph) refuses it."""
    from ase import Atoms

    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "lonely.cif", Atoms("Cu", positions=[[0, 0, 0]], cell=[7, 7, 7], pbc=True))
    return folder


def test_a_refusal_inside_an_ensemble_of_delta_models_gets_no_answer(mos2, tmp_path):
    """bandgap-2d-ensemble: two delta models (SevenNet and CHGNet members): the structure CHGNet refuses is
    listed with CHGNet's reason, the other one answered with σ."""
    pytest.importorskip("chgnet")
    pytest.importorskip("sevenn")
    import shutil

    folder = _with_lonely(tmp_path / "in")
    shutil.copy(mos2, folder / "mos2.cif")
    out = tmp_path / "p.csv"
    r = ok(cli("predict", "bandgap-2d-ensemble", str(folder), "--out", str(out),
               env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    assert "1 skipped" in r.out, r.out
    (row,) = list(csv.DictReader(open(out)))
    assert row["id"] == "mos2" and float(row["optb88vdw_bandgap_std"]) >= 0
    (skipped,) = list(csv.DictReader(open(tmp_path / "p_skipped.csv")))
    assert skipped["id"] == "lonely" and skipped["code"] == "backbone_refused" and "CHGNet" in skipped["detail"]


def test_a_backbone_baseline_leaves_refused_structures_out_of_fit_and_scores(tmp_path):
    pytest.importorskip("chgnet")
    folder = _with_lonely(cif_folder(tmp_path / "cifs"))
    with open(folder / "id_prop.csv", "a") as f:
        f.write("lonely,7.0\n")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    r = ok(cli("baseline", "linear", str(cfg), "--features", "chgnet",
               env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    assert "1 structures refused by the backbone are left out of the fit and the scores" in " ".join(r.out.split())
    (run_dir,) = runs_in(tmp_path / "runs")
    info = json.loads((run_dir / "baseline.json").read_text())
    assert info["backbone"]["rejected"] == ["lonely"]
    assert json.loads((run_dir / "metrics.json").read_text())["chgnet_rejected"] == 1
