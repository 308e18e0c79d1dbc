"""`matgnn data report --compare A:B`: two labels of one quantity checked against each other, and the
structures far off their robust line listed (label noise a user may want to look at before training)."""

from __future__ import annotations

import csv
import json

from tests.userdata import cif_folder, cli, ok, user_error


def _two_labels(folder, doubtful: dict[str, float]):
    """A CIF folder whose id_prop.csv has the lattice constant and a second label = 0.2 + 1.5 × it (with a
    little scatter), except ``doubtful`` ids, whose second label is set by hand."""
    cif_folder(folder)
    rows = list(csv.reader(open(folder / "id_prop.csv")))
    lines = ["id,lattice,lattice_b"]
    for k, (sid, a) in enumerate(rows[1:]):
        b = doubtful.get(sid, 0.2 + 1.5 * float(a) + 0.01 * (-1) ** k * (k % 3))
        lines.append(f"{sid},{a},{b:.4f}")
    (folder / "id_prop.csv").write_text("\n".join(lines) + "\n")


def test_compare_lists_labels_far_off_the_line(tmp_path):
    data = tmp_path / "d"
    _two_labels(data, {"s4": 1.0, "s7": 30.0})
    out = tmp_path / "eda"
    r = ok(cli("data", "report", str(data), "--out", str(out), "--compare", "lattice:lattice_b"))
    flat = " ".join(r.out.split())
    assert "lattice_b against lattice: 12 structures with both" in flat and "2 beyond 3.5 robust σ" in flat, r.out
    rows = list(csv.DictReader(open(out / "label_pairs_lattice_vs_lattice_b.csv")))
    assert len(rows) == 12 and [r["id"] for r in rows[:2]] == ["s7", "s4"]  # most doubtful first
    assert [r["doubtful"] for r in rows] == ["1", "1"] + ["0"] * 10
    info = json.loads((out / "data_info.json").read_text())["label_pairs"]["lattice:lattice_b"]
    assert info["doubtful_ids"] == ["s7", "s4"] and abs(info["slope"] - 1.5) < 0.05  # the doubtful do not pull it
    assert (out / "label_pairs_lattice_vs_lattice_b.png").is_file()
    assert "lattice_b against lattice" in (out / "index.html").read_text()

    # a looser threshold lists only the far one; without the hand-set labels none is doubtful
    r = ok(cli("data", "report", str(data), "--out", str(tmp_path / "e2"), "--compare", "lattice:lattice_b",
               "--z-max", "300"))
    assert "1 beyond 300 robust σ" in " ".join(r.out.split()), r.out
    clean = tmp_path / "clean"
    _two_labels(clean, {})
    r = ok(cli("data", "report", str(clean), "--out", str(tmp_path / "e3"), "--compare", "lattice:lattice_b"))
    assert "0 beyond 3.5 robust σ" in " ".join(r.out.split()), r.out


def test_compare_refuses_what_it_cannot_check(tmp_path):
    data = tmp_path / "d"
    _two_labels(data, {})
    user_error(cli("data", "report", str(data), "--out", str(tmp_path / "e"), "--compare", "lattice"), "A:B")
    user_error(cli("data", "report", str(data), "--out", str(tmp_path / "e"), "--compare", "lattice:lattice"), "A:B")
    user_error(cli("data", "report", str(data), "--out", str(tmp_path / "e"), "--compare", "lattice:band_gap"),
               "band_gap", "is not a graph-level target", "lattice_b")
    # too few structures with both labels: said, not fitted
    text = (data / "id_prop.csv").read_text().splitlines()
    (data / "id_prop.csv").write_text("\n".join([text[0]] + [ln if k < 3 else ln.rsplit(",", 1)[0] + ","
                                                             for k, ln in enumerate(text[1:])]) + "\n")
    r = ok(cli("data", "report", str(data), "--out", str(tmp_path / "f"), "--compare", "lattice:lattice_b"))
    assert "fewer than 5 structures with both labels" in " ".join(r.out.split())


def test_compare_on_jarvis_dft_2d_gaps(tmp_path):
    """The JARVIS monolayers' OptB88vdW gap against their MBJ gap: the CaClF monolayer (2.28 eV OptB88vdW,
    6.23 MBJ; 2DMatPedia's PBE gap 6.11) is listed as doubtful."""
    from tests.conftest import shared_path

    store = shared_path("jarvis")
    r = ok(cli("data", "report", "jarvis:dft_2d", "--store-dir", str(store), "--out", str(tmp_path / "eda"),
               "--compare", "optb88vdw_bandgap:mbj_bandgap"))
    assert "219 structures with both" in " ".join(r.out.split()), r.out
    info = json.loads((tmp_path / "eda" / "data_info.json").read_text())["label_pairs"]["optb88vdw_bandgap:mbj_bandgap"]
    assert "JVASP-76344" in info["doubtful_ids"] and 1.0 < info["slope"] < 1.4
