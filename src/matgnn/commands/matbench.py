"""``matgnn matbench TASK CONFIG``: a Matbench v0.1 structure task on its five official folds.

The folds are the ``matbench`` package's (``matbench_v0.1_validation.json``); the task's data file
``matbench_<task>.json.gz`` comes from ``--data`` or the matminer download folder
(``$MATMINER_DATA``). Each fold is an ordinary run (its folder under ``<out>/runs/``): trained on the
fold's training ids, validation carved from them only (``split.val`` of them, seeded), tested on its
test ids. The predictions are recorded with the ``matbench`` package itself; once all five folds are done
``<out>/submission/`` holds what a Matbench submission holds: ``results.json.gz`` (gzip-compressed, what
the Matbench repository's ``MatbenchBenchmark.from_file`` and ``scripts/test_submission.py`` read),
``info.json``, ``config.yaml`` and ``matgnn_<task>.py``, which reproduces the run. ``--folds`` splits the
work; finished folds are kept in ``<out>/fold_<k>.json``.

Matbench 0.6 pins scipy 1.7.3, which has no wheel for Python ≥ 3.11; its code runs with current
releases, so it is installed without its pins: ``pip install --no-deps matbench==0.6 matminer``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from matgnn.config import HeadConfig, RunConfig, SplitConfig
from matgnn.data.sources import MatbenchConfig
from matgnn.data.sources.matbench import MatbenchSource
from matgnn.errors import UserError


def _matbench():  # noqa: ANN202 - the matbench package
    try:
        from matbench.bench import MatbenchBenchmark
    except ImportError as e:
        raise UserError(f"matgnn matbench needs the matbench package ({e}): pip install --no-deps matbench==0.6 "
                        "matminer") from None
    return MatbenchBenchmark


def data_file(task: str, data: str | Path | None) -> Path:
    """The task's data file: ``data``, or ``$MATMINER_DATA/<task>.json.gz``."""
    if data is not None:
        path = Path(data)
    else:
        path = Path(os.environ.get("MATMINER_DATA", Path.home() / "matminer_data")) / f"{task}.json.gz"
    if not path.is_file():
        raise UserError(f"{path}: no data file for {task} (give --data matbench_<task>.json.gz, or set MATMINER_DATA "
                        "to the folder matminer downloads into)")
    return path


def parse_folds(text: str | None, folds: list[int]) -> list[int]:
    """``"0,1"`` → ``[0, 1]`` (checked against the task's folds); None → every fold."""
    if text is None or not str(text).strip():
        return list(folds)
    try:
        chosen = sorted({int(x) for x in str(text).split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--folds {text!r}: give fold numbers separated by commas, e.g. 0,1") from None
    bad = [k for k in chosen if k not in folds]
    if bad or not chosen:
        raise UserError(f"--folds {text!r}: Matbench folds are {', '.join(map(str, folds))}")
    return chosen


def _fold_key(task: str, cfg: RunConfig, data_digest: str) -> str:
    """What a finished fold was run with (task, config, data file content): a fold is reused only when all
    three are the same."""
    import hashlib

    blob = json.dumps({"task": task, "config": cfg.model_dump(mode="json", exclude={"output_dir", "name"}),
                       "data": data_digest}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _fold_file(out: Path, k: int) -> Path:
    return out / f"fold_{k}.json"


def run_matbench(task: str, cfg: RunConfig, data: str | Path | None, out: str | Path,
                 console: Console | None = None, progress: bool = False, folds: str | None = None,
                 about: dict[str, str] | None = None) -> Path | None:
    """Train and test ``cfg`` on the folds of ``task`` (``folds``: ``"0,1"`` for a subset; default all five).
    Each finished fold is kept in ``<out>/fold_<k>.json`` (its test predictions, the run, and a key of the
    task, config and data file) and skipped by a later call with the same key; a fold finished with another
    config or data is refused. Once all five folds are there, ``<out>/submission/`` is written — the folder
    a Matbench submission holds (:func:`write_submission`; ``about``: its ``authors``, ``bibtex_refs``,
    ``notes``); returns its ``results.json.gz``, or None while folds are missing (said, with the command that
    finishes them)."""
    import pandas as pd

    from matgnn.data.sources.base import file_digest
    from matgnn.progress import Progress
    from matgnn.training.run import train

    console = console or Console(stderr=True)
    benchmark_cls = _matbench()
    try:
        bench = benchmark_cls(autoload=False, subset=[task])
    except KeyError:
        bench = None
    if bench is None or task not in bench.tasks_map:
        raise UserError(f"{task}: not a Matbench v0.1 task (e.g. matbench_jdft2d, matbench_mp_gap)")
    mt = bench.tasks_map[task]
    if mt.metadata.input_type != "structure" or mt.metadata.task_type != "regression":
        raise UserError(f"{task}: a {mt.metadata.input_type} {mt.metadata.task_type} task; matgnn runs structure "
                        "regression tasks")
    chosen = parse_folds(folds, list(mt.folds))
    path = data_file(task, data)
    source = MatbenchSource(path, task)
    entries = list(source)  # the file read once
    found = {s.id: s.graph_targets for s in entries if not isinstance(s, Exception)}
    if not found:
        first = next((e for e in entries if isinstance(e, Exception)), None)
        raise UserError(f"{path}: none of its {len(entries)} structures could be read"
                        + (f" (first: {first})" if first is not None else "") + "; nothing run")
    target = source.target
    if target != mt.metadata.target:
        raise UserError(f"{path}: its target column is {target!r}, {task}'s is {mt.metadata.target!r}")
    labels = {sid: t[target] for sid, t in found.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    head = next((h for h in cfg.targets if h.level == "graph"), None)
    if head is not None and head.name != target:
        console.print(f"the config's target {head.name!r} is {task}'s column {target!r} here: the runs' heads and "
                      f"files are named {target!r}")
    head = HeadConfig(**{**(head.model_dump() if head else {}), "name": target, "level": "graph", "components": None})
    key = _fold_key(task, cfg, file_digest(path))
    started = time.time()
    done: dict[int, dict[str, Any]] = {}
    for k in mt.folds:  # folds finished before: reused when run with the same task, config and data
        f = _fold_file(out, k)
        if not f.is_file():
            continue
        try:
            rec = json.loads(f.read_text())
            rec["predictions"] = {str(i): float(v) for i, v in rec["predictions"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{f}: unreadable; remove it to run fold {k} again") from None
        if rec.get("key") != key:
            raise UserError(f"{f}: fold {k} in {out} was run with another config or data file; use another --out, "
                            f"or remove {f.name} to run it again with this config")
        done[k] = rec
    # the labels Matbench scores each fold against (its structures are not needed for that)
    mt.df = pd.DataFrame({mt.metadata.input_type: [None] * len(labels), target: list(labels.values())},
                         index=list(labels))
    todo = [k for k in chosen if k not in done]
    if done:
        console.print(f"folds {', '.join(map(str, sorted(done)))} finished before in {out} (same task, config and "
                      f"data): kept" + (f"; running {', '.join(map(str, todo))}" if todo else ""))
    with Progress(f"{task} folds", total=len(todo), unit="folds") as fold_progress:
        for k in todo:
            ids = mt.validation[mt.folds_map[k]]
            train_ids, test_ids = list(ids.train), list(ids.test)
            split_file = out / f"fold_{k}_split.json"
            split_file.write_text(json.dumps({"train": train_ids, "test": test_ids}))
            fold_cfg = cfg.model_copy(update={
                "source": MatbenchConfig(path=str(path), task=task), "targets": [head],
                "split": SplitConfig(kind="ids", ids_file=str(split_file), val=cfg.split.val, seed=cfg.split.seed),
                "output_dir": str(out / "runs"), "name": f"{task}-fold{k}"})
            console.print(f"{task} fold {k}: {len(train_ids)} train (validation carved from them), "
                          f"{len(test_ids)} test")
            run_dir = train(fold_cfg, console=console, progress=progress)
            preds = _test_predictions(run_dir, target)
            missing = [i for i in test_ids if i not in preds]
            if missing:  # structures our loader refused: the training mean, said and recorded
                mean = sum(labels[i] for i in train_ids if i in labels) / max(sum(i in labels for i in train_ids), 1)
                console.print(f"warning: {len(missing)} test structures of fold {k} were refused by the "
                              f"loader (see {run_dir / 'skipped.csv'}); they get the training mean {mean:.4g}")
                preds.update({i: mean for i in missing})
            done[k] = {"fold": k, "key": key, "run": str(run_dir), "refused_test_ids": missing,
                       "seconds": round(time.time() - started, 1), "predictions": {i: preds[i] for i in test_ids}}
            tmp = _fold_file(out, k).with_suffix(".json.part")
            tmp.write_text(json.dumps(done[k]))
            os.replace(tmp, _fold_file(out, k))  # kept whole, even if the next fold is interrupted
            fold_progress.advance()
    missing_folds = [k for k in mt.folds if k not in done]
    if missing_folds:
        console.print(f"{task}: folds {', '.join(map(str, sorted(done)))} done, "
                      f"{', '.join(map(str, missing_folds))} missing; results.json.gz is written when all "
                      f"{len(mt.folds)} are there (matgnn matbench {task} CONFIG --out {out} --folds "
                      f"{','.join(map(str, missing_folds))})")
        return None
    for k in mt.folds:
        rec = done[k]
        test_ids = list(mt.validation[mt.folds_map[k]].test)
        mt.record(k, [rec["predictions"][i] for i in test_ids],
                  params={"run_folder": Path(rec["run"]).name, "model": cfg.model.name,
                          "refused_test_ids": len(rec["refused_test_ids"])})
    from matgnn.version import __version__

    bench.add_metadata({"software": f"matgnn {__version__}", "model": cfg.model.model_dump(mode="json"),
                        "train": cfg.train.model_dump(mode="json"), "graphs": cfg.graphs.model_dump(mode="json")})
    results = write_submission(out / "submission", bench, task, cfg, [
        {k2: v for k2, v in done[k].items() if k2 not in ("predictions", "key")} for k in mt.folds], about or {})
    mae = [mt.results[mt.folds_map[k]]["scores"]["mae"] for k in mt.folds]
    console.print(f"{task}: MAE {sum(mae) / len(mae):.4g} (folds {', '.join(f'{v:.4g}' for v in mae)}) → "
                  f"{results.parent} (the folder to submit: copy it to the Matbench repository's "
                  f"benchmarks/matbench_v0.1_<your algorithm>/)")
    if not (about or {}).get("authors"):
        console.print("info.json has no authors yet: pass --authors (and --bibtex-refs, --notes) for a submission")
    return results


def write_submission(folder: Path, bench: Any, task: str, cfg: RunConfig, folds: list[dict[str, Any]],
                     about: dict[str, str]) -> Path:
    """The folder a Matbench submission holds (what ``scripts/test_submission.py`` of the Matbench repository
    checks): ``results.json.gz`` (the benchmark's own dict, gzip-compressed JSON: matbench 0.6 from the package
    index writes plain JSON under that name, which the repository's reader refuses), ``info.json`` (authors,
    algorithm, algorithm_long, bibtex_refs, notes, requirements), ``config.yaml`` and
    ``matgnn_<task>.py``, a script that reproduces the run (matgnn at the recorded commit, the same config)."""
    import gzip

    from matgnn.version import __version__, source_commit

    folder.mkdir(parents=True, exist_ok=True)
    results = folder / "results.json.gz"
    tmp = folder / ".results.json.gz.part"
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(bench.as_dict(), f)
    os.replace(tmp, results)
    commit = source_commit()
    requirement = f"matgnn=={__version__}" + (f" (git commit {commit})" if commit else "")
    (folder / "info.json").write_text(json.dumps({
        "authors": about.get("authors", ""), "algorithm": f"matgnn-{cfg.model.name}",
        "algorithm_long": f"matgnn {__version__}: {cfg.model.name} ({cfg.model.model_dump_json()}), graphs "
                          f"{cfg.graphs.cutoff} Å / {cfg.graphs.max_neighbors} neighbours, trained per fold with "
                          f"validation carved from the fold's training ids ({cfg.split.val:.0%}, seed {cfg.split.seed})",
        "bibtex_refs": about.get("bibtex_refs", ""),
        "notes": about.get("notes", "") or f"{len(folds)} folds; reproduce with matgnn_{task}.py",
        "requirements": {"python": [requirement, "torch", "torch_geometric", "matbench==0.6"]},
        "folds": folds}, indent=1))
    cfg.model_copy(update={"output_dir": "runs"}).to_yaml(folder / "config.yaml")
    (folder / f"matgnn_{task}.py").write_text(_reproduce_script(task, commit, __version__))
    return results


def _reproduce_script(task: str, commit: str | None, version: str) -> str:
    """The text of ``matgnn_<task>.py``: data, never run here (every value is a Python literal)."""
    pin = commit.split("+")[0] if commit else None
    return f'''"""Reproduce this Matbench submission ({task}) with matgnn {version}{f", git commit {pin}" if pin else ""}.

1. Install matgnn from its source at that commit (pip install -e . in a clone checked out there), and Matbench
   0.6 without its pins (they need Python < 3.11): pip install --no-deps matbench==0.6 matminer
2. Download the task's data with matminer (matminer.datasets.load_dataset({task!r})), or pass its file.
3. Run this script beside config.yaml: it runs the five official folds and writes submission/.
"""

import subprocess
import sys

TASK = {task!r}
DATA = sys.argv[1] if len(sys.argv) > 1 else None  # matbench_<task>.json.gz, else $MATMINER_DATA/<task>.json.gz

command = ["matgnn", "matbench", TASK, "config.yaml", "--out", "matbench-" + TASK]
if DATA:
    command += ["--data", DATA]
sys.exit(subprocess.run(command).returncode)
'''


def _test_predictions(run_dir: Path, target: str) -> dict[str, float]:
    import csv

    with open(Path(run_dir) / "predictions_test.csv", newline="") as f:
        return {r["id"]: float(r[f"{target}_pred"]) for r in csv.DictReader(f)}
