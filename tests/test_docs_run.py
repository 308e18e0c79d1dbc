"""Every shell line of the documentation, run as a user types it: through bash and the installed ``matgnn``
executable, page by page in the page's own folder, in the page's order (a line may use what an earlier one
wrote), each expected to exit 0. The Python blocks of the docs run in-process.

A page's folder holds what its lines name (``my_cifs/``, ``my_run.yaml``, ``new_cifs/``, ``db.db``, ...). Three
kinds of edits are made to a line before it runs, each listed here so that nothing is hidden:

- placeholders: ``RUN`` and ``runs/<run>`` are the newest run of the page's ``runs/`` with the documented head
  (``RUN1,RUN2,RUN3`` the three newest), ``runs/<ens>`` the newest ensemble folder, ``runs/<bulk-gap-run>`` a run
  trained beforehand, the dated run folder of ``--resume`` the newest run of the embedded default,
  ``../shared/data`` the real data (lines naming it skip when it is absent, as in a fresh clone);
- sizes (:data:`SMALLER`): the same command on less work (``--limit 10000`` → 200 structures, 30 sweep trials → 3,
  5 ensemble members → 2, the embedded default's 1,000 structures and 100 epochs → 60 and 2);
- lines that cannot run here (:data:`NOT_RUN`, with the reason): the set-up commands and a two-machine launch.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.test_docs import ROOT, _blocks
from tests.userdata import CRYSTALS, crystal, magmom_jsonl, world_readable_tmp

pytestmark = pytest.mark.slow

#: pages whose shell lines run (the generated reference pages and model cards hold none)
PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if _blocks(p.read_text(), "bash"))

#: lines that are not run, with the reason (exactly these: a new line that cannot run must be listed here)
NOT_RUN = {
    "make demo": "the set-up command: CI's clean-clone run and the new-user smoke test run it",
    "make test": "the set-up and this test suite itself",
    "torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id myrun -m matgnn "
    "train my_run.yaml": "needs two machines",
}

#: the quickstart repeats the README's tour: those lines run, the same way, in tests/test_docs.py
BY_THE_README_TEST = "run as the README's line by tests/test_docs.py (the quickstart repeats the README's tour)"

#: the same commands on less work: (documented text, what runs)
SMALLER = [
    ("--limit 10000", "--limit 200"),
    ("--trials 30", "--trials 3"),
    ("--members 5", "--members 2"),
    ("--nproc_per_node 4", "--nproc_per_node 2"),
    ("train.epochs=50", "train.epochs=3"),
    ("--epochs 30", "--epochs 3"),
    ("--phase1-epochs 50", "--phase1-epochs 1"),
    ("model.name=cgcnn,schnet,pna --grid graphs.cutoff=3,4,6,8", "model.name=cgcnn,schnet,pna --grid graphs.cutoff=4"),
]
#: the embedded default (``matgnn train`` alone): 1,000 EMT structures and 100 epochs in the docs
DEFAULT_TRAIN_SMALLER = "matgnn train --set source.n_structures=60 --epochs 2"


def doc_lines(page: Path) -> list[str]:
    """The page's shell lines in order: continuations joined, comments dropped."""
    out = []
    for block in _blocks(page.read_text(), "bash"):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line and not line.startswith("#"):
                out.append(" ".join(line.split()))
    return out


def _config(path: Path, source: str, target: str, extra: str = "") -> None:
    path.write_text(f"""source: {source}
targets: [{{name: {target}, level: graph}}]
model: {{name: cgcnn, hidden: 16, layers: 2}}
train: {{epochs: 2, batch_size: 4, checkpoint_every: 0, tensorboard: false}}
split: {{kind: random, train: 0.6, val: 0.2}}
{extra}""")


def build_world(home: Path) -> None:
    """What the docs' lines name, in a user's folder."""
    from ase.db import connect
    from ase.io import write

    home.mkdir(parents=True, exist_ok=True)
    for name in ("my_cifs", "new_cifs", "my_structures", "more", "candidates", "new", "structure_database"):
        (home / name).mkdir()
    rows, plain = [], []
    for k, (el, a) in enumerate(CRYSTALS):
        write(home / "my_cifs" / f"s{k}.cif", crystal(k, el, a))
        write(home / "structure_database" / f"2dm-{k}.cif", crystal(k + 40, el, a))
        rows.append(f"s{k},{0.1 * k:.2f},{0.2 * k + 0.1:.2f}")
        plain.append(f"2dm-{k},{0.15 * k:.2f}")
    (home / "my_cifs" / "id_prop.csv").write_text("id,band_gap,optb88vdw_bandgap\n" + "\n".join(rows) + "\n")
    (home / "structure_database" / "id_prop.csv").write_text("\n".join(plain) + "\n")  # 2DMatPedia's: no header
    for k, (el, a) in enumerate(CRYSTALS[:4]):
        for folder in ("new_cifs", "my_structures", "more", "candidates", "new"):
            write(home / folder / f"n{k}.cif", crystal(k + 20, el, a))
    write(home / "big.extxyz", [crystal(k + 30, el, a) for k, (el, a) in enumerate(CRYSTALS[:3])])
    with connect(home / "db.db") as db:
        for k, (el, a) in enumerate(CRYSTALS[:4]):
            db.write(crystal(k + 50, el, a))
    folder = f"{{kind: folder, path: {home / 'my_cifs'}}}"
    _config(home / "my_run.yaml", folder, "optb88vdw_bandgap")
    _config(home / "new_data.yaml", folder, "band_gap")
    _config(home / "dft2d.yaml", folder, "band_gap")
    magmom_jsonl(home / "moments.jsonl.gz", n=6)
    (home / "magmoms.yaml").write_text(f"""source: {{kind: magmoms, path: {home / 'moments.jsonl.gz'}}}
targets: [{{name: magmom, level: node}}]
split: {{kind: random, train: 0.5, val: 0.25}}
""")


def prepare_page(page: Path, home: Path, env: dict[str, str]) -> None:
    """What a page's lines expect beyond the shared inputs: a run trained beforehand, a benchmark split, Matbench
    data. Made in this process (they are not lines of the page), before the pages' lines run."""
    from tests.userdata import cli, ok

    cache = {"MATGNN_CACHE_DIR": env["MATGNN_CACHE_DIR"]}
    runs = f"output_dir={home / 'runs'}"
    if page.name == "transfer.md":  # runs/<bulk-gap-run>: a run to fine-tune from
        ok(cli("train", str(home / "my_run.yaml"), "--set", runs, env=cache))
    if page.name == "command-line.md":  # RUN1,RUN2,RUN3: two runs besides the one the page trains
        for seed in (1, 2):
            ok(cli("train", str(home / "my_run.yaml"), "--set", runs, "--set", f"train.seed={seed}", env=cache))
    if page.name == "submissions.md":
        # the documented run config trains on a benchmark split (leaderboard define on the user's folder)
        ok(cli("leaderboard", "define", str(home / "my_cifs"), "optb88vdw_bandgap", "--out-dir", str(home / "bench"),
               "--folds", "3", env=cache))
        (split,) = (home / "bench").glob("*fold0.json.zip")
        text = (home / "my_run.yaml").read_text().replace("split: {kind: random, train: 0.6, val: 0.2}\n", "")
        # one epoch in batches of 32: the Matbench line trains five folds of 636 monolayers with it
        text = text.replace("train: {epochs: 2, batch_size: 4,", "train: {epochs: 1, batch_size: 32,")
        (home / "my_run.yaml").write_text(text + f"split: {{kind: ids, ids_file: {split}}}\n")
        if (SHARED_DATA / "jarvis").is_dir():
            from tests.test_matbench_source import _fixture

            _fixture(home / "matbench_jdft2d.json.gz", n=636)


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _runs(home: Path, head: str | None = None, prefix: str | None = None) -> list[Path]:
    """Trained runs under ``home/runs``, newest first (with a head of that name, or a folder name prefix)."""
    import json

    found = []
    for p in (home / "runs").glob("*/model/model.json") if (home / "runs").is_dir() else []:
        run = p.parent.parent
        heads = [h["name"] for h in json.loads(p.read_text())["init_args"].get("heads", [])]
        if (head is None or head in heads) and (prefix is None or run.name.startswith(prefix)):
            found.append(run)
    return sorted(found, key=lambda r: r.stat().st_mtime, reverse=True)


def resolve_line(line: str, home: Path) -> str:
    """The line as it runs: placeholders filled, sizes made small (see the module's docstring)."""
    for documented, smaller in SMALLER:
        line = line.replace(documented, smaller)
    if line == "matgnn train":
        line = DEFAULT_TRAIN_SMALLER
    line = line.replace("../shared/data", str(SHARED_DATA))
    if "RUN1,RUN2,RUN3" in line:
        line = line.replace("RUN1,RUN2,RUN3", ",".join(str(r) for r in _runs(home, "optb88vdw_bandgap")[:3]))
    if re.search(r"--resume runs/[\w+-]+?-mixing_energy-\d+-\d+", line):  # the demo's run folder: <default model>-...
        from matgnn.models import DEFAULT_MODEL

        line = re.sub(r"runs/[\w+-]+?-mixing_energy-\d+-\d+",
                      str(_runs(home, prefix=f"{DEFAULT_MODEL}-mixing_energy")[0]), line)
    if "runs/<ens>" in line or "runs/<ensemble folder>" in line:
        (ens,) = sorted((home / "runs").glob("*/ensemble.json"), key=lambda p: p.stat().st_mtime)[-1:]
        line = line.replace("runs/<ens>", str(ens.parent))
    for token in ("runs/<bulk-gap-run>", "runs/<run>"):
        if token in line:
            line = line.replace(token, str((_runs(home, "optb88vdw_bandgap") or _runs(home))[0]))
    if re.search(r"\bRUN\b", line):
        line = re.sub(r"\bRUN\b", str(_runs(home, "optb88vdw_bandgap")[0]), line)
    return line


@pytest.fixture(scope="module")
def page_results():
    """Every page's lines, run (two pages at a time): page -> [(documented line, line run, result or reason)]."""
    base = world_readable_tmp()
    build_world(base / "inputs")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", COLUMNS="200",
               MATGNN_PROGRESS_SECONDS="600")
    results: dict[str, list] = {}
    readme = set(doc_lines(ROOT / "README.md"))
    # each page's folder and what it needs first, here; then the lines, two pages at a time, longest page first
    prepared: dict[Path, Exception | None] = {}
    for page in PAGES:
        home = base / page.stem
        shutil.copytree(base / "inputs", home)
        try:
            prepare_page(page, home, dict(env, MATGNN_CACHE_DIR=str(home / "cache")))
            prepared[page] = None
        except Exception as e:  # noqa: BLE001 - reported by the page's test
            prepared[page] = e
    todo = sorted(PAGES, key=lambda p: -len(doc_lines(p)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                page = todo.pop(0)
            home = base / page.stem
            page_env = dict(env, MATGNN_CACHE_DIR=str(home / "cache"))
            rows = []
            try:
                if prepared[page] is not None:
                    raise prepared[page]
                for line in doc_lines(page):
                    if line in NOT_RUN:
                        rows.append((line, None, NOT_RUN[line]))
                        continue
                    if line in readme and page.name == "quickstart.md":
                        rows.append((line, None, BY_THE_README_TEST))
                        continue
                    if ("../shared/data" in line and not SHARED_DATA.is_dir()) or (
                            "matbench_jdft2d.json.gz" in line and not (home / "matbench_jdft2d.json.gz").is_file()):
                        rows.append((line, None, f"needs the real data at {SHARED_DATA}"))
                        continue
                    ran = resolve_line(line, home)
                    t0 = time.perf_counter()
                    r = _run(ran, home, page_env)
                    rows.append((line, ran, (r, time.perf_counter() - t0)))
                    if r.returncode != 0:
                        break  # later lines may need this one's output
            except Exception as e:  # noqa: BLE001 - reported by the page's test
                rows.append(("(preparing the page)", None, e))
            with lock:
                results[str(page.relative_to(ROOT))] = rows

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slowest = sorted(((o[1], line) for rows in results.values() for line, ran, o in rows if ran is not None
                      and isinstance(o, tuple)), reverse=True)[:8]
    print("\nslowest docs lines: " + "; ".join(f"{t:.1f} s {line[:60]}" for t, line in slowest))
    yield results
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("page", [str(p.relative_to(ROOT)) for p in PAGES])
def test_every_shell_line_of_the_page_runs(page, page_results):
    rows = page_results[page]
    assert rows, page
    for line, ran, outcome in rows:
        if isinstance(outcome, Exception):
            raise outcome
        if ran is None:
            assert outcome in (*NOT_RUN.values(), BY_THE_README_TEST) or outcome.startswith("needs the real data"), \
                (line, outcome)
            continue
        r, secs = outcome
        assert r.returncode == 0, f"{page}: {line}\nran: {ran}\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    assert len([row for row in rows if row[1] is not None]) + len([row for row in rows if row[1] is None]) == \
        len(doc_lines(ROOT / page))


def test_every_line_the_docs_cannot_run_is_still_in_them():
    """The list of lines not run names only lines the docs hold (a line removed from the docs leaves it)."""
    everything = {line for page in PAGES for line in doc_lines(page)}
    assert set(NOT_RUN) <= everything
    assert len(everything) >= 40


def test_the_python_blocks_of_the_docs_run(tmp_path, monkeypatch):
    """The Python blocks of the user pages, in-process, in a user's folder (a block's placeholder names — a
    run folder, an ASE database, a list of structures — are made first, as the shell pages' are)."""
    from ase.build import bulk
    from ase.db import connect

    from tests.userdata import cli

    build_world(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli("ensemble", str(tmp_path / "my_run.yaml"), "--members", "2").returncode == 0
    (ens,) = sorted((tmp_path / "runs").glob("*/ensemble.json"))
    ran = 0
    for page in ("guide/python-api.md", "quickstart.md", "design/layout.md"):
        for block in _blocks((ROOT / "docs" / page).read_text(), "python"):
            code = textwrap.dedent(block).replace("runs/<ensemble folder>", str(ens.parent))
            names = {"__name__": "docs", "db": connect(tmp_path / "db.db"),
                     "list_of_atoms": [bulk("Fe", "bcc", a=2.87), bulk("Ni", "fcc", a=3.52)]}
            exec(compile(code, page, "exec"), names)
            ran += 1
    assert ran >= 4


def test_the_placeholders_resolve_to_real_folders(tmp_path):
    """The rules above, on a folder with two runs: RUN is the newest run with the documented head."""
    build_world(tmp_path)
    (tmp_path / "runs" / "a" / "model").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "model" / "model.json").write_text('{"init_args": {"heads": [{"name": "x"}]}}')
    time.sleep(0.01)
    (tmp_path / "runs" / "b" / "model").mkdir(parents=True)
    (tmp_path / "runs" / "b" / "model" / "model.json").write_text(
        '{"init_args": {"heads": [{"name": "optb88vdw_bandgap"}]}}')
    assert resolve_line("matgnn evaluate RUN", tmp_path) == f"matgnn evaluate {tmp_path / 'runs' / 'b'}"
    assert resolve_line("matgnn train", tmp_path) == DEFAULT_TRAIN_SMALLER
    assert shlex.split(resolve_line("matgnn graphs build x --limit 10000", tmp_path))[-1] == "200"
