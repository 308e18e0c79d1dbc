"""`matgnn reference`: a labelled reference set as a model (matched structures get the reference's label,
the rest the fallback model's prediction), used by `predict` and as the frozen base of delta learning —
driven through the installed CLI on CIF folders."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.userdata import cif_folder, cli, ok, run, run_yaml, runs_in, user_error


def _predictions(path: Path, head: str) -> dict[str, float]:
    return {r["id"]: float(r[head]) for r in csv.DictReader(open(path))}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """12 fcc crystals (labels 'lattice'); a base model of 'a0' (the same labels under another name)
    trained on them; a reference folder of s0..s2 (Cu, Ag, Au) whose 'a0' labels are offset by +1 Å, so a
    reference answer is told apart from the fallback's."""
    tmp = tmp_path_factory.mktemp("reference")
    folder = cif_folder(tmp / "cifs")
    rows = (folder / "id_prop.csv").read_text().splitlines()[1:]
    (folder / "id_prop_a0.csv").write_text("id,a0\n" + "\n".join(rows) + "\n")
    ok(cli("train", str(run_yaml(tmp / "base.yaml", f"{{kind: folder, path: {folder}, id_prop: id_prop_a0.csv}}",
                                 tmp / "base_runs", epochs=2, target="a0"))))
    (base_run,) = runs_in(tmp / "base_runs")
    ref = tmp / "ref_cifs"
    ref.mkdir()
    labels = {}
    for k in range(3):
        shutil.copy(folder / f"s{k}.cif", ref / f"s{k}.cif")
        labels[f"s{k}"] = float(rows[k].split(",")[1]) + 1.0
    (ref / "id_prop.csv").write_text("id,a0\n" + "".join(f"{i},{v}\n" for i, v in labels.items()) + "s_missing,3.0\n")
    return {"tmp": tmp, "folder": folder, "base_run": base_run, "ref": ref, "labels": labels}


def test_reference_answers_matches_and_falls_back_for_the_rest(setup, tmp_path):
    folder, base_run, labels = setup["folder"], setup["base_run"], setup["labels"]
    out = tmp_path / "ref-model"
    r = ok(cli("reference", str(setup["ref"]), "--target", "a0", "--fallback", str(base_run), "--out", str(out)))
    assert "reference of 3 structures" in r.out
    # the id_prop row without a structure file is left out and listed, not dropped silently
    assert "1 structures left out" in " ".join(r.out.split())
    left = list(csv.DictReader(open(out / "reference_left_out.csv")))
    assert [row["id"] for row in left] == ["s_missing"]
    info = json.loads((out / "model.json").read_text())
    assert info["class"] == "ReferenceModel" and info["reference"]["entries"] == 3 and "graphs" in info

    # a rotated 2×1×1 supercell of s0 (and s6: Cu fcc at another lattice constant, scaled) match s0
    from ase.io import read, write

    extra = tmp_path / "extra"
    extra.mkdir()
    atoms = read(folder / "s0.cif").repeat((2, 1, 1))
    atoms.rotate(33, "z", rotate_cell=True)
    atoms.translate([0.4, 0.1, 0.2])
    atoms.wrap()
    write(extra / "cu_super.cif", atoms)
    ok(cli("predict", str(out), str(folder), str(extra), "--out", str(tmp_path / "p.csv")))
    ok(cli("predict", str(base_run), str(folder), str(extra), "--out", str(tmp_path / "base.csv")))
    got, base = _predictions(tmp_path / "p.csv", "a0"), _predictions(tmp_path / "base.csv", "a0")
    assert len(got) == 13
    same = {"s0": "s0", "s1": "s1", "s2": "s2", "s6": "s0", "s7": "s1", "s8": "s2", "cu_super": "s0"}
    for sid, v in got.items():
        if sid in same:
            assert v == pytest.approx(labels[same[sid]], abs=1e-5), sid
        else:  # Al, Ni, Pd: no reference structure of that formula
            assert v == pytest.approx(base[sid], abs=1e-5), sid


def test_reference_tells_monolayer_polytypes_apart(setup, tmp_path):
    """A 1H MoS2 monolayer in the reference answers the same layer with three times the vacuum, not its 1T
    polytype (the fallback answers that). `--whole-cells` (the rule of older folders, cells as stored) gets both
    wrong: the vacuum decides, so the 1T layer with the same vacuum matches and the 1H one with more does not."""
    from ase.build import mx2
    from ase.io import write

    ref, new = tmp_path / "ref", tmp_path / "new"
    ref.mkdir()
    new.mkdir()
    for folder, name, kind, vacuum in ((ref, "h", "2H", 5.0), (new, "h_thick", "2H", 15.0), (new, "t", "1T", 5.0)):
        atoms = mx2("MoS2", kind=kind, a=3.18, thickness=3.19, vacuum=vacuum)
        atoms.pbc = True
        write(folder / f"{name}.cif", atoms)
    (ref / "id_prop.csv").write_text("id,a0\nh,1.7\n")
    base = _predictions(ok(cli("predict", str(setup["base_run"]), str(new), "--out", str(tmp_path / "b.csv")))
                        and tmp_path / "b.csv", "a0")
    for flags, t_matches in (((), False), (("--whole-cells",), True)):
        out = tmp_path / f"ref{len(flags)}"
        ok(cli("reference", str(ref), "--target", "a0", "--fallback", str(setup["base_run"]), "--out", str(out), *flags))
        info = json.loads((out / "model.json").read_text())["reference"]
        assert info["slab_vacuum"] == (None if flags else 4.0) and info["tolerances"]["stol"] == (0.5 if flags else 0.3)
        ok(cli("predict", str(out), str(new), "--out", str(tmp_path / f"p{len(flags)}.csv")))
        got = _predictions(tmp_path / f"p{len(flags)}.csv", "a0")
        assert got["h_thick"] == pytest.approx(base["h_thick"] if t_matches else 1.7, abs=1e-5)
        assert got["t"] == pytest.approx(1.7 if t_matches else base["t"], abs=1e-5)
    assert abs(base["t"] - 1.7) > 0.01 and abs(base["h_thick"] - 1.7) > 0.01


def test_reference_as_the_base_of_delta_learning(setup, tmp_path):
    folder, base_run = setup["folder"], setup["base_run"]
    ref = tmp_path / "ref-model"
    ok(cli("reference", str(setup["ref"]), "--target", "a0", "--fallback", str(base_run), "--out", str(ref)))
    cfg = run_yaml(tmp_path / "delta.yaml", f"{{kind: folder, path: {folder}}}", tmp_path / "runs", epochs=2,
                   extra=f"delta: {{base_model: {ref}, base_heads: {{lattice: a0}}}}\n")
    r = ok(cli("train", str(cfg)))
    assert "delta learning on the residuals" in r.out
    (delta_run,) = runs_in(tmp_path / "runs")
    m = json.loads((delta_run / "metrics.json").read_text())
    assert np.isfinite(m["test.lattice.mae"]) and np.isfinite(m["base.test.lattice.mae"])
    # the recipe of the best dft_2d gap: the reference where it matches, the delta run (itself built on a
    # reference) elsewhere — a composite inside a composite
    first = tmp_path / "ref-first"
    ok(cli("reference", str(setup["ref"]), "--target", "a0", "--fallback", str(delta_run), "--fallback-head",
           "lattice", "--out", str(first)))
    ok(cli("predict", str(first), str(folder), "--out", str(tmp_path / "first.csv")))
    ok(cli("predict", str(delta_run), str(folder), "--out", str(tmp_path / "delta.csv")))
    got, fb = _predictions(tmp_path / "first.csv", "a0"), _predictions(tmp_path / "delta.csv", "lattice")
    assert got["s0"] == pytest.approx(setup["labels"]["s0"], abs=1e-5)
    assert got["s3"] == pytest.approx(fb["s3"], abs=1e-5)  # Al: no reference structure
    # the run's model folder carries the reference (no reference files or base run needed): move it away
    moved = tmp_path / "mailed"
    shutil.copytree(delta_run / "model", moved)
    shutil.rmtree(ref)
    ok(cli("predict", str(moved), str(folder), "--out", str(tmp_path / "p.csv")))
    assert len(_predictions(tmp_path / "p.csv", "lattice")) == 12


def test_reference_in_front_of_an_ensemble(setup, tmp_path):
    """`--fallback ENSEMBLE_FOLDER` (as `--fallback bandgap-2d-ensemble`): structures without a match get the
    members' mean — the recipe of the README's 2D band gap, the reference in front of both backbones' models."""
    folder, base_run = setup["folder"], setup["base_run"]
    cfg = run_yaml(tmp_path / "b.yaml", f"{{kind: folder, path: {folder}, id_prop: id_prop_a0.csv}}", tmp_path / "runs",
                   epochs=2, target="a0")
    ok(cli("train", str(cfg), "--set", "train.seed=1"))
    (other,) = runs_in(tmp_path / "runs")
    ens = tmp_path / "ens"
    ok(cli("ensemble", "--combine", str(base_run), "--combine", str(other), "--out", str(ens)))
    out = tmp_path / "ref-ens"
    r = ok(cli("reference", str(setup["ref"]), "--target", "a0", "--fallback", str(ens), "--out", str(out)))
    assert "reference of 3 structures" in r.out
    ok(cli("predict", str(out), str(folder), "--out", str(tmp_path / "p.csv")))
    ok(cli("predict", str(ens), str(folder), "--out", str(tmp_path / "e.csv")))
    got, mean = _predictions(tmp_path / "p.csv", "a0"), _predictions(tmp_path / "e.csv", "a0")
    assert got["s0"] == pytest.approx(setup["labels"]["s0"], abs=1e-5)
    assert got["s3"] == pytest.approx(mean["s3"], abs=1e-5)  # Al: no reference structure, the ensemble's mean
    assert json.loads((out / "model.json").read_text())["graphs"]


def test_a_reference_of_training_labels_in_front_of_another_reference(setup, tmp_path):
    """The recipe of the twin lookup on dft_2d: a reference of the user's own labelled structures whose fallback is
    a reference of another database (itself falling back on a model): a structure in the first gets its own label,
    one only in the second that database's, any other the model's."""
    folder, base_run, labels = setup["folder"], setup["base_run"], setup["labels"]
    outer_db = tmp_path / "own"
    outer_db.mkdir()
    rows = (folder / "id_prop.csv").read_text().splitlines()[1:]
    own = {f"s{k}": float(rows[k].split(",")[1]) - 2.0 for k in (1, 3)}  # s1 in both sets, s3 (Al) only here
    for sid in own:
        shutil.copy(folder / f"{sid}.cif", outer_db / f"{sid}.cif")
    (outer_db / "id_prop.csv").write_text("id,a0\n" + "".join(f"{i},{v}\n" for i, v in own.items()))
    inner = tmp_path / "inner"
    ok(cli("reference", str(setup["ref"]), "--target", "a0", "--fallback", str(base_run), "--out", str(inner)))
    outer = tmp_path / "outer"
    r = ok(cli("reference", str(outer_db), "--target", "a0", "--fallback", str(inner), "--out", str(outer)))
    assert "reference of 2 structures" in r.out
    ok(cli("predict", str(outer), str(folder), "--out", str(tmp_path / "p.csv")))
    ok(cli("predict", str(base_run), str(folder), "--out", str(tmp_path / "base.csv")))
    got, base = _predictions(tmp_path / "p.csv", "a0"), _predictions(tmp_path / "base.csv", "a0")
    assert got["s1"] == pytest.approx(own["s1"], abs=1e-5)  # the own label wins over the database's
    assert got["s3"] == pytest.approx(own["s3"], abs=1e-5)
    assert got["s0"] == pytest.approx(labels["s0"], abs=1e-5)  # only in the database
    assert got["s4"] == pytest.approx(base["s4"], abs=1e-5)  # in neither: the model
    # the outer folder alone carries both references and the model
    moved = tmp_path / "mailed"
    shutil.copytree(outer, moved)
    shutil.rmtree(inner)
    ok(cli("predict", str(moved), str(folder), "--out", str(tmp_path / "m.csv")))
    assert _predictions(tmp_path / "m.csv", "a0") == pytest.approx(got, abs=1e-6)


def test_reference_refuses_what_it_cannot_use(setup, tmp_path):
    ref, base_run = setup["ref"], setup["base_run"]
    out = tmp_path / "ref-model"
    ok(cli("reference", str(ref), "--target", "a0", "--fallback", str(base_run), "--out", str(out)))
    before = (out / "model.json").read_bytes()
    # an existing model is not overwritten
    user_error(cli("reference", str(ref), "--target", "a0", "--fallback", str(base_run), "--out", str(out)),
               str(out), "holds a model already")
    assert (out / "model.json").read_bytes() == before
    # a label the reference does not have
    user_error(cli("reference", str(ref), "--target", "gap", "--fallback", str(base_run), "--out",
                   str(tmp_path / "o2")), "gap")
    # a fallback without a head of that name
    user_error(cli("reference", str(ref), "--target", "a0", "--fallback", str(base_run), "--fallback-head", "gap",
                   "--out", str(tmp_path / "o3")), "gap", "fallback")
    # a fallback that is not a model
    user_error(cli("reference", str(ref), "--target", "a0", "--fallback", str(tmp_path / "nothing"),
                   "--out", str(tmp_path / "o4")), "nothing")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_reference_can_leave_out_what_materials_project_computes_with_hubbard_u(setup, tmp_path):
    """`--skip-hubbard-u`: an oxide of Ni (GGA+U under Materials Project's settings) is left out of the
    reference, listed with the reason, and gets the fallback's prediction; without the flag it is kept."""
    from ase.build import bulk
    from ase.io import write

    from matgnn.models.reference import hubbard_u_applies

    assert hubbard_u_applies([28, 8]) and hubbard_u_applies([26, 9, 3]) and not hubbard_u_applies([28, 16])
    assert not hubbard_u_applies([29, 8])
    ref = tmp_path / "ref"
    shutil.copytree(setup["ref"], ref)
    write(ref / "nio.cif", bulk("NiO", "rocksalt", a=4.17))
    with open(ref / "id_prop.csv", "a") as f:
        f.write("nio,9.5\n")
    probe = tmp_path / "probe"
    probe.mkdir()
    shutil.copy(ref / "nio.cif", probe / "nio.cif")
    shutil.copy(ref / "s0.cif", probe / "s0.cif")
    kept, skipped = tmp_path / "kept", tmp_path / "skipped"
    ok(cli("reference", str(ref), "--target", "a0", "--fallback", str(setup["base_run"]), "--out", str(kept)))
    r = ok(cli("reference", str(ref), "--target", "a0", "--fallback", str(setup["base_run"]), "--out", str(skipped),
               "--skip-hubbard-u"))
    assert "2 structures left out" in " ".join(r.out.split())
    reasons = {row["id"]: row["reason"] for row in csv.DictReader(open(skipped / "reference_left_out.csv"))}
    assert set(reasons) == {"s_missing", "nio"} and "GGA+U" in reasons["nio"]
    for folder, nio in ((kept, 9.5), (skipped, None)):
        ok(cli("predict", str(folder), str(probe), "--out", str(tmp_path / "p.csv")))
        got = _predictions(tmp_path / "p.csv", "a0")
        assert got["s0"] == pytest.approx(setup["labels"]["s0"], abs=1e-5)
        if nio is not None:
            assert got["nio"] == pytest.approx(nio, abs=1e-5)
        else:
            assert got["nio"] != pytest.approx(9.5, abs=1e-3)


def test_reference_on_a_full_disk_or_read_only_folder_leaves_nothing_half_written(setup, tmp_path):
    from tests.userdata import READ_ONLY_WORDS, read_only, user_error_any

    args = ["reference", str(setup["ref"]), "--target", "a0", "--fallback", str(setup["base_run"])]
    out = tmp_path / "ref-model"
    r = run(*args, "--out", str(out), max_file_bytes=4000)  # model.json of 3 entries fits, state.pt does not
    user_error(r, "File too large")
    assert not out.exists() and not list(tmp_path.glob(".ref-model*"))
    ok(run(*args, "--out", str(out)))  # nothing in the way afterwards
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro:
        r = run(*args, "--out", str(ro / "ref-model"))
    user_error_any(r, str(ro), READ_ONLY_WORDS)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    user_error(run(*args, "--out", str(tmp_path / "busy")), "busy", "not an empty folder")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
