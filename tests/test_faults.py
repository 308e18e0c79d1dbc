"""The fault battery: what a hostile but realistic user does to the CLI — bad files, ids,
encodings, duplicates, interruption, concurrency, read-only and full storage, malicious
artifacts. Every case runs the ``matgnn`` command — through its entry point in this process
(``tests.userdata.cli``), or as a real process where signals, resource limits, permissions or
concurrency are the point — and asserts the exit status, the message (one line naming the path or
structure, no traceback) and that nothing earlier was lost or executed."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.userdata import (
    MATGNN,
    READ_ONLY_WORDS,
    cif_folder,
    cli,
    crystal,
    magmom_jsonl,
    magmom_run_yaml,
    ok,
    read_only,
    run,
    run_yaml,
    runs_in,
    user_error,
    user_error_any,
    world_readable_tmp,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def folder(tmp_path):
    return cif_folder(tmp_path / "my_cifs")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small trained run (world-readable, for the unprivileged cases)."""
    w = world_readable_tmp()
    cif_folder(w / "data")
    cfg = run_yaml(w / "run.yaml", f"{{kind: folder, path: {w / 'data'}}}", w / "runs")
    ok(cli("train", str(cfg), env={"MATGNN_CACHE_DIR": str(w / "cache")}))
    yield {"w": w, "run": runs_in(w / "runs")[0], "cfg": cfg}
    shutil.rmtree(w, ignore_errors=True)


def info(path: Path, tmp: Path, *extra: str):
    return cli("data", "info", str(path), "--out", str(tmp / "info"), *extra)


def skipped_ids(tmp: Path) -> dict[str, str]:
    return {r["id"]: r["code"] for r in csv.DictReader(open(tmp / "info" / "skipped.csv"))}


# -- id_prop.csv: layout, encodings, ids ---------------------------------------------------------
def test_empty_id_prop(folder, tmp_path):
    (folder / "id_prop.csv").write_text("")
    user_error(info(folder, tmp_path), "id_prop.csv", "empty")


def test_semicolon_delimited_id_prop(folder, tmp_path):
    (folder / "id_prop.csv").write_text("s0;3.61\ns1;4.1\n")
    user_error(info(folder, tmp_path), "id_prop.csv line 1", "comma-separated")


def test_undecodable_id_prop(folder, tmp_path):
    (folder / "id_prop.csv").write_bytes(b"s0,3.61\ns1,4.1\ns\xe9,1.0\n")
    user_error(info(folder, tmp_path), "id_prop.csv line 3", "not UTF-8")


def test_id_prop_with_bom_and_crlf_reads(folder, tmp_path):
    text = (folder / "id_prop.csv").read_text().replace("\n", "\r\n")
    (folder / "id_prop.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    r = ok(info(folder, tmp_path))
    assert "12 usable of 12" in " ".join(r.out.split())


def test_first_label_na_is_not_a_header(folder, tmp_path):
    rows = (folder / "id_prop.csv").read_text().splitlines()[1:]
    rows[0] = "s0,N/A"
    (folder / "id_prop.csv").write_text("\n".join(rows) + "\n")
    r = ok(info(folder, tmp_path))
    assert "12 usable of 12" in " ".join(r.out.split())
    data = json.loads((tmp_path / "info" / "data_info.json").read_text())
    assert data["graph_targets"]["target"]["missing"] == 1 and data["graph_targets"]["target"]["labelled"] == 11


@pytest.mark.parametrize("bad", ["../secret", "/etc/passwd", "sub/s1", "..", "a\\b"])
def test_ids_never_leave_their_folder(folder, tmp_path, bad):
    (tmp_path / "secret.cif").write_text((folder / "s0.cif").read_text())
    with open(folder / "id_prop.csv", "a") as f:
        f.write(f"{bad},1.0\n")
    user_error(info(folder, tmp_path), "id_prop.csv line 14", "not a plain file name")


def test_duplicate_id_in_id_prop(folder, tmp_path):
    with open(folder / "id_prop.csv", "a") as f:
        f.write("s3,9.9\n")
    user_error(info(folder, tmp_path), "'s3' appears twice", "lines 5 and 14")


def test_row_with_wrong_number_of_cells(folder, tmp_path):
    with open(folder / "id_prop.csv", "a") as f:
        f.write("s1,1.0,2.0\n")
    user_error(info(folder, tmp_path), "line 14", "3 cells")


def test_missing_file_and_file_without_row_are_listed(folder, tmp_path):
    (folder / "s2.cif").unlink()
    with open(folder / "id_prop.csv", "a") as f:
        f.write("ghost,1.0\n")
    (folder / "extra.cif").write_text((folder / "s0.cif").read_text())
    (folder / "atom_init.json").write_text("{}")  # CGCNN's element table: not a structure, not listed
    r = ok(info(folder, tmp_path))
    assert "11 usable of 14" in " ".join(r.out.split())
    assert skipped_ids(tmp_path) == {"s2": "unparsable", "ghost": "unparsable", "extra": "not_in_id_prop"}


def test_empty_garbage_undecodable_and_badly_labelled_files_are_skipped_and_named(folder, tmp_path):
    (folder / "s0.cif").write_text("")
    (folder / "s1.cif").write_text("this is not a crystal\n")
    (folder / "s2.cif").write_bytes(b"\xff\xfe\x00garbage\x81")
    rows = (folder / "id_prop.csv").read_text().replace("s3,", "s3,abc#").replace("s4,", "s4,inf#").split("\n")
    (folder / "id_prop.csv").write_text("\n".join(r.split("#")[0] if "#" in r else r for r in rows))
    r = ok(info(folder, tmp_path))
    assert "7 usable of 12" in " ".join(r.out.split())
    got = list(csv.DictReader(open(tmp_path / "info" / "skipped.csv")))
    why = {g["id"]: g["detail"] for g in got}
    assert "empty" in why["s0"] and "cannot parse" in why["s1"] and why["s2"]
    assert "'abc'" in why["s3"] and "inf" in why["s4"]
    assert all(g["file"] for g in got)


def test_folder_without_id_prop(tmp_path):
    (tmp_path / "d").mkdir()
    user_error(info(tmp_path / "d", tmp_path), "id_prop.csv not found", "matgnn predict")


def test_an_edited_structure_file_is_never_served_stale(folder, tmp_path):
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "c")}
    ok(cli("graphs", "build", str(folder), env=env))
    assert "reused" in ok(cli("graphs", "build", str(folder), env=env)).out
    from ase.io import write

    write(folder / "s5.cif", crystal(5, "Fe", 2.9))
    r = ok(cli("graphs", "build", str(folder), env=env))
    assert "built" in r.out and "reused" not in r.out


# -- structure files are data ---------------------------------------------------------------------
def test_pymatgen_json_with_module_references_runs_no_code(tmp_path):
    d = cif_folder(tmp_path / "d", fmt="json", n=4)
    evil = tmp_path / "evilpkg"
    evil.mkdir()
    (evil / "evilmod.py").write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w').close()\nclass E: pass\n")
    s = json.loads((d / "s0.json").read_text())
    s["sites"][0]["properties"] = {"x": {"@module": "evilmod", "@class": "E", "@version": None}}
    s["@module"], s["@class"] = "evilmod", "E"
    (d / "s0.json").write_text(json.dumps(s))
    r = ok(cli("graphs", "build", str(d), env={"PYTHONPATH": str(evil)}))
    assert "4 kept" in r.out and not (tmp_path / "PWNED").exists()


def test_disordered_json_structure_is_skipped(tmp_path):
    d = cif_folder(tmp_path / "d", fmt="json", n=4)
    s = json.loads((d / "s1.json").read_text())
    s["sites"][0]["species"] = [{"element": "Cu", "occu": 0.5}, {"element": "Au", "occu": 0.5}]
    (d / "s1.json").write_text(json.dumps(s))
    ok(info(d, tmp_path))
    assert skipped_ids(tmp_path) == {"s1": "unparsable"}


# -- model folders, checkpoints and caches are data ----------------------------------------------
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_model_json_naming_arbitrary_code_is_refused(trained, tmp_path):
    m = tmp_path / "mailed"
    shutil.copytree(trained["run"] / "model", m)
    info_ = json.loads((m / "model.json").read_text())
    info_.update(module="os", **{"class": "system"}, init_args={"command": f"touch {tmp_path / 'PWNED'}"})
    (m / "model.json").write_text(json.dumps(info_))
    user_error(cli("predict", str(m), str(trained["w"] / "data"), "--out", str(tmp_path / "p.csv")),
               "os.system", "not one of matgnn's model classes")
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "p.csv").exists()


def test_model_json_naming_a_matgnn_function_is_refused(trained, tmp_path):
    m = tmp_path / "mailed"
    shutil.copytree(trained["run"] / "model", m)
    info_ = json.loads((m / "model.json").read_text())
    info_.update(module="matgnn.training.run", **{"class": "train"})
    (m / "model.json").write_text(json.dumps(info_))
    user_error(cli("predict", str(m), str(trained["w"] / "data")), "matgnn.training.run.train", "refused")


def test_pickled_weights_are_refused(trained, tmp_path):
    m = tmp_path / "mailed"
    shutil.copytree(trained["run"] / "model", m)
    (m / "state.pt").write_bytes(pickle.dumps(_Evil(tmp_path / "PWNED")))
    user_error(cli("predict", str(m), str(trained["w"] / "data"), "--out", str(tmp_path / "p.csv")), "state.pt")
    assert not (tmp_path / "PWNED").exists()


def test_model_json_that_is_not_json(trained, tmp_path):
    m = tmp_path / "mailed"
    shutil.copytree(trained["run"] / "model", m)
    (m / "model.json").write_text("{not json")
    user_error(cli("predict", str(m), str(trained["w"] / "data")), "model.json", "not JSON")


def test_crafted_checkpoint_is_refused_on_resume(trained, tmp_path):
    r = tmp_path / "run"
    shutil.copytree(trained["run"], r)
    import torch

    torch.save({"epoch": 1, "x": _Evil(tmp_path / "PWNED")}, r / "checkpoint_last.pt")
    user_error(cli("train", "--resume", str(r)), "checkpoint_last.pt", "refused")
    assert not (tmp_path / "PWNED").exists()


def test_crafted_graph_cache_is_refused(folder, tmp_path):
    # real processes: this one tampers with the LMDB file, which a process holding it open may not do
    env = {"MATGNN_CACHE_DIR": str(tmp_path / "c")}
    ok(run("graphs", "build", str(folder), env=env))
    (cache,) = (tmp_path / "c" / "graphs").iterdir()
    import lmdb

    with lmdb.open(str(cache)) as db, db.begin(write=True) as txn:
        txn.put(b"__meta__", pickle.dumps(_Evil(tmp_path / "PWNED")))
    user_error(run("graphs", "build", str(folder), env=env), str(cache), "delete")
    assert not (tmp_path / "PWNED").exists()


# -- duplicates and splits -----------------------------------------------------------------------
def test_duplicate_ids_in_an_extxyz_source_stop_training(tmp_path):
    from ase.io import write

    frames = []
    for k in range(8):
        a = crystal(k, "Cu", 3.6)
        a.info.update(id="dup" if k in (2, 5) else f"c{k}", e=float(k))
        frames.append(a)
    write(tmp_path / "s.extxyz", frames)
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: ase, path: {tmp_path / 's.extxyz'}}}", tmp_path / "runs",
                   target="e")
    user_error(cli("train", str(cfg)), "'dup'", "more than once")
    assert runs_in(tmp_path / "runs") == []


def test_evaluate_refuses_a_source_that_gained_a_duplicate(trained, tmp_path):
    r = tmp_path / "run"
    shutil.copytree(trained["run"], r)
    data = tmp_path / "data"
    shutil.copytree(trained["w"] / "data", data)
    cfg = (r / "config.yaml").read_text().replace(str(trained["w"] / "data"), str(data))
    (r / "config.yaml").write_text(cfg)
    assert ok(cli("evaluate", str(r)))
    with open(data / "id_prop.csv", "a") as f:
        f.write("s1,9.0\n")
    user_error(cli("evaluate", str(r)), "'s1' appears twice")


# -- predict: inputs, outputs, ids ---------------------------------------------------------------
def test_predict_missing_path(trained, tmp_path):
    user_error(cli("predict", str(trained["run"]), str(tmp_path / "nope"), "--out", str(tmp_path / "p.csv")),
               "nope", "no such file or folder")
    assert not (tmp_path / "p.csv").exists()


def test_predict_pattern_without_match(trained, tmp_path):
    user_error(cli("predict", str(trained["run"]), str(tmp_path / "*.cif")), "matches no file")


def test_predict_empty_folder(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    user_error(cli("predict", str(trained["run"]), str(tmp_path / "empty"), "--out", str(tmp_path / "p.csv")),
               "no structures found")
    assert not (tmp_path / "p.csv").exists()


def test_predict_with_only_bad_files_keeps_earlier_results(trained, tmp_path):
    out = tmp_path / "p.csv"
    ok(cli("predict", str(trained["run"]), str(trained["w"] / "data"), "--out", str(out)))
    before = out.read_bytes()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.cif").write_text("garbage")
    user_error(cli("predict", str(trained["run"]), str(tmp_path / "bad"), "--out", str(out)), "none of the 1")
    assert out.read_bytes() == before


def test_predict_output_folder_missing_or_a_folder(trained, tmp_path):
    user_error(cli("predict", str(trained["run"]), str(trained["w"] / "data"), "--out", str(tmp_path / "no/p.csv")),
               "does not exist")
    user_error(cli("predict", str(trained["run"]), str(trained["w"] / "data"), "--out", str(tmp_path)),
               "is a folder")


def test_a_failed_predict_keeps_every_earlier_output(tmp_path):
    from ase.io import write

    (tmp_path / "in").mkdir()
    for k in range(3):
        write(tmp_path / "in" / f"c{k}.cif", crystal(k, "Ni", 3.52))
    out = tmp_path / "p.csv"
    ok(cli("predict", "magmom-mp", str(tmp_path / "in"), "--out", str(out)))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    user_error(cli("predict", "magmom-mp", str(tmp_path / "in"), "--out", str(out),
                   "--atoms-extxyz", str(tmp_path / "no" / "x.extxyz")), "x.extxyz")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_colliding_stems_get_unique_ids_and_warm_starts(tmp_path):
    from ase.io import write

    for k, el in enumerate(("Ni", "Fe")):
        (tmp_path / f"calc{k + 1}").mkdir()
        write(tmp_path / f"calc{k + 1}" / "POSCAR", crystal(k, el, 3.5), format="vasp")
    r = ok(cli("predict", "magmom-mp", str(tmp_path / "calc1"), str(tmp_path / "calc2"), "--out",
               str(tmp_path / "p.csv"), "--magmom-export", str(tmp_path / "starts")))
    ids = [row["id"] for row in csv.DictReader(open(tmp_path / "p.csv"))]
    assert ids == ["POSCAR", "calc2-POSCAR"] and "1 structures had an id used before" in " ".join(r.out.split())
    assert sorted(p.name for p in (tmp_path / "starts").glob("*.MAGMOM")) == ["POSCAR.MAGMOM", "calc2-POSCAR.MAGMOM"]


def test_no_stale_side_files(trained, tmp_path):
    from ase.io import write

    (tmp_path / "in").mkdir()
    for k in range(2):
        write(tmp_path / "in" / f"c{k}.cif", crystal(k, "Cu", 3.6))
    (tmp_path / "in" / "bad.cif").write_text("garbage")
    out = tmp_path / "p.csv"
    ok(cli("predict", "magmom-mp", str(tmp_path / "in"), "--out", str(out)))
    assert (tmp_path / "p_atoms.csv").is_file() and (tmp_path / "p_skipped.csv").is_file()
    (tmp_path / "in" / "bad.cif").unlink()
    ok(cli("predict", str(trained["run"]), str(tmp_path / "in"), "--out", str(out)))
    assert not (tmp_path / "p_atoms.csv").exists() and not (tmp_path / "p_skipped.csv").exists()


def test_top_applies_to_side_files_and_warm_starts(tmp_path):
    from ase.io import write

    (tmp_path / "in").mkdir()
    for k, el in enumerate(("Ni", "Fe", "Cu", "Co")):
        write(tmp_path / "in" / f"{el}.cif", crystal(k, el, 3.5))
    ok(cli("predict", "magmom-mp-ensemble", str(tmp_path / "in"), "--sort-by=-n_atoms", "--top", "1",
           "--out", str(tmp_path / "p.csv"), "--magmom-export", str(tmp_path / "starts"),
           "--atoms-extxyz", str(tmp_path / "a.extxyz")))
    ids = {row["id"] for row in csv.DictReader(open(tmp_path / "p.csv"))}
    atom_ids = {row["id"] for row in csv.DictReader(open(tmp_path / "p_atoms.csv"))}
    assert len(ids) == 1 and atom_ids == ids
    assert [p.stem for p in (tmp_path / "starts").glob("*.MAGMOM")] == list(ids)
    from ase.io import read

    assert len(read(tmp_path / "a.extxyz", index=":")) == 1


def test_top_zero_and_unknown_filter_key(trained, tmp_path):
    user_error(cli("predict", str(trained["run"]), str(trained["w"] / "data"), "--top", "0"), "--top")
    user_error(cli("predict", str(trained["run"]), str(trained["w"] / "data"), "--where", "band_gap>1"),
               "band_gap")


def test_elements_unseen_in_training_are_flagged(trained, tmp_path):
    from ase.build import bulk
    from ase.io import write

    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "cu.cif", crystal(0, "Cu", 3.6))
    write(tmp_path / "in" / "fecu.cif", bulk("FeCu", "rocksalt", a=4.0))
    ok(cli("predict", str(trained["run"]), str(tmp_path / "in"), "--out", str(tmp_path / "p.csv"),
           "--atoms-extxyz", str(tmp_path / "a.extxyz")))
    flags = {r["id"]: r["unseen_elements"] for r in csv.DictReader(open(tmp_path / "p.csv"))}
    assert flags == {"cu": "", "fecu": "Fe"}
    from ase.io import read

    frames = {a.info["id"]: a for a in read(tmp_path / "a.extxyz", index=":")}
    assert frames["fecu"].arrays["unseen_element"].tolist() == [1, 0]


# -- interruption ------------------------------------------------------------------------------------
def _start_training(tmp_path: Path, epochs: int = 100000) -> tuple[subprocess.Popen, Path]:
    """A training that cannot end before the test interrupts it: 12 tiny structures run an epoch in
    milliseconds, so a short run (or early stopping) could finish while a busy machine delays the signal."""
    cif_folder(tmp_path / "d")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {tmp_path / 'd'}}}", tmp_path / "runs",
                   epochs=epochs, extra="")
    text = cfg.read_text().replace("checkpoint_every: 0", f"checkpoint_every: 3600, patience: {epochs}")
    # only the interrupt writes a checkpoint
    cfg.write_text(text)
    # Ctrl-C as a user's terminal sends it: a test suite started in the background of a non-interactive shell
    # inherits SIGINT ignored, and a program rightly keeps an ignored SIGINT ignored
    p = subprocess.Popen([MATGNN, "train", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    lines = []
    while time.time() < deadline:
        line = p.stdout.readline()
        lines.append(line)
        if line.startswith("epoch 3/"):
            return p, runs_in(tmp_path / "runs")[0]
    p.kill()
    raise AssertionError("training never reached epoch 3:\n" + "".join(lines))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_training_keeps_a_checkpoint_and_resumes(tmp_path, sig):
    p, run_dir = _start_training(tmp_path)
    p.send_signal(sig)
    rest = p.communicate(timeout=60)[0]
    assert p.returncode == 130, rest
    flat = " ".join(rest.split())
    assert "matgnn train --resume" in flat and "Traceback" not in rest
    import torch

    done = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)["epoch"]
    assert done >= 2 and f"the checkpoint after epoch {done}" in flat
    text = (run_dir / "config.yaml").read_text().replace("epochs: 100000", f"epochs: {done + 2}")
    (run_dir / "config.yaml").write_text(text)
    r = ok(cli("train", "--resume", str(run_dir)))
    assert f"continuing after epoch {done}" in r.out
    assert len(list(csv.DictReader(open(run_dir / "history.csv")))) == done + 2


def test_resume_without_checkpoint_and_resume_with_overrides(tmp_path, trained):
    (tmp_path / "r").mkdir()
    user_error(cli("train", "--resume", str(tmp_path / "r")), "checkpoint_last.pt")
    user_error(cli("train", "--resume", str(trained["run"]), "--set", "train.epochs=3"), "--resume")


# -- concurrency --------------------------------------------------------------------------------------
def test_two_runs_started_together_get_their_own_folders(tmp_path):
    cif_folder(tmp_path / "d")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {tmp_path / 'd'}}}", tmp_path / "runs")
    env = dict(os.environ, MATGNN_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([MATGNN, "train", str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = runs_in(tmp_path / "runs")
    assert len(runs) == 2 and all((r / "metrics.json").is_file() for r in runs)


# -- read-only and full storage ---------------------------------------------------------------------
def test_read_only_output_folder_for_training(trained, tmp_path):
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro:
        r = cli("train", str(trained["cfg"]), "--set", f"output_dir={ro / 'runs'}",
                env={"MATGNN_CACHE_DIR": str(trained["w"] / "cache")})
    user_error_any(r, str(ro), READ_ONLY_WORDS)


def test_read_only_cache_folder(trained, tmp_path):
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro:
        r = cli("graphs", "build", str(trained["w"] / "data"), env={"MATGNN_CACHE_DIR": str(ro)})
    user_error_any(r, str(ro), READ_ONLY_WORDS)


def test_a_complete_cache_in_a_read_only_folder_is_used(trained, tmp_path):
    ok(cli("graphs", "build", str(trained["w"] / "data"), env={"MATGNN_CACHE_DIR": str(tmp_path / "c")}))
    with read_only(tmp_path / "c") as ro:
        r = ok(cli("graphs", "build", str(trained["w"] / "data"), env={"MATGNN_CACHE_DIR": str(ro)}))
    assert "reused" in r.out


def test_a_split_by_structural_twins_on_a_read_only_cache(trained, tmp_path):
    """The twin groups are kept beside the graph cache; a read-only cache only costs the search, said once."""
    grouped = ("--set", "split.kind=grouped", "--set", "split.group_by=structure", "--set", "split.train=0.5",
               "--set", "split.val=0.2")
    ok(cli("graphs", "build", str(trained["w"] / "data"), env={"MATGNN_CACHE_DIR": str(tmp_path / "c")}))
    with read_only(tmp_path / "c") as ro:
        r = ok(cli("train", str(trained["cfg"]), *grouped, "--set", f"output_dir={tmp_path / 'r1'}",
                   env={"MATGNN_CACHE_DIR": str(ro)}))
    assert "twin groups not kept beside the graph cache" in r.out and "12 of 12 structures have a structural twin" in r.out
    r = ok(cli("train", str(trained["cfg"]), *grouped, "--set", f"output_dir={tmp_path / 'r2'}",
               env={"MATGNN_CACHE_DIR": str(tmp_path / "c")}))
    assert "not kept" not in r.out and len(list((tmp_path / "c").rglob("twins.json"))) == 1
    splits = [json.loads((runs_in(tmp_path / r)[0] / "split.json").read_text()) for r in ("r1", "r2")]
    assert [{k: s[k] for k in ("train", "val", "test")} for s in splits][0] == {k: splits[1][k] for k in ("train", "val", "test")}


def test_predict_into_a_read_only_folder(trained, tmp_path):
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro:
        r = cli("predict", str(trained["run"]), str(trained["w"] / "data"), "--out", str(ro / "p.csv"))
        assert list(ro.iterdir()) == []
    user_error_any(r, "p.csv", READ_ONLY_WORDS)


def test_data_info_into_a_read_only_folder(trained, tmp_path):
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro:
        r = cli("data", "info", str(trained["w"] / "data"), "--out", str(ro / "x"))
    user_error_any(r, str(ro / "x"), READ_ONLY_WORDS)


def test_full_disk_during_predict_keeps_earlier_results(tmp_path):
    from ase.io import write

    (tmp_path / "in").mkdir()
    for k in range(40):
        write(tmp_path / "in" / f"c{k}.cif", crystal(k % 12, "Ni", 3.52))
    out = tmp_path / "p.csv"
    ok(cli("predict", "magmom-mp", str(tmp_path / "in"), "--out", str(out), "--limit", "2"))
    before = {p.name: p.read_bytes() for p in tmp_path.glob("p*.csv")}
    r = run("predict", "magmom-mp", str(tmp_path / "in"), "--out", str(out), max_file_bytes=600)
    user_error(r, "File too large")
    assert {p.name: p.read_bytes() for p in tmp_path.glob("p*.csv")} == before
    assert not list(tmp_path.glob(".p*"))


def test_full_disk_during_training(tmp_path):
    cif_folder(tmp_path / "d")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {tmp_path / 'd'}}}", tmp_path / "runs")
    ok(cli("graphs", "build", str(tmp_path / "d")))  # the cache fits; the checkpoint does not
    r = run("train", str(cfg), max_file_bytes=20_000)
    user_error(r, "File too large")


# -- configs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,words", [
    ("model.name=cgcnnn", ["invalid config", "'cgcnnn'", "expected tags"]),
    ("split={kind: kfold, fold: 7}", ["split.fold 7"]),
    ("split.kind=ids", ["split.ids_file"]),
    ("targets=[{name: band_gap}]", ["band_gap", "graph-level targets"]),
    ("train.epochs=-1", ["invalid config", "epochs"]),
    ("train.epoch=3", ["invalid config", "epoch"]),
])
def test_bad_settings_fail_before_any_work_and_leave_no_run_folder(folder, tmp_path, override, words):
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    user_error(cli("train", str(cfg), "--set", override), *words)
    assert runs_in(tmp_path / "runs") == []


def test_broken_yaml_and_missing_config(tmp_path):
    (tmp_path / "c.yaml").write_text("source: {kind: folder\n  path: [")
    user_error(cli("train", str(tmp_path / "c.yaml")), "invalid config")
    user_error(cli("train", str(tmp_path / "nope.yaml")), "nope.yaml")


# -- tiny data ---------------------------------------------------------------------------------------
def test_tiny_data_warns_and_never_reports_training_loss_as_validation(tmp_path):
    cif_folder(tmp_path / "d", n=4)
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {tmp_path / 'd'}}}", tmp_path / "runs")
    r = ok(cli("train", str(cfg), "--set", "split.train=0.7", "--set", "split.val=0.05"))
    assert "validation split is empty" in " ".join(r.out.split())
    hist = list(csv.DictReader(open(runs_in(tmp_path / "runs")[0] / "history.csv")))
    assert all(h["val_loss"] in ("", "nan") for h in hist)


def test_all_structures_bad_stops_with_an_empty_training_split(tmp_path):
    d = cif_folder(tmp_path / "d", n=4)
    for p in d.glob("*.cif"):
        p.write_text("junk")
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {d}}}", tmp_path / "runs")
    r = cli("train", str(cfg))
    assert r.returncode == 2 and "Traceback" not in r.out
    assert runs_in(tmp_path / "runs") == []


def test_no_traceback_for_internal_use_of_python_m(tmp_path):
    """`python -m matgnn` goes through the same error handling as the executable."""
    r = subprocess.run([sys.executable, "-m", "matgnn", "predict", "magmom-mp", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such file" in r.stderr


def test_id_split_with_only_train_and_test_carves_validation_from_train(folder, tmp_path):
    ids = {"train": {f"s{k}": 1.0 for k in range(9)}, "test": [f"s{k}" for k in (9, 10, 11)] + ["not-here"]}
    (tmp_path / "fold0.json").write_text(json.dumps(ids))
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs")
    r = ok(cli("train", str(cfg), "--set", f"split={{kind: ids, ids_file: {tmp_path / 'fold0.json'}, val: 0.25}}"))
    flat = " ".join(r.out.split())
    assert "no validation ids" in flat and "test 1" in flat  # the unknown test id is counted
    split = json.loads((runs_in(tmp_path / "runs")[0] / "split.json").read_text())
    assert split["test"] == ["s9", "s10", "s11"] and len(split["val"]) == 2
    assert set(split["val"]) | set(split["train"]) == {f"s{k}" for k in range(9)}


def test_nonsense_numbers_and_an_output_dir_that_is_a_file(trained, tmp_path):
    r = cli("predict", str(trained["run"]), str(trained["w"] / "data"), "--batch-size", "0",
            "--out", str(tmp_path / "p.csv"))
    assert r.returncode == 2 and "--batch-size" in r.out and "Traceback" not in r.out
    assert not (tmp_path / "p.csv").exists()
    (tmp_path / "afile").write_text("mine")
    user_error(cli("train", str(trained["cfg"]), "--set", f"output_dir={tmp_path / 'afile'}"), "afile")
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("model", ["cgcnn", "cgconv_net", "pna", "gatv2conv", "alignn", "chgnet"])
def test_a_one_atom_crystal_alone_in_the_last_batch(tmp_path, model):
    """Batch norm in training needs more than one row; a one-atom cell (primitive Cu) left alone in the
    last training batch used to stop CGCNN/PNA runs with torch's "Expected more than 1 value per
    channel". Such a batch is now normalised with the running statistics. (Also every family's node
    head, per-atom moments, end to end.)"""
    if model == "chgnet":
        pytest.importorskip("chgnet", reason="model 'chgnet' needs the chgnet package")
    data = magmom_jsonl(tmp_path / "m.jsonl.gz")
    cfg = magmom_run_yaml(tmp_path / "c.yaml", data, tmp_path / "runs", f"{{name: {model}, hidden: 16, layers: 2}}")
    ok(cli("train", str(cfg), env={"MATGNN_CACHE_DIR": str(tmp_path / "cache")}))
    (run_dir,) = runs_in(tmp_path / "runs")
    atoms = list(csv.DictReader(open(run_dir / "predictions_test_atoms.csv")))
    assert atoms and all(float(a["magmom_pred"]) == float(a["magmom_pred"]) for a in atoms)  # no NaN
