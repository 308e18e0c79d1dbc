"""JARVIS-Leaderboard contributions from a run folder, and benchmark definitions in its layout.

A leaderboard benchmark is a split file ``<dataset>_<property>.json.zip`` holding
``{"train": {id: value}, "val": {...}, "test": {...}}`` (the files under
``jarvis_leaderboard/benchmarks/AI/SinglePropertyPrediction/`` of the ``jarvis-leaderboard``
package; ``split: {kind: ids, ids_file: ...}`` trains on one). A contribution is a folder per model
holding ``AI-SinglePropertyPrediction-<property>-<dataset>-test-mae.csv.zip`` (one CSV of the same
name, ``id,prediction`` for every test id), ``metadata.json`` (model, team, software, hardware,
time) and here also ``run.sh`` + ``config.yaml`` (how to reproduce it with matgnn).
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import platform
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from matgnn.artifacts import RunFolder
from matgnn.errors import UserError

CATEGORY = "AI-SinglePropertyPrediction"


def benchmark_name(split_file: Path, head: str) -> tuple[str, str]:
    """(dataset, property) of a leaderboard split file: ``dft_3d_exfoliation_energy.json.zip`` with
    head ``exfoliation_energy`` → (``dft_3d``, ``exfoliation_energy``), a proposed
    ``dft_2d_optb88vdw_bandgap_fold0`` → (``dft_2d``, ``optb88vdw_bandgap_fold0``); otherwise the stem
    is cut at its first ``_`` (``megnet_e_form`` → (``megnet``, ``e_form``))."""
    stem = split_file.name
    for suffix in (".json.zip", ".zip", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    at = stem.find("_" + head)
    if at > 0:  # <dataset>_<head>[_<more>], e.g. a proposed benchmark's ..._fold0
        return stem[:at], stem[at + 1:]
    dataset, _, prop = stem.partition("_")
    if not prop:
        raise UserError(f"{split_file}: not a leaderboard benchmark file name (<dataset>_<property>.json.zip)")
    return dataset, prop


def read_benchmark(path: Path) -> dict[str, dict[str, float]]:
    """A leaderboard benchmark file: split -> id -> value (a zip holding one JSON, or the JSON)."""
    from matgnn.training.splits import read_split_json

    try:
        raw = read_split_json(path)
    except (OSError, zipfile.BadZipFile, StopIteration, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a leaderboard benchmark file ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("test"), dict):
        raise UserError(f"{path}: a leaderboard benchmark file maps train/val/test to {{id: value}}")
    return {k: {str(i): v for i, v in raw.get(k, {}).items()} for k in ("train", "val", "test") if isinstance(raw.get(k), dict)}


#: what a contribution's name may hold: it names a folder and is written into run.sh
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+")


def check_contribution_name(name: str) -> str:
    """``name`` if it is a safe contribution (folder) name: letters, digits and ``_ - . +``, not starting with
    a dot, at most 100 characters; else a :class:`UserError` (no shell character, no path, no ``..``)."""
    bad = sorted({c for c in name if c not in _NAME_CHARS})
    if not name or name.startswith(".") or len(name) > 100 or bad or ".." in name:
        why = (f"characters {''.join(bad)!r} are not allowed" if bad else "it is empty, starts with '.', holds '..' "
               "or is longer than 100 characters")
        raise UserError(f"--name {name!r}: {why}; a contribution name is letters, digits and _ - . + (it names the "
                        "contribution folder and is written into run.sh)")
    return name


def export(run_dir: str | Path, out: str | Path, model_name: str | None = None, team: str | None = None,
           email: str = "", project_url: str = "https://github.com/matgnn/matgnn", partial: bool = False
           ) -> tuple[Path, dict[str, Any]]:
    """Write the contribution folder ``<out>/<model_name>/`` for a run trained on a leaderboard split;
    returns it. Every test id of the benchmark must have a prediction (``partial``: write what there
    is and say so in ``metadata.json``)."""
    from matgnn.config import RunConfig
    from matgnn.version import __version__

    run = RunFolder(Path(run_dir))
    if not run.config.is_file() or not run.predictions("test").is_file():
        raise UserError(f"{run.path}: not a finished run folder (no config.yaml or predictions_test.csv)")
    cfg = RunConfig.from_yaml(run.config)
    if cfg.split.kind != "ids" or not cfg.split.ids_file:
        raise UserError(f"{run.path}: trained on a {cfg.split.kind} split; a leaderboard contribution needs a run "
                        "trained on the leaderboard's split (split: {kind: ids, ids_file: <dataset>_<property>.json.zip})")
    graph = [h for h in cfg.targets if h.level == "graph" and not h.components]
    if len(graph) != 1:
        raise UserError(f"{run.path}: a SinglePropertyPrediction contribution needs exactly one scalar graph head, "
                        f"the run has {[h.name for h in cfg.targets]}")
    head = graph[0].name
    split_file = Path(cfg.split.ids_file)
    if not split_file.is_file():
        raise UserError(f"{split_file}: the run's leaderboard split file is not there any more")
    bench = read_benchmark(split_file)
    dataset, prop = benchmark_name(split_file, head)
    with open(run.predictions("test"), newline="") as f:
        preds = {r["id"]: float(r[f"{head}_pred"]) for r in csv.DictReader(f)}
    wanted = list(bench["test"])
    missing = [i for i in wanted if i not in preds]
    extra = [i for i in preds if i not in bench["test"]]
    if extra:
        raise UserError(f"{run.path}: {len(extra)} predicted test ids are not test ids of {split_file.name} "
                        f"(first: {extra[0]}); was the run trained on this split?")
    if missing and not partial:
        raise UserError(f"{run.path}: predictions for {len(wanted) - len(missing)} of the {len(wanted)} test ids of "
                        f"{split_file.name} ({len(missing)} have no structure in the run's source, first: "
                        f"{missing[0]}); the leaderboard scores every test id (--partial writes the file anyway)")
    name = f"{CATEGORY}-{prop}-{dataset}-test-mae.csv"
    model_name = check_contribution_name(model_name or f"matgnn_{cfg.model.name}")
    folder = Path(out) / model_name
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(i, preds[i]) for i in wanted if i in preds]
    text = "id,prediction\n" + "".join(f"{i},{p:.6g}\n" for i, p in rows)
    with zipfile.ZipFile(folder / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, text)
    metrics = run.read_metrics()
    true = np.array([float(bench["test"][i]) for i, _ in rows])
    mae = float(np.mean(np.abs(np.array([p for _, p in rows]) - true))) if rows else float("nan")
    meta: dict[str, Any] = {
        "model_name": model_name, "project_url": project_url, "date_submitted": time.strftime("%m-%d-%Y"),
        "author_email": email, "database_version": _database_version(cfg), "team_name": team or model_name,
        "time_taken_seconds": round(float(metrics.get("train_seconds", 0.0)), 2), "language": "python",
        "os": platform.system().lower(), "software_used": f"matgnn {__version__},torch,torch_geometric,vesin,ase,pymatgen",
        "hardware_used": str(metrics.get("device", "unknown")), "git_url": [project_url],
    }
    if missing:
        meta["note"] = (f"partial: predictions for {len(rows)} of the {len(wanted)} test ids (the others had no "
                        "structure in the training source)")
    (folder / "metadata.json").write_text(json.dumps(meta, indent=4))
    cfg.to_yaml(folder / "config.yaml")
    (folder / "run.sh").write_text(
        "#!/bin/sh\n# Reproduce this contribution: train on the leaderboard split, then export the test predictions.\n"
        f"# needs {split_file.name} at the path in config.yaml (split.ids_file)\nset -e\n"
        "pip install matgnn\nmatgnn train config.yaml\n"
        f"matgnn leaderboard export \"$(ls -d {shlex.quote(str(cfg.output_dir))}/*/ | tail -1)\" --out . --name "
        f"{shlex.quote(model_name)}\n")
    (folder / "run.sh").chmod(0o755)
    return folder, {"file": str(folder / f"{name}.zip"), "n_predicted": len(rows), "n_test": len(wanted),
                    "mae": mae, "run_test_mae": metrics.get(f"test.{head}.mae")}


def _database_version(cfg) -> str:  # noqa: ANN001
    """The JARVIS release of the run's source: the date in the name of the dataset's zip."""
    if getattr(cfg.source, "kind", None) != "jarvis":
        return "unknown"
    from matgnn.data.sources.jarvis import _zip_path

    try:
        name = Path(_zip_path(cfg.source.dataset, cfg.source.store_dir)).name
    except Exception:  # noqa: BLE001 - jarvis-tools' own lookup: the version stays unknown
        return "unknown"
    return name.split("-", 1)[-1].replace(".json.zip", "") if "-" in name else "unknown"


def define(ids: list[str], values: list[float], folds: int, seed: int, val: float, dataset: str, prop: str,
           out: str | Path) -> list[Path]:
    """Benchmark files in the leaderboard layout, one per fold (``<dataset>_<prop>_fold<k>.json.zip``):
    fold k is the test set, ``val`` of all entries from the other folds validation (our k-fold)."""
    from matgnn.training.splits import kfold_split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(folds):
        parts = kfold_split(len(ids), folds, k, val, seed)
        body = {s: {ids[i]: values[i] for i in idx} for s, idx in parts.items()}
        name = f"{dataset}_{prop}_fold{k}"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"{name}.json", json.dumps(body))
        (out / f"{name}.json.zip").write_bytes(buf.getvalue())
        written.append(out / f"{name}.json.zip")
    return written
