"""Sweeps over any config keys — a grid, or Optuna's TPE sampler — ranked in one table.

Every point is an ordinary run (its own run folder); graphs are cached per graph settings, so a
cutoff sweep builds each cutoff's graphs once and every model at that cutoff reuses them. When the
points differ in graph settings, the structures with a valid graph differ too (at 3 Å an atom may
have no neighbour; at 8 Å it has), and a split made per point would differ with them; the sweep
then makes one split over the structures valid under every graph setting and every point trains,
validates and tests on exactly those (``shared_split.json`` lists the structures each setting
loses). Points
are ranked by a validation metric (default: the first head's validation MAE; the test metrics are
reported beside it, never used to choose), into ``ranking.csv`` and ``ranking.md`` with model,
cutoff, the swept values, MAE, RMSE, R², parameters and training time.

Grid: ``--grid model.name=cgcnn,schnet --grid graphs.cutoff=4,6`` (values parsed as YAML).
Search space for Optuna: ``--space train.lr=loguniform:1e-4:1e-2 --space model.hidden=int:32:128
--space train.dropout=uniform:0:0.3 --space model.name=choice:cgcnn,schnet``.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from matgnn.artifacts import read_yaml, safe_file_part
from matgnn.config import RunConfig


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not raw:
            raise ValueError(f"grid entry {item!r} is not key=v1,v2,...")
        grid[key.strip()] = [yaml.safe_load(v) for v in raw.split(",")]
    return grid


def parse_space(items: list[str]) -> dict[str, tuple[str, list[Any]]]:
    kinds = {"uniform", "loguniform", "int", "choice"}
    space: dict[str, tuple[str, list[Any]]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        kind, _, args = raw.partition(":")
        if not sep or kind not in kinds:
            raise ValueError(f"space entry {item!r} is not key=KIND:ARGS with KIND one of {sorted(kinds)}, "
                             "e.g. train.lr=loguniform:1e-4:1e-2 or model.name=choice:cgcnn,schnet")
        vals = args.split(",") if kind == "choice" else args.split(":")
        if kind != "choice" and len(vals) != 2:
            raise ValueError(f"space entry {item!r}: {kind} needs LOW:HIGH")
        space[key.strip()] = (kind, [yaml.safe_load(v) for v in vals])
    return space


def _row(run: Path, point: dict[str, Any], metric: str, heads: list[str]) -> dict[str, Any]:
    cfg = read_yaml(run / "config.yaml")
    m = json.loads((run / "metrics.json").read_text())
    row: dict[str, Any] = {"run": run.name, "model": cfg["model"]["name"] + (f":{cfg['model']['operator']}"
                                                                            if cfg["model"].get("operator") else ""),
                           "cutoff": cfg["graphs"]["cutoff"], **point, "selection_metric": m.get(metric)}
    for h in heads:
        for k in ("mae", "rmse", "r2"):
            row[f"test.{h}.{k}"] = m.get(f"test.{h}.{k}")
    row.update(n_train=m.get("n_train"), n_val=m.get("n_val"), n_test=m.get("n_test"),
               parameters=m["n_parameters"], train_seconds=round(m["train_seconds"], 1))
    return row


def _graph_variants(cfg: RunConfig, grid: dict[str, list[Any]] | None,
                    space: dict[str, tuple[str, list[Any]]] | None) -> list[RunConfig] | None:
    """The distinct graph settings a sweep visits, as configs, or None when it has one."""
    keys = {k: v for k, v in (grid or {}).items() if k.startswith("graphs.")}
    for k, (kind, args) in (space or {}).items():
        if k.startswith("graphs."):
            if kind != "choice":
                return None  # continuous graph settings: every trial its own; splits made per point
            keys[k] = args
    if not keys or cfg.split.kind == "ids":
        return None
    if any(k.startswith(("split.", "source.")) for k in list(grid or {}) + list(space or {})):
        return None  # the sweep varies the data or the split itself
    names = list(keys)
    return [cfg.with_overrides([f"{k}={json.dumps(v)}" for k, v in zip(names, values)])
            for values in itertools.product(*(keys[k] for k in names))]


def shared_split(variants: list[RunConfig], folder: Path) -> Path:
    """One split (under the base config's split settings) over the labelled structures that
    have a valid graph under every graph setting in ``variants``; written as an ids file
    (``shared_split.json``) with, per setting, the structures it loses."""
    from rich.console import Console

    from matgnn.data.sources import make_source
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.training.data import make_split
    from matgnn.training.targets import target_labels as _labels

    cfg = variants[0]
    source = make_source(cfg.source)
    caches = [build_graph_cache(source, c.graphs, cache_root=c.cache_dir, workers=c.workers,
                                on_invalid=c.on_invalid, progress=False) for c in variants]
    common = set(caches[0].ids)
    for c in caches[1:]:
        common &= set(c.ids)
    cache = caches[0]
    labels = _labels(cache, cfg.targets)
    labelled = [i for i, d in enumerate(labels) if cache.ids[i] in common
                and any((~np.isnan(v)).any() for v in d.values())]
    parts = make_split(cfg, cache, labels, labelled, Console(stderr=True, quiet=True))
    all_ids = set().union(*(set(c.ids) for c in caches))
    lost = {json.dumps(c.graphs.model_dump(mode="json"), sort_keys=True): sorted(all_ids - set(k.ids))
            for c, k in zip(variants, caches)}
    path = folder / "shared_split.json"
    path.write_text(json.dumps({**{k: [cache.ids[i] for i in v] for k, v in parts.items()},
                                "config": cfg.split.model_dump(mode="json"),
                                "note": "structures with a valid, labelled graph under every graph setting of the sweep",
                                "left_out_per_graph_setting": lost}, indent=1))
    return path


def run_sweep(cfg: RunConfig, grid: dict[str, list[Any]] | None = None,
              space: dict[str, tuple[str, list[Any]]] | None = None, trials: int = 0,
              metric: str | None = None, out: str | Path | None = None, seed: int = 0, resume: bool = False,
              **train_kw: Any) -> Path:
    """Run every grid point (or ``trials`` Optuna TPE trials over ``space``) and write the
    ranking; returns the sweep folder. ``resume`` (grids): points of ``out`` that finished
    before (their run folder holds ``metrics.json``) are ranked as they are, not run again."""
    from matgnn.training.run import train

    if not grid and not (space and trials):
        raise ValueError("give a grid, or a search space and a number of trials")
    heads = [h.name for h in cfg.targets]
    metric = metric or f"val.{heads[0]}.mae"
    if not metric.startswith("val."):
        raise ValueError(f"rank by a validation metric (val.<head>.mae ...), not {metric!r}: the test set stays unseen")
    if resume and not (grid and out):
        raise ValueError("resume needs a grid and the folder (out) of the sweep to resume")
    if space and trials:
        from matgnn.packages import require_package

        require_package("optuna", "a sweep with --trials")  # before any folder exists
    name = cfg.name or "sweep"
    folder = Path(out) if out else Path(cfg.output_dir) / f"{safe_file_part(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(folder / "base_config.yaml")
    rows: list[dict[str, Any]] = []
    variants = _graph_variants(cfg, grid, space)
    fixed = [] if variants is None else [
        "split.kind=ids", f"split.ids_file={json.dumps(str(shared_split(variants, folder).resolve()))}"]

    def one(point: dict[str, Any], k: int) -> float:
        done = ([r for r in sorted((folder / "runs").glob(f"point{k:03d}-*")) if (r / "metrics.json").exists()]
                if resume else [])
        if done:
            rows.append(_row(done[-1], point, metric, heads))
            _write(folder, rows)
            return float(rows[-1]["selection_metric"])
        c = cfg.with_overrides([f"{key}={json.dumps(v)}" for key, v in point.items()] + fixed)
        c = c.model_copy(update={"output_dir": str(folder / "runs"), "name": f"point{k:03d}"})
        try:
            run = train(c, **train_kw)
            rows.append(_row(run, point, metric, heads))
        except Exception as e:  # a point that cannot run is listed with the reason, not dropped
            rows.append({"run": f"point{k:03d}", "model": c.model.name, "cutoff": c.graphs.cutoff, **point,
                         "selection_metric": None, "error": f"{type(e).__name__}: {e}"[:300]})
        _write(folder, rows)
        value = rows[-1]["selection_metric"]
        return float("inf") if value is None else float(value)

    from matgnn.progress import Progress

    if grid:
        keys = list(grid)
        points = list(itertools.product(*(grid[key] for key in keys)))
        with Progress("sweep", total=len(points), unit="points") as progress:
            for k, values in enumerate(points):
                one(dict(zip(keys, values)), k)
                progress.advance()
    if space and trials:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))

        def objective(trial) -> float:
            point = {}
            for key, (kind, args) in space.items():
                if kind == "choice":
                    point[key] = trial.suggest_categorical(key, args)
                elif kind == "int":
                    point[key] = trial.suggest_int(key, int(args[0]), int(args[1]))
                else:
                    point[key] = trial.suggest_float(key, float(args[0]), float(args[1]), log=kind == "loguniform")
            return one(point, len(rows))

        with Progress("sweep", total=trials, unit="trials") as progress:
            study.optimize(objective, n_trials=trials, callbacks=[lambda _study, _trial: progress.advance()])
    return folder


def _write(folder: Path, rows: list[dict[str, Any]]) -> None:
    ranked = sorted(rows, key=lambda r: (r["selection_metric"] is None, r["selection_metric"] or 0.0))
    cols = list(dict.fromkeys(k for r in ranked for k in r))
    with open(folder / "ranking.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["rank"] + cols)
        w.writeheader()
        for i, r in enumerate(ranked, 1):
            w.writerow({"rank": i, **r})

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| rank | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    lines += [f"| {i} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for i, r in enumerate(ranked, 1)]
    (folder / "ranking.md").write_text("\n".join(lines) + "\n")
