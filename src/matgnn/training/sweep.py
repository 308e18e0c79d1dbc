"""Sweeps over any config keys — a grid, or Optuna's TPE sampler — ranked in one table.

Every point is an ordinary run (its own run folder); graphs are cached per graph settings, so a
cutoff sweep builds each cutoff's graphs once and every model at that cutoff reuses them. Points
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

import yaml

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
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    m = json.loads((run / "metrics.json").read_text())
    row: dict[str, Any] = {"run": run.name, "model": cfg["model"]["name"] + (f":{cfg['model']['operator']}"
                                                                            if cfg["model"].get("operator") else ""),
                           "cutoff": cfg["graphs"]["cutoff"], **point, "selection_metric": m.get(metric)}
    for h in heads:
        for k in ("mae", "rmse", "r2"):
            row[f"test.{h}.{k}"] = m.get(f"test.{h}.{k}")
    row.update(parameters=m["n_parameters"], train_seconds=round(m["train_seconds"], 1))
    return row


def run_sweep(cfg: RunConfig, grid: dict[str, list[Any]] | None = None,
              space: dict[str, tuple[str, list[Any]]] | None = None, trials: int = 0,
              metric: str | None = None, out: str | Path | None = None, seed: int = 0, **train_kw: Any) -> Path:
    """Run every grid point (or ``trials`` Optuna TPE trials over ``space``) and write the
    ranking; returns the sweep folder."""
    from matgnn.training.run import train

    if not grid and not (space and trials):
        raise ValueError("give a grid, or a search space and a number of trials")
    heads = [h.name for h in cfg.targets]
    metric = metric or f"val.{heads[0]}.mae"
    if not metric.startswith("val."):
        raise ValueError(f"rank by a validation metric (val.<head>.mae ...), not {metric!r}: the test set stays unseen")
    name = cfg.name or "sweep"
    folder = Path(out) if out else Path(cfg.output_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(folder / "base_config.yaml")
    rows: list[dict[str, Any]] = []

    def one(point: dict[str, Any], k: int) -> float:
        c = cfg.with_overrides([f"{key}={json.dumps(v)}" for key, v in point.items()])
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

    if grid:
        keys = list(grid)
        for k, values in enumerate(itertools.product(*(grid[key] for key in keys))):
            one(dict(zip(keys, values)), k)
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

        study.optimize(objective, n_trials=trials)
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
