"""Train/validation/test splits, saved with every run (as structure ids)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def random_split(n: int, train: float, val: float, seed: int) -> dict[str, list[int]]:
    """Seeded random split of ``range(n)``; test gets the rest."""
    if train + val >= 1.0 + 1e-9:
        raise ValueError(f"train ({train}) + val ({val}) must leave something for test")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(train * n))
    n_val = int(round(val * n))
    return {"train": sorted(perm[:n_train].tolist()), "val": sorted(perm[n_train:n_train + n_val].tolist()),
            "test": sorted(perm[n_train + n_val:].tolist())}


def kfold_split(n: int, folds: int, fold: int, val: float, seed: int) -> dict[str, list[int]]:
    """Fold ``fold`` of a seeded ``folds``-fold split: that fold is the test set; ``val``
    (a fraction of all entries) is drawn from the others for early stopping."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, not {fold}")
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, folds)
    test = parts[fold]
    rest = np.concatenate([p for k, p in enumerate(parts) if k != fold])
    n_val = int(round(val * n))
    return {"train": sorted(rest[n_val:].tolist()), "val": sorted(rest[:n_val].tolist()), "test": sorted(test.tolist())}


def grouped_split(groups: Sequence[str], train: float, val: float, seed: int) -> dict[str, list[int]]:
    """Split whole groups (e.g. reduced formulas): no group appears in two splits.
    Groups are shuffled and assigned in turn until each split holds its share of entries."""
    order: dict[str, list[int]] = {}
    for k, g in enumerate(groups):
        order.setdefault(g, []).append(k)
    names = list(order)
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    n = len(groups)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for g in names:
        if len(out["train"]) < train * n:
            out["train"].extend(order[g])
        elif len(out["val"]) < val * n:
            out["val"].extend(order[g])
        else:
            out["test"].extend(order[g])
    return {k: sorted(v) for k, v in out.items()}


def grouped_kfold_split(groups: Sequence[Any], folds: int, fold: int, val: float, seed: int) -> dict[str, list[int]]:
    """Fold ``fold`` of a ``folds``-fold split over whole groups: no group appears in two splits. Groups
    (shuffled by ``seed``, then largest first) each go to the fold holding the fewest entries so far;
    validation (``val``, a fraction of all entries) is whole groups drawn from the other folds."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, not {fold}")
    order: dict[Any, list[int]] = {}
    for k, g in enumerate(groups):
        order.setdefault(g, []).append(k)
    if len(order) < folds:
        raise ValueError(f"{len(order)} groups cannot make {folds} folds")
    names = list(order)
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    names.sort(key=lambda g: -len(order[g]))  # stable: equal sizes keep the seeded order
    members: list[list[Any]] = [[] for _ in range(folds)]
    size = [0] * folds
    for g in names:
        k = int(np.argmin(size))
        members[k].append(g)
        size[k] += len(order[g])
    rest = [g for k in range(folds) if k != fold for g in members[k]]
    rng.shuffle(rest)
    n_val = int(round(val * len(groups)))
    out: dict[str, list[int]] = {"train": [], "val": [], "test": [i for g in members[fold] for i in order[g]]}
    for g in rest:
        out["val" if len(out["val"]) < n_val else "train"].extend(order[g])
    return {k: sorted(v) for k, v in out.items()}


def stratified_split(values: Sequence[float], train: float, val: float, seed: int, bins: int = 10) -> dict[str, list[int]]:
    """Random split within quantile bins of ``values`` (a target or any numeric column),
    so each split covers its range alike. NaN values form a bin of their own."""
    v = np.asarray(values, float)
    labels = np.full(len(v), -1)
    ok = ~np.isnan(v)
    if ok.any():
        edges = np.unique(np.quantile(v[ok], np.linspace(0, 1, bins + 1)[1:-1]))
        labels[ok] = np.searchsorted(edges, v[ok], side="right")
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for b in np.unique(labels):
        idx = np.flatnonzero(labels == b)
        part = random_split(len(idx), train, val, seed + int(b) + 1)
        for k in out:
            out[k].extend(idx[part[k]].tolist())
    return {k: sorted(v) for k, v in out.items()}


def read_split_json(path: str | Path) -> Any:
    """The JSON of a split file, or of the one JSON inside a zip (the JARVIS leaderboard's layout)."""
    path = Path(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith(".json"))
            return json.loads(z.read(name))
    return json.loads(path.read_text())


def read_id_split(path: str | Path) -> dict[str, list[str]]:
    """Ids per split from a JSON file (or a zip holding one): ``{"train": [...] | {id: value},
    "val": ..., "test": ...}``, the layout of the JARVIS leaderboard's split files."""
    raw = read_split_json(path)
    out = {}
    for k in ("train", "val", "test"):
        v = raw.get(k, [])
        out[k] = [str(x) for x in (v.keys() if isinstance(v, dict) else v)]
    return out


def ids_split(ids: Sequence[str], split_ids: dict[str, list[str]]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Positions of the split file's ids among ``ids``; also how many ids of each split
    have no structure here (reported, not silently dropped)."""
    where = {sid: k for k, sid in enumerate(ids)}
    out, missing = {}, {}
    for k, lst in split_ids.items():
        out[k] = sorted(where[s] for s in lst if s in where)
        missing[k] = sum(s not in where for s in lst)
    return out, missing
