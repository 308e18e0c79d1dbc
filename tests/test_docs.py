"""The documentation cannot drift from the code: the generated pages (CLI and config references, benchmark
tables, model cards, the README's results) equal what the code and the results files give now; every shell
block of the README runs through the installed ``matgnn`` executable on small files in the real formats, and
its Python block runs in-process; the README stays short and nothing in the docs speaks of how the project
was developed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.userdata import CRYSTALS, crystal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import gen_docs  # noqa: E402


def test_generated_pages_are_up_to_date():
    stale = [rel for rel, text in gen_docs.pages().items()
             if not (gen_docs.DOCS / rel).is_file() or (gen_docs.DOCS / rel).read_text() != text]
    assert not stale, f"stale generated pages, run python tools/gen_docs.py: {stale}"


def test_study_tables_are_read_from_the_results_files(tmp_path, monkeypatch):
    """A study page's table is filled from its results file (a changed number shows up as a stale page), and a
    marker naming no table stops the generator instead of leaving a hand-typed table behind."""
    import json
    import shutil

    studies = tmp_path / "docs" / "benchmarks" / "studies"
    studies.mkdir(parents=True)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    shutil.copy(gen_docs.ROOT / "benchmarks" / "results" / "alignn_dihedrals.json", tmp_path / "benchmarks" / "results")
    monkeypatch.setattr(gen_docs, "ROOT", tmp_path)
    monkeypatch.setattr(gen_docs, "DOCS", tmp_path / "docs")
    (studies / "a.md").write_text("# A\n\n<!-- table: alignn_dihedrals -->\n| typed | 0.1 |\n<!-- end table -->\ntext\n")
    page = gen_docs.study_pages()["benchmarks/studies/a.md"]
    d = json.loads((tmp_path / "benchmarks" / "results" / "alignn_dihedrals.json").read_text())
    assert f"| `alignn` | {d['data']['per_run'][0]['mae']:.3f} |" in page and "| typed |" not in page
    assert page.endswith("<!-- end table -->\ntext\n") and f"commit `{d['git_commit'][:7]}`" in page
    d["data"]["per_run"][0]["mae"] = 9.0
    (tmp_path / "benchmarks" / "results" / "alignn_dihedrals.json").write_text(json.dumps(d))
    assert "| `alignn` | 9.000 |" in gen_docs.study_pages()["benchmarks/studies/a.md"]
    (studies / "b.md").write_text("<!-- table: no_such_table -->\n<!-- end table -->\n")
    with pytest.raises(SystemExit, match="no_such_table"):
        gen_docs.study_pages()


def test_study_pages_hold_no_hand_typed_table_of_figures():
    """A table of measured figures on a study page is generated (between table markers); a table outside them
    may describe (tasks, data) but holds no decimal figure."""
    for path in sorted((gen_docs.DOCS / "benchmarks" / "studies").glob("*.md")):
        text = gen_docs.TABLE_PATTERN.sub("", path.read_text())
        typed = [line for line in text.splitlines() if line.startswith("|") and re.search(r"\d\.\d", line)]
        assert not typed, f"{path.name}: a hand-typed table of figures (make it a STUDY_TABLES entry): {typed[0]}"


def test_the_default_family_is_the_task_suites_choice():
    """The default model is the family of lowest mean normalised error on the committed task suite among those a
    plain install has (changing the default without a suite that says so fails here)."""
    import json

    from matgnn.config import RunConfig
    from matgnn.models import DEFAULT_MODEL

    suite = json.loads((ROOT / "benchmarks" / "results" / "task_suite.json").read_text())
    assert suite["data"]["runs_missing"] == 0 and len(suite["data"]["tasks"]) == 8
    assert suite["data"]["suite_choice"]["best_plain_family"] == DEFAULT_MODEL == RunConfig().model.name


def test_the_readme_is_short_and_the_docs_never_speak_of_sessions():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert not re.search(r"\b[0-9a-f]{7,40}\b", readme.split("<!-- results")[0]), "a commit hash in the README"
    texts = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for path in texts:
        assert "session" not in path.read_text().lower(), path
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tools").glob("*.py"),
                 *(ROOT / "benchmarks" / "configs").glob("*.yaml"), *(ROOT / "tests").rglob("*.py"),
                 ROOT / "Makefile", ROOT / ".ci" / "run", ROOT / "pyproject.toml"]:
        comments = [ln for ln in path.read_text().splitlines() if "#" in ln]
        assert not [c for c in comments if "session" in c.split("#", 1)[1].lower()], path


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """What the README's tour starts from: my_cifs/ (CIF files + id_prop.csv with a band_gap column) and
    new_cifs/ (structures without labels)."""
    from ase.io import write

    home = tmp_path_factory.mktemp("user")
    (home / "my_cifs").mkdir()
    (home / "new_cifs").mkdir()
    rows = []
    for k, (el, a) in enumerate(CRYSTALS):
        write(home / "my_cifs" / f"s{k}.cif", crystal(k, el, a))
        rows.append(f"s{k},{0.1 * k:.2f}")
    (home / "my_cifs" / "id_prop.csv").write_text("id,band_gap\n" + "\n".join(rows) + "\n")
    for k, (el, a) in enumerate(CRYSTALS[:4]):
        write(home / "new_cifs" / f"n{k}.cif", crystal(k + 20, el, a))
    return home


def test_every_shell_line_of_the_readme_runs(user_folder):
    """Each ``matgnn`` line of the README's shell blocks, in order, as a user types it (bash, the installed
    executable; globs expanded by the shell): exit 0."""
    readme = (ROOT / "README.md").read_text()
    lines = [ln.split("  #")[0].strip() for block in _blocks(readme, "bash") for ln in block.splitlines()]
    commands = [ln for ln in lines if ln.startswith("matgnn ")]
    assert len(commands) >= 8
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", COLUMNS="200",
               MATGNN_CACHE_DIR=str(user_folder / "cache"))
    for command in commands:
        r = subprocess.run(["bash", "-c", command], cwd=user_folder, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{command}\n{r.stdout}{r.stderr}"
    assert (user_folder / "mine.csv").is_file() and (user_folder / "dft_starts").is_dir()
    assert (user_folder / "most_uncertain.csv").is_file() and (user_folder / "gapped.json").is_file()


def test_the_readme_python_block_runs(user_folder, monkeypatch):
    (block,) = _blocks((ROOT / "README.md").read_text(), "python")
    monkeypatch.chdir(user_folder)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def _doc_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every ``matgnn`` command in the guide's shell blocks (continuation lines joined,
    comments dropped; ``torchrun ... -m matgnn`` lines give their matgnn part)."""
    import shlex

    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for block in _blocks(page.read_text(), "bash"):
            text = re.sub(r"\\\n\s*", " ", block)
            for line in text.splitlines():
                line = line.split("  #")[0].split(" # ")[0].strip()
                if " -m matgnn " in line:
                    line = "matgnn " + line.split(" -m matgnn ", 1)[1]
                if line.startswith("matgnn "):
                    found.append((str(page.relative_to(ROOT)), shlex.split(line)[1:]))
    return found


def test_every_command_in_the_docs_parses_against_the_cli():
    """Every ``matgnn`` line of the documentation's shell blocks names a command that exists and options it
    takes, with values of the right type: parsed by the CLI's own parser, with the placeholders as written (RUN,
    my_run.yaml). Every line also runs, through the installed executable, in ``tests/test_docs_run.py``."""
    import typer

    from matgnn.cli.main import app

    root = typer.main.get_command(app)
    commands = _doc_commands()
    assert len(commands) >= 30
    for page, argv in commands:
        cmd, rest, names = root, list(argv), ["matgnn"]
        while getattr(cmd, "commands", None) and rest and rest[0] in cmd.commands:
            names.append(rest[0])
            cmd = cmd.commands[rest.pop(0)]
        assert not getattr(cmd, "commands", None), f"{page}: {' '.join(argv)}: no such command"
        try:
            cmd.make_context(" ".join(names), rest)
        except Exception as e:  # noqa: BLE001 - click's usage errors, said with the line
            pytest.fail(f"{page}: matgnn {' '.join(argv)}: {e}")


def test_every_yaml_config_and_python_block_of_the_docs_is_valid():
    """Config blocks (YAML with a source or targets) validate against the run-config schema; Python blocks
    compile."""
    import yaml

    from matgnn.config import RunConfig

    n = 0
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        for block in _blocks(text, "yaml"):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and ("source" in data or "targets" in data):
                RunConfig.model_validate(data)
                n += 1
        for block in _blocks(text, "python"):
            import textwrap

            compile(textwrap.dedent(block), str(page), "exec")
            n += 1
    assert n >= 3
