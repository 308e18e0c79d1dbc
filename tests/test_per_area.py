"""`transform: log_per_area`: a graph head of slabs and monolayers learned as log(y / in-plane area per
atom) and answered as exp(·) × that area (exfoliation energies scale with the layer's area)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from tests.userdata import cli, ok, run_yaml, runs_in, user_error


def _monolayer(k: int):
    from ase.build import mx2

    atoms = mx2("MoS2" if k % 2 == 0 else "WSe2", a=3.18 + 0.03 * k, vacuum=8.0)
    atoms.pbc = [True, True, False]
    return atoms


def _area(k: int) -> float:
    """The in-plane area per atom of monolayer ``k`` (Å²)."""
    cell = _monolayer(k).cell
    return float(np.linalg.norm(np.cross(cell[0], cell[1]))) / 3


def _layers_run(tmp_path, n: int, epochs: int):
    """``n`` monolayer extxyz files labelled with a binding energy per area times the area per atom, and a run
    config learning it with ``transform: log_per_area``: (data folder, config path, (id, label) rows)."""
    from ase.io import write

    data = tmp_path / "layers"
    data.mkdir()
    rows = []
    for k in range(n):
        write(data / f"m{k}.extxyz", _monolayer(k))
        rows.append((f"m{k}", (18.0 + k) * _area(k)))
    (data / "id_prop.csv").write_text("id,exfoliation\n" + "".join(f"{i},{v:.4f}\n" for i, v in rows))
    cfg = run_yaml(tmp_path / "c.yaml", f"{{kind: folder, path: {data}}}", tmp_path / "runs", epochs=epochs,
                   target="exfoliation")
    spec = yaml.safe_load(cfg.read_text())
    spec["targets"][0]["transform"] = "log_per_area"
    cfg.write_text(yaml.safe_dump(spec))
    return data, cfg, rows


def _pushed(run_dir, to):
    """A copy of ``run_dir``'s model whose exfoliation head was pushed 1,000 standard deviations up (a wild
    extrapolation: every answer at the bound)."""
    import shutil

    shutil.copytree(run_dir / "model", to)
    state = torch.load(to / "state.pt", weights_only=True)
    (bias,) = [k for k in state if k.startswith("heads.exfoliation.") and k.endswith(".bias") and state[k].numel() == 1]
    state[bias] += 1000.0
    torch.save(state, to / "state.pt")
    return to


def test_area_per_atom_follows_the_periodic_plane():
    from matgnn.graphs.geometry import area_per_atom

    atoms = _monolayer(0)
    cell = torch.tensor(np.asarray(atoms.cell), dtype=torch.float64)[None]
    area = float(np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1]))) / 3
    n = torch.tensor([3])
    assert float(area_per_atom(cell, torch.tensor([[True, True, False]]), n)) == pytest.approx(area)
    assert float(area_per_atom(cell, torch.tensor([[True, True, True]]), n)) == pytest.approx(area)  # a–b plane
    rolled = cell[:, [2, 0, 1]]  # vacuum along the first axis now
    assert float(area_per_atom(rolled, torch.tensor([[False, True, True]]), n)) == pytest.approx(area)


def test_log_per_area_from_the_cli_on_monolayers(tmp_path):
    data, cfg, rows = _layers_run(tmp_path, 12, epochs=3)
    ok(cli("train", str(cfg)))
    (run_dir,) = runs_in(tmp_path / "runs")
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["targets"][0]["transform"] == "log_per_area"
    out = tmp_path / "p.csv"
    ok(cli("predict", str(run_dir), str(data), "--out", str(out)))
    pred = [float(r["exfoliation"]) for r in csv.DictReader(open(out))]
    assert len(pred) == 12 and all(p > 0 for p in pred)
    assert [r["answers_at_bound"] for r in csv.DictReader(open(out))] == [""] * 12  # within the training range
    # exp(per-area value) × area per atom: a 2×1 supercell (twice the atoms, twice the area) answers the same
    from matgnn.data.structure import Structure
    from matgnn.models import load_model
    from matgnn.prediction.predict import graph_settings_of, predict_structures

    model = load_model(run_dir)
    one = _monolayer(0)
    got = list(predict_structures(model, [Structure.from_ase(one, "a"), Structure.from_ase(one.repeat((2, 1, 1)), "b")],
                                  graph_settings_of(run_dir)))
    assert got[0]["exfoliation"] == pytest.approx(got[1]["exfoliation"], rel=1e-4)

    # the answers stay within a factor 2 of the training labels' range per area, however far the head extrapolates:
    # a model whose head was pushed 1,000 standard deviations up (a wild extrapolation) answers at most twice the
    # largest label per area, times each layer's area
    per_area = [v / _area(k) for k, (_, v) in enumerate(rows)]
    assert float(model.targets[0].steps[0].learned_high[0]) == pytest.approx(np.log(max(per_area)), abs=1e-3)  # whole set: training split
    assert float(model.targets[0].steps[0].learned_low[0]) >= np.log(min(per_area)) - 1e-3
    wild = _pushed(run_dir, tmp_path / "wild")
    r = ok(cli("predict", str(wild), str(data), "--out", str(tmp_path / "w.csv")))
    flat = " ".join(r.out.split())
    assert "12 structure(s) answered exfoliation at the bound of its training range" in flat, r.out
    assert [r["answers_at_bound"] for r in csv.DictReader(open(tmp_path / "w.csv"))] == ["exfoliation"] * 12
    bound = 2 * np.exp(float(model.targets[0].steps[0].learned_high[0]))
    answers = {r["id"]: float(r["exfoliation"]) for r in csv.DictReader(open(tmp_path / "w.csv"))}
    assert len(answers) == 12
    for k in range(12):
        assert answers[f"m{k}"] == pytest.approx(bound * _area(k), rel=1e-4)
    # the ASE calculator says the same
    from matgnn.ase import MatgnnCalculator

    atoms = _monolayer(1)
    atoms.calc = MatgnnCalculator(str(wild))
    assert atoms.calc.get_property("exfoliation", atoms) == pytest.approx(bound * _area(1), rel=1e-4)
    assert atoms.calc.results["answers_at_bound"] == ["exfoliation"]
    atoms.calc = MatgnnCalculator(str(run_dir))
    atoms.calc.get_property("exfoliation", atoms)
    assert atoms.calc.results["answers_at_bound"] == []

    # a label <= 0 cannot be learned as a log: one line naming the target
    bad = data / "id_prop.csv"
    bad.write_text(bad.read_text().replace(f"m3,{rows[3][1]:.4f}", "m3,-1.0"))
    user_error(cli("train", str(cfg)), "m3", "exfoliation", "log_per_area")


def test_a_run_checkpointed_before_the_bound_resumes(tmp_path):
    """A checkpoint written before log-transformed heads were bounded (no learned range in its weights)
    resumes through ``matgnn train --resume``; the run's own training range fills the bound."""
    _, cfg, _ = _layers_run(tmp_path, 10, epochs=2)
    ok(cli("train", str(cfg)))
    (run_dir,) = runs_in(tmp_path / "runs")
    ckpt = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    for state in (ckpt["model"], ckpt["best_state"]):
        for k in [k for k in state if k.endswith(("learned_low", "learned_high"))]:
            del state[k]
    torch.save(ckpt, run_dir / "checkpoint_last.pt")
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("epochs: 2", "epochs: 4"))
    r = ok(cli("train", "--resume", str(run_dir)))
    assert "continuing after epoch 2" in r.out
    from matgnn.models import load_model

    model = load_model(run_dir)
    bound = model.targets[0].steps[0]
    assert np.isfinite(float(bound.learned_low[0])) and np.isfinite(float(bound.learned_high[0]))


def test_ensembles_and_composites_say_when_a_part_answered_at_the_bound(tmp_path):
    """`matgnn predict` flags answers at the bound for ensembles (any member), delta models (base or
    correction) and reference models (the fallback, where nothing matched), not only single models."""
    data, cfg, _ = _layers_run(tmp_path, 12, epochs=2)
    ok(cli("train", str(cfg)))
    (run_dir,) = runs_in(tmp_path / "runs")
    wild = _pushed(run_dir, tmp_path / "wild")

    def flagged(out):
        return {r["id"]: r["answers_at_bound"] for r in csv.DictReader(open(out))}

    # an ensemble of a sane and a pushed member: every answer used an answer at the bound
    r = ok(cli("predict", f"{run_dir},{wild}", str(data), "--out", str(tmp_path / "e.csv")))
    assert "12 structure(s) answered exfoliation at the bound" in " ".join(r.out.split()), r.out
    assert set(flagged(tmp_path / "e.csv").values()) == {"exfoliation"}
    ok(cli("predict", f"{run_dir},{run_dir / 'model'}", str(data), "--out", str(tmp_path / "s.csv")))
    assert set(flagged(tmp_path / "s.csv").values()) == {""}

    # a delta model on the pushed base (its correction has no transform): flagged through the base
    delta_cfg = tmp_path / "d.yaml"
    spec = yaml.safe_load(cfg.read_text())
    spec["targets"][0]["transform"] = "none"
    spec["delta"] = {"base_model": str(wild)}
    spec["output_dir"] = str(tmp_path / "delta_runs")
    delta_cfg.write_text(yaml.safe_dump(spec))
    ok(cli("train", str(delta_cfg)))
    (delta_run,) = runs_in(tmp_path / "delta_runs")
    r = ok(cli("predict", str(delta_run), str(data), "--out", str(tmp_path / "d.csv")))
    assert set(flagged(tmp_path / "d.csv").values()) == {"exfoliation"}, r.out

    # a reference of the MoS2 layers with the pushed model as fallback: only the WSe2 layers (no match) flagged
    from ase.io import read, write

    ref_data = tmp_path / "mos2"
    ref_data.mkdir()
    lines = ["id,exfoliation"]
    for k in range(0, 12, 2):
        write(ref_data / f"m{k}.extxyz", read(data / f"m{k}.extxyz"))
        lines.append(f"m{k},{20.0 + k}")
    (ref_data / "id_prop.csv").write_text("\n".join(lines) + "\n")
    ok(cli("reference", str(ref_data), "--target", "exfoliation", "--fallback", str(wild), "--out",
           str(tmp_path / "ref")))
    r = ok(cli("predict", str(tmp_path / "ref"), str(data), "--out", str(tmp_path / "r.csv")))
    assert "6 structure(s) answered exfoliation at the bound" in " ".join(r.out.split()), r.out
    assert flagged(tmp_path / "r.csv") == {f"m{k}": "" if k % 2 == 0 else "exfoliation" for k in range(12)}
