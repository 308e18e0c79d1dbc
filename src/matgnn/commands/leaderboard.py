"""JARVIS-Leaderboard contributions from a run folder, and benchmark definitions in its layout.

A leaderboard benchmark is a split file ``<dataset>_<property>.json.zip`` holding
``{"train": {id: value}, "val": {...}, "test": {...}}`` (the files under
``jarvis_leaderboard/benchmarks/AI/SinglePropertyPrediction/`` of the ``jarvis-leaderboard``
package; ``split: {kind: ids, ids_file: ...}`` trains on one). A contribution is a folder per model
holding ``AI-SinglePropertyPrediction-<property>-<dataset>-test-mae.csv.zip`` (one CSV of the same
name, ``id,prediction`` for every test id), ``metadata.json`` (model, team, e-mail, URLs, software,
hardware, ``time_taken_seconds`` per ``.csv.zip``) and ``run.sh``, which reproduces every benchmark of the
folder from a clean machine with the configs under ``configs/``.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shlex
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
           email: str = "", project_url: str = "", partial: bool = False, git_url: str | None = None
           ) -> tuple[Path, dict[str, Any]]:
    """Write (or add to) the contribution folder ``<out>/<model_name>/`` for a run trained on a leaderboard
    split; returns it. Every test id of the benchmark must have a prediction (``partial``: write what there
    is and say so in ``metadata.json``). ``email`` (with an ``@``) and ``project_url`` are required: the
    leaderboard's ``check_metadata_info_exists`` refuses a contribution without them. Several properties go
    into one folder: each adds its ``.csv.zip``, its entry of ``time_taken_seconds`` and its config under
    ``configs/``, and ``run.sh`` reproduces all of them. ``git_url``: where matgnn's source is installed from
    (default ``project_url``)."""
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
    if "@" not in email:
        raise UserError("--email: metadata.json needs the author's e-mail address (the leaderboard's "
                        "check_metadata_info_exists refuses a contribution without an '@' in author_email)")
    if not project_url.startswith(("https://", "http://")):
        raise UserError("--project-url: metadata.json needs the URL of the project (a paper or the code, "
                        "https://...); run.sh installs matgnn from --git-url (default: this URL)")
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
    meta = _merged_metadata(folder, model_name, team, email, project_url, git_url or project_url, cfg, metrics,
                            f"{name}.zip", __version__)
    if missing:
        meta.setdefault("note", {})[f"{name}.zip"] = (
            f"partial: predictions for {len(rows)} of the {len(wanted)} test ids (the others had no structure in "
            "the training source)")
    (folder / "metadata.json").write_text(json.dumps(meta, indent=4))
    configs = folder / "configs"
    configs.mkdir(exist_ok=True)
    portable_config(cfg, split_file.name, name).to_yaml(configs / f"{name[:-len('.csv')]}.yaml")
    write_run_sh(folder, model_name, meta, git_url or project_url)
    return folder, {"file": str(folder / f"{name}.zip"), "n_predicted": len(rows), "n_test": len(wanted),
                    "mae": mae, "run_test_mae": metrics.get(f"test.{head}.mae")}


#: where the leaderboard repository keeps its benchmark split files, seen from a contribution folder
#: (``jarvis_leaderboard/contributions/<model>/``)
BENCHMARKS_FROM_CONTRIBUTION = "../../benchmarks/AI/SinglePropertyPrediction"


def _merged_metadata(folder: Path, model_name: str, team: str | None, email: str, project_url: str, git_url: str,
                     cfg, metrics: dict, csv_zip: str, version: str) -> dict[str, Any]:  # noqa: ANN001
    """``metadata.json`` in the types of the leaderboard's ~400 contributions, merged with the one already in
    the folder: ``time_taken_seconds`` maps each ``.csv.zip`` to its training seconds, so a second property
    adds to it instead of replacing it."""
    old: dict[str, Any] = {}
    if (folder / "metadata.json").is_file():
        try:
            old = json.loads((folder / "metadata.json").read_text())
        except (OSError, ValueError):
            raise UserError(f"{folder / 'metadata.json'}: unreadable; remove it or export into another --out") from None
        if not isinstance(old, dict):
            old = {}
    times = old.get("time_taken_seconds") if isinstance(old.get("time_taken_seconds"), dict) else {}
    times = {**times, csv_zip: round(float(metrics.get("train_seconds", 0.0)), 2)}
    urls = [u for u in (old.get("git_url") or []) if isinstance(u, str)]
    hardware = str(metrics.get("device", "unknown"))
    return {**old, "model_name": model_name, "project_url": project_url, "date_submitted": time.strftime("%m-%d-%Y"),
            "author_email": email, "database_version": _database_version(cfg), "team_name": team or model_name,
            "time_taken_seconds": dict(sorted(times.items())), "language": "python",
            "os": platform.system().lower(),
            "software_used": f"matgnn {version},torch,torch_geometric,vesin,ase,pymatgen,jarvis-tools",
            "hardware_used": hardware, "git_url": urls + [git_url] if git_url not in urls else urls}


def portable_config(cfg, split_name: str, csv_name: str):  # noqa: ANN001, ANN201
    """The run's config with no path of this machine: the split file as the leaderboard repository holds it
    (relative to the contribution folder), JARVIS data from jarvis-tools' own download, a local source under
    ``data/``, runs under ``runs/<benchmark>``."""
    source = cfg.source
    if getattr(source, "kind", None) == "jarvis":
        source = source.model_copy(update={"store_dir": None})
    elif getattr(source, "path", None):
        source = source.model_copy(update={"path": f"data/{Path(str(source.path)).name}"})
    return cfg.model_copy(update={
        "source": source, "cache_dir": None,
        "split": cfg.split.model_copy(update={"ids_file": f"{BENCHMARKS_FROM_CONTRIBUTION}/{split_name}"}),
        "output_dir": f"runs/{csv_name[:-len('.csv')]}", "name": None})


def write_run_sh(folder: Path, model_name: str, meta: dict[str, Any], git_url: str) -> Path:
    """``run.sh`` reproducing every benchmark of the contribution from a clean machine, run from the
    contribution folder inside the leaderboard repository: matgnn installed from its source at the recorded
    commit, then per config in ``configs/`` one training run and its export into this folder. Every value is
    quoted for the shell; no path of this machine appears."""
    from matgnn.version import source_commit

    commit = source_commit()
    pin = commit.split("+")[0] if commit else None
    q = shlex.quote
    lines = ["#!/bin/sh",
             "# Reproduce this JARVIS-Leaderboard contribution from a clean machine. Run it from this folder inside",
             "# the jarvis_leaderboard repository (the split files are read from " + BENCHMARKS_FROM_CONTRIBUTION + ").",
             f"# matgnn from its source{' at commit ' + pin if pin else ' (commit unknown: the default branch)'};"
             " PyTorch's CPU build (choose the CUDA one for a GPU).",
             "set -e", 'cd "$(dirname "$0")"', "python3 -m venv .venv", ". .venv/bin/activate",
             "pip install 'torch==2.13.0'",
             "pip install " + q(f"git+{git_url}" + (f"@{pin}" if pin else ""))]
    if commit and commit.endswith("+dirty"):
        lines.insert(4, "# (the source had uncommitted changes when this was exported)")
    for config in sorted((folder / "configs").glob("*.yaml")):
        stem = config.stem
        lines += [f"matgnn train {q('configs/' + config.name)}",
                  f"matgnn leaderboard export \"$(ls -d {q('runs/' + stem)}/*/ | tail -1)\" --out .. --name "
                  f"{q(model_name)} --team {q(str(meta.get('team_name', model_name)))} --email "
                  f"{q(str(meta.get('author_email', '')))} --project-url {q(str(meta.get('project_url', '')))}"
                  f" --git-url {q(git_url)}"]
    path = folder / "run.sh"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    stale = folder / "config.yaml"  # written by earlier versions beside run.sh, for one property only
    stale.unlink(missing_ok=True)
    return path


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
