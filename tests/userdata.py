"""What a user arrives with, written in the real formats, and the installed ``matgnn`` run as a
subprocess (the way users run it). Shared by the journey and fault suites."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: the installed executable of this environment (``pip install -e .`` puts it beside python)
MATGNN = str(Path(sys.executable).parent / "matgnn")
NOBODY = 65534

#: (element, lattice constant) of the user's small fcc crystals
CRYSTALS = [("Cu", 3.61), ("Ag", 4.09), ("Au", 4.08), ("Al", 4.05), ("Ni", 3.52), ("Pd", 3.89)] * 2


def run(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None, timeout: float = 300,
        unprivileged: bool = False, max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """``matgnn ARGS`` as a subprocess; ``.out`` holds stdout + stderr. ``unprivileged``: as
    user nobody when the tests run as root (root ignores permissions: read-only folders would
    not be read-only). ``max_file_bytes``: a file-size limit, so writes past it fail with
    EFBIG (Python ignores SIGXFSZ), which is how a full disk looks to the program."""
    full_env = dict(os.environ, COLUMNS="200", NO_COLOR="1", **(env or {}))

    def pre() -> None:
        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        if unprivileged and os.geteuid() == 0:
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    r = subprocess.run([MATGNN, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                       preexec_fn=pre)
    r.out = r.stdout + r.stderr  # type: ignore[attr-defined]
    return r


def user_error(r: subprocess.CompletedProcess, *words: str) -> None:
    """A user error: exit status 2, no traceback, and the message names ``words``."""
    flat = " ".join(r.out.split())
    assert r.returncode == 2, f"exit {r.returncode}, expected 2:\n{r.out}"
    assert "Traceback" not in r.out, r.out
    for w in words:
        assert w in flat, f"{w!r} not in the message:\n{r.out}"


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.out}"
    return r


#: what a write to a read-only place says (root: a read-only mount; others: a folder without w)
READ_ONLY_WORDS = ("Read-only file system", "Permission denied")


def user_error_any(r: subprocess.CompletedProcess, must: str, any_of: Sequence[str]) -> None:
    user_error(r, must)
    flat = " ".join(r.out.split())
    assert any(w in flat for w in any_of), r.out


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` read-only for the program under test. Root ignores permission bits, so as root
    the folder is bind-mounted read-only onto itself (skips when mounting is not allowed)."""
    path = Path(path)
    if os.geteuid() != 0:
        for p in [*path.rglob("*"), path]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield path
        finally:
            for p in [path, *path.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
        return
    r = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"a read-only folder for root needs a bind mount, which failed: {r.stderr.strip()}")
    try:
        r = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"remounting read-only failed: {r.stderr.strip()}")
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def world_readable_tmp() -> Path:
    """A fresh folder others can read (pytest's own tmp folders are root-only)."""
    d = Path(tempfile.mkdtemp(prefix="matgnn-user-"))
    d.chmod(0o755)
    return d


def crystal(k: int, el: str, a: float):
    from ase.build import bulk

    return bulk(el, "fcc", a=a * (1 + 0.01 * k), cubic=k % 2 == 0)


def cif_folder(folder: Path, n: int = 12, header: bool = True, fmt: str = "cif") -> Path:
    """``n`` small crystals as files (``cif``, ``vasp`` POSCARs, ``extxyz`` or pymatgen ``json``)
    plus ``id_prop.csv`` with their lattice constant as the label."""
    from ase.io import write

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (el, a) in enumerate(CRYSTALS[:n]):
        atoms = crystal(k, el, a)
        if fmt == "json":
            from pymatgen.io.ase import AseAtomsAdaptor

            (folder / f"s{k}.json").write_text(json.dumps(AseAtomsAdaptor.get_structure(atoms).as_dict()))
        elif fmt == "vasp":
            write(folder / f"s{k}.vasp", atoms, format="vasp")
        else:
            write(folder / f"s{k}.{fmt}", atoms)
        rows.append(f"s{k},{a * (1 + 0.01 * k):.4f}")
    (folder / "id_prop.csv").write_text(("id,lattice\n" if header else "") + "\n".join(rows) + "\n")
    return folder


def run_yaml(path: Path, source: str, out: Path, epochs: int = 2, target: str = "lattice", extra: str = "") -> Path:
    path.write_text(f"""source: {source}
targets:
  - {{name: {target}, level: graph, loss: l1}}
model: {{name: cgcnn, hidden: 16, layers: 2}}
train: {{epochs: {epochs}, batch_size: 4, checkpoint_every: 0, tensorboard: false}}
split: {{kind: random, train: 0.6, val: 0.2}}
output_dir: {out}
{extra}""")
    return path


def with_model(cfg_path: Path, model: str) -> Path:
    """The run config at ``cfg_path`` with its ``model:`` section replaced by ``model`` (YAML)."""
    import yaml

    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["model"] = yaml.safe_load(model)
    cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg_path


def magmom_run_yaml(path: Path, data: Path, out: Path, model: str = "{name: cgcnn, hidden: 16, layers: 2}") -> Path:
    """A per-atom moment run on ``data`` (the mp_magmoms layout) with two-graph batches: its last
    training batch holds one structure alone (a one-atom cell)."""
    path.write_text(f"""source: {{kind: magmoms, path: {data}}}
targets: [{{name: magmom, level: node}}]
model: {model}
train: {{epochs: 2, batch_size: 2}}
split: {{kind: random, train: 0.5, val: 0.25}}
output_dir: {out}
""")
    return path


def runs_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_dir()) if Path(folder).is_dir() else []


def magmom_jsonl(path: Path, n: int = 6) -> Path:
    """A JSON Lines file in the mp_magmoms layout (signed moments)."""
    import gzip

    rng = np.random.default_rng(0)
    with gzip.open(path, "wt") as f:
        for k in range(n):
            atoms = crystal(k, *CRYSTALS[k])
            f.write(json.dumps({"atomic_numbers": atoms.numbers.tolist(), "lattice": atoms.cell[:].tolist(),
                                "cart_coords": atoms.positions.tolist(),
                                "magmoms": rng.normal(0, 1, len(atoms)).round(3).tolist()}) + "\n")
    return path


def cif_jsonl(path: Path, n: int = 8, ids: Sequence[str] | None = None) -> Path:
    """A JSON Lines file in the mp_cgcnn layout (CIF text + labels)."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter

    with open(path, "w") as f:
        for k in range(n):
            atoms = crystal(k, *CRYSTALS[k])
            cif = str(CifWriter(AseAtomsAdaptor.get_structure(atoms)))
            f.write(json.dumps({"material_id": ids[k] if ids else f"mp-{k}", "cif": cif,
                                "band_gap": 0.1 * k, "formation_energy_per_atom": -0.01 * k}) + "\n")
    return path


def anchored_drifts(folder: Path, out: Path, model: str, epochs: int, drift: Callable[[Any], float]
                    ) -> dict[float, float]:
    """A fine-tuned backbone ``model`` trained through the Python API (``train`` with an ``on_epoch_end`` hook
    reading the weights being trained, not the best epoch's) on a folder's lattice constants, without and with
    ``anchor_weight: 20``: ``drift(model)`` after the last epoch of each (same seed, data and steps)."""
    from rich.console import Console

    from matgnn.config import RunConfig
    from matgnn.training.run import train

    result = {}
    for weight in (0.0, 20.0):
        cfg = RunConfig.model_validate({
            "source": {"kind": "folder", "path": str(folder)},
            "targets": [{"name": "lattice", "level": "graph", "loss": "l1"}],
            "model": {"name": model, "hidden": 16, "layers": 2, "anchor_weight": weight},
            "train": {"epochs": epochs, "batch_size": 2, "lr": 0.001, "scheduler": "none", "patience": 100,
                      "tensorboard": False, "checkpoint_every": 0},
            "split": {"kind": "random", "train": 0.6, "val": 0.2}, "output_dir": str(out / f"runs{weight}")})
        seen: list[float] = []
        train(cfg, progress=False, console=Console(quiet=True), on_epoch_end=lambda t: seen.append(drift(t.model)))
        result[weight] = seen[-1]
    return result


def cli(*args: str, env: dict[str, str] | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``matgnn ARGS`` in this process, through the executable's own entry point (``matgnn.cli.main:main``, the
    same argument parsing, error handler and exit status), without paying a Python start and the torch import
    again. ``.returncode``, ``.stdout``, ``.stderr`` and ``.out`` (stdout + stderr) as from :func:`run`. For the
    user-error paths; what needs a process of its own (signals, resource limits, concurrency, the working
    folder) keeps :func:`run`. The process-wide settings the entry point makes (OpenMP's wait policy, torch's
    thread count) are put back afterwards. ``timeout`` is accepted for symmetry with :func:`run` (unused)."""
    import io

    import torch

    from matgnn import runtime
    from matgnn.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    keys = set(env or {}) | {"OMP_WAIT_POLICY"}
    saved = {k: os.environ.get(k) for k in keys}
    chosen, threads = runtime._threading_chosen, torch.get_num_threads()
    os.environ.update(env or {})
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        runtime._threading_chosen = chosen
        torch.set_num_threads(threads)
    r = subprocess.CompletedProcess(["matgnn", *args], code, out.getvalue(), err.getvalue())
    r.out = out.getvalue() + err.getvalue()  # type: ignore[attr-defined]
    return r
