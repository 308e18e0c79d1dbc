"""Driving the PyPI reference CGCNN (``cgcnn2``) through its own CLI, for side-by-side benchmarks:
our structures written as CIF files, its train/val/test folders, its log parsed for throughput."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from matgnn.data.structure import Structure
from matgnn.graphs.features import cgcnn_table

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) INFO: Epoch \[(\d+)/")


def write_cifs(structures: Iterable[tuple[str, Structure]], folder: Path) -> None:
    """``<name>.cif`` for each (name, structure) (pymatgen's writer; existing files are kept) and
    ``atom_init.json`` (CGCNN's 92 atom features: our table)."""
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure

    folder.mkdir(parents=True, exist_ok=True)
    for name, s in structures:
        path = folder / f"{name}.cif"
        if not path.exists():
            PmgStructure(Lattice(s.cell), s.numbers.tolist(), s.positions, coords_are_cartesian=True).to(filename=str(path))
    table = cgcnn_table()
    (folder / "atom_init.json").write_text(json.dumps({str(z): [float(v) for v in table[z]] for z in range(1, len(table))}))


def cgcnn_tr() -> str | None:
    """cgcnn2's training command: beside this interpreter (a venv run without activating it) or on PATH."""
    here = Path(sys.executable).parent / "cgcnn-tr"
    return str(here) if here.is_file() else shutil.which("cgcnn-tr")


def set_folder(cifs: Path, ids: list[str], labels: dict[str, float], d: Path) -> Path:
    """A cgcnn2 data folder: links to the CIFs, ``atom_init.json`` and ``id_prop.csv``."""
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for i in ids:
        os.symlink(cifs / f"{i}.cif", d / f"{i}.cif")
    shutil.copy(cifs / "atom_init.json", d / "atom_init.json")
    (d / "id_prop.csv").write_text("".join(f"{i},{labels[i]}\n" for i in ids))
    return d


def train_cli(cifs: Path, parts: dict[str, list[str]], labels: dict[str, float], work: Path,
              extra: list[str]) -> dict[str, float]:
    """``cgcnn-tr`` on ``parts`` (train/val/test ids) with ``extra`` arguments: test MAE, training
    structures/s over its epochs after the first (which parses the CIFs), epochs and wall time."""
    work.mkdir(parents=True, exist_ok=True)
    dirs = {k: set_folder(cifs, ids, labels, work / k) for k, ids in parts.items()}
    t0 = time.perf_counter()
    proc = subprocess.run([cgcnn_tr(), "-trs", str(dirs["train"]), "-vs", str(dirs["val"]), "-ts", str(dirs["test"]),
                           *extra, "-ji", "bench"], cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (work / "cgcnn-tr.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"cgcnn-tr failed:\n{proc.stderr[-3000:]}")
    stamps = [(dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f"), int(m.group(2)))
              for line in (proc.stdout + proc.stderr).splitlines() if (m := STAMP.match(line))]
    (t_first, e_first), (t_last, e_last) = stamps[0], stamps[-1]
    rate = len(parts["train"]) * (e_last - e_first) / (t_last - t_first).total_seconds()
    rows = list(csv.DictReader(open(work / "output_bench" / "test_results.csv")))
    mae = float(np.mean([abs(float(r["true"]) - float(r["pred"])) for r in rows]))
    return {"mae": mae, "structures_per_s": rate, "epochs": e_last, "wall_s": wall}
