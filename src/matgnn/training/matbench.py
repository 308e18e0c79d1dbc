"""``matgnn matbench TASK CONFIG``: a Matbench v0.1 structure task on its five official folds.

The folds are the ``matbench`` package's (``matbench_v0.1_validation.json``); the task's data file
``matbench_<task>.json.gz`` comes from ``--data`` or the matminer download folder
(``$MATMINER_DATA``). Each fold is an ordinary run (its folder under ``<out>/runs/``): trained on the
fold's training ids, validation carved from them only (``split.val`` of them, seeded), tested on its
test ids. The predictions are recorded with the ``matbench`` package itself and written as
``results.json.gz`` (what ``MatbenchBenchmark.from_file`` reads and Matbench submissions hold), with
``info.json`` beside it.

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


def run_matbench(task: str, cfg: RunConfig, data: str | Path | None, out: str | Path,
                 console: Console | None = None, progress: bool = False) -> Path:
    """Train and test ``cfg`` on every fold of ``task``; returns ``<out>/results.json.gz``."""
    import pandas as pd

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
    head = HeadConfig(**{**(head.model_dump() if head else {}), "name": target, "level": "graph", "components": None})
    started = time.time()
    folds: list[dict[str, Any]] = []
    # the labels Matbench scores each fold against (its structures are not needed for that)
    mt.df = pd.DataFrame({mt.metadata.input_type: [None] * len(labels), target: list(labels.values())},
                         index=list(labels))
    for k in mt.folds:
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
        folds.append({"fold": k, "run": str(run_dir), "refused_test_ids": missing})
        mt.record(k, [preds[i] for i in test_ids],
                  params={"run_folder": run_dir.name, "model": cfg.model.name, "refused_test_ids": len(missing)})
    from matgnn.version import __version__

    bench.add_metadata({"software": f"matgnn {__version__}", "model": cfg.model.model_dump(mode="json"),
                        "train": cfg.train.model_dump(mode="json"), "graphs": cfg.graphs.model_dump(mode="json")})
    results = out / "results.json.gz"
    bench.to_file(str(results))
    (out / "info.json").write_text(json.dumps({
        "authors": "", "algorithm": f"matgnn-{cfg.model.name}",
        "algorithm_long": f"matgnn {__version__}: {cfg.model.name} ({cfg.model.model_dump_json()}), graphs "
                          f"{cfg.graphs.cutoff} Å / {cfg.graphs.max_neighbors} neighbours, trained per fold with "
                          f"validation carved from the fold's training ids ({cfg.split.val:.0%}, seed {cfg.split.seed})",
        "bibtex_refs": "", "notes": f"{time.time() - started:.0f} s for {len(folds)} folds",
        "requirements": {"python": [f"matgnn=={__version__}"]}, "folds": folds}, indent=1))
    mae = [mt.results[mt.folds_map[k]]["scores"]["mae"] for k in mt.folds]
    console.print(f"{task}: MAE {sum(mae) / len(mae):.4g} (folds {', '.join(f'{v:.4g}' for v in mae)}) → {results}")
    return results


def _test_predictions(run_dir: Path, target: str) -> dict[str, float]:
    import csv

    with open(Path(run_dir) / "predictions_test.csv", newline="") as f:
        return {r["id"]: float(r[f"{target}_pred"]) for r in csv.DictReader(f)}
