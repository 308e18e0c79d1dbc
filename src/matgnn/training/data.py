"""A run's data: the graph cache (built or reused) with its load report, every graph's labels,
the split (made and saved in ``split.json``, or read back from it on resume) and the loaders of
the split's graphs (held in RAM or streamed from LMDB, for one process or one rank)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from matgnn.config import RunConfig, batch_targets
from matgnn.data.sources import make_source
from matgnn.errors import UserError
from matgnn.graphs.batching import GraphLoader, make_loader
from matgnn.graphs.cache import GraphCache, build_graph_cache
from matgnn.graphs.packed import PackedGraphs, StreamedGraphs, check_extras
from matgnn.training import splits as splitting
from matgnn.training.targets import check_targets, target_labels


def make_split(cfg: RunConfig, cache: GraphCache, labels: list[dict[str, np.ndarray]], labelled: list[int],
               console: Console) -> dict[str, list[int]]:
    """Cache positions of train/val/test under ``cfg.split`` (over labelled graphs)."""
    sp = cfg.split
    if sp.kind == "ids":
        if not sp.ids_file:
            raise ValueError("split kind 'ids' needs split.ids_file")
        ids = [cache.ids[i] for i in labelled]
        parts, missing = splitting.ids_split(ids, splitting.read_id_split(sp.ids_file))
        if any(missing.values()):
            console.print(f"split file {sp.ids_file}: ids without a (usable, labelled) structure here, left out: "
                          + ", ".join(f"{k} {v}" for k, v in missing.items()))
        if not parts["val"] and sp.val > 0 and len(parts["train"]) > 1:
            # public folds often give train/test only: validation is carved from the training ids alone
            # (seeded, split.val of them), never from the test ids
            rng = np.random.default_rng(sp.seed)
            order = rng.permutation(parts["train"])
            n_val = max(1, int(round(sp.val * len(order))))
            parts = {"train": sorted(order[n_val:].tolist()), "val": sorted(order[:n_val].tolist()),
                     "test": parts["test"]}
            console.print(f"split file {sp.ids_file} has no validation ids: {n_val} of its training ids "
                          f"(split.val = {sp.val}, seed {sp.seed}) are the validation split")
    elif sp.kind == "kfold":
        parts = splitting.kfold_split(len(labelled), sp.folds, sp.fold, sp.val, sp.seed)
    elif sp.kind in ("grouped", "grouped_kfold"):
        groups = split_groups(cache, labelled, sp.group_by, console)
        try:
            parts = (splitting.grouped_split(groups, sp.train, sp.val, sp.seed) if sp.kind == "grouped" else
                     splitting.grouped_kfold_split(groups, sp.folds, sp.fold, sp.val, sp.seed))
        except ValueError as e:
            raise UserError(f"split {sp.kind} by {sp.group_by}: {e}") from None
    elif sp.kind == "stratified":
        col = sp.stratify_by or cfg.targets[0].name
        if col not in labels[0]:
            raise ValueError(f"stratify_by {col!r} is not one of the run's targets")
        parts = splitting.stratified_split([float(np.nanmean(labels[i][col])) if (~np.isnan(labels[i][col])).any()
                                            else math.nan for i in labelled], sp.train, sp.val, sp.seed, sp.bins)
    else:
        parts = splitting.random_split(len(labelled), sp.train, sp.val, sp.seed)
    return {k: [labelled[i] for i in v] for k, v in parts.items()}


def split_groups(cache: GraphCache, labelled: list[int], group_by: str, console: Console) -> list:
    """The group of each labelled graph: its reduced formula, or (``structure``) its set of structural
    twins (:func:`matgnn.data.twins.twin_groups`), with a line saying how many entries have a twin. The
    twins of the whole cache are found once and kept beside it (``twins.json``; an unwritable cache folder
    only costs the search again, and says so)."""
    if group_by == "formula":
        return [cache.meta["formula"][i] for i in labelled]
    from matgnn.artifacts import write_atomic
    from matgnn.data.twins import SLAB_VACUUM, TOLERANCES, twin_groups, twin_summary

    kept = cache.path / "twins.json"
    rule = {"tolerances": TOLERANCES, "slab_vacuum": SLAB_VACUUM}
    groups = None
    if kept.is_file():  # found under another rule (or for another cache): searched again
        try:
            saved = json.loads(kept.read_text())
            groups = saved["groups"] if saved.get("rule") == rule and len(saved["groups"]) == len(cache) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            groups = None
    if groups is None:
        def structure(k: int) -> tuple:
            rec = cache.record(k)
            return rec["z"], rec["pos"], rec["cell"]

        groups = twin_groups(cache.meta["formula"], structure, progress=console.print)
        try:
            write_atomic(kept, json.dumps({"rule": rule, "groups": groups}).encode())
        except OSError as e:
            console.print(f"twin groups not kept beside the graph cache ({kept}: {e.strerror or e}); "
                          "the next run searches again")
    mine = [groups[i] for i in labelled]
    twinned, sets = twin_summary(mine)
    console.print(f"split by structure: {twinned} of {len(labelled)} structures have a structural twin "
                  f"({sets} sets), each set kept in one split")
    return mine


#: the run folder's record of the data a run trained on (checked by ``--resume``)
FINGERPRINT_FILE = "data_fingerprint.json"
#: resumes that went on with changed data (``--allow-changed-data``), one entry each
CHANGED_DATA_FILE = "data_changes.json"


def _label_digest(values: dict[str, np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(values):
        h.update(name.encode())
        h.update(np.ascontiguousarray(values[name], np.float32).tobytes())
    return h.hexdigest()[:12]


def data_fingerprint(cache: GraphCache, labels: list[dict[str, np.ndarray]], split: dict[str, list[int]]) -> dict:
    """What a run trains on: the source's content fingerprint (its structures and labels; the graph cache
    recorded it when it was built, so the source is not read again) and a digest of every split structure's
    labels by id (so a change can be said: which labels, how many)."""
    return {"source": cache.meta["source_fingerprint"],
            "labels": {part: {cache.ids[i]: _label_digest(labels[i]) for i in idx} for part, idx in split.items()}}


def check_same_data(run_dir: Path, now: dict, allow_changed: bool, console: Console) -> None:
    """On resume: the data must be the ones the run started on (:func:`data_fingerprint`). A change is a
    :class:`UserError` saying what changed, unless ``allow_changed`` (then recorded in the run folder)."""
    path = run_dir / FINGERPRINT_FILE
    if not path.is_file():
        console.print(f"{run_dir} records no data fingerprint (written by an earlier version): the data cannot be "
                      "checked against the run's")
        return
    try:
        saved = json.loads(path.read_text())
        old_labels = {p: dict(v) for p, v in saved["labels"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: unreadable; the data cannot be checked against the run's") from None
    changes = []
    for part in ("train", "val", "test"):
        old, new = old_labels.get(part, {}), now["labels"].get(part, {})
        differ = [k for k in old if k in new and old[k] != new[k]]
        if differ:
            changes.append(f"labels of {len(differ)} of {len(old)} {part} structures (e.g. {differ[0]})")
        gone = len(set(old) - set(new))
        if gone:
            changes.append(f"{gone} {part} structures missing")
    if not changes and saved.get("source") != now["source"]:
        changes.append("the source's content (structures or entries outside the split)")
    if not changes:
        return
    what = "; ".join(changes)
    if not allow_changed:
        raise UserError(f"{run_dir}: the data changed since the run started: {what}. Resuming would train on "
                        "other data than its checkpoint; start a new run, or continue anyway with "
                        "--allow-changed-data (recorded in the run folder)")
    import time

    log = run_dir / CHANGED_DATA_FILE
    try:
        entries = json.loads(log.read_text()) if log.is_file() else []
    except (OSError, ValueError):
        entries = []
    entries.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changed": changes, "allowed_by": "--allow-changed-data"})
    log.write_text(json.dumps(entries, indent=1))
    path.write_text(json.dumps(now))
    console.print(f"warning: resuming with changed data ({what}); recorded in {log}")


def prepare_run_data(cfg: RunConfig, run_dir: Path, console: Console, progress: bool = True,
                     resume: bool = False, write: bool = True, allow_changed_data: bool = False
                     ) -> tuple[GraphCache, list[dict[str, np.ndarray]], dict[str, list[int]]]:
    """Graph cache (built or reused), load report, labels and the split (made and saved in
    ``split.json``, or with ``resume`` read back from it) of a run folder. ``write=False``
    (ranks other than 0 of a distributed run) writes nothing into the run folder. The data's
    fingerprint is saved beside the checkpoint (``data_fingerprint.json``); on ``resume`` changed
    data are refused unless ``allow_changed_data``."""
    source = make_source(cfg.source)
    cache = build_graph_cache(source, cfg.graphs, cache_root=cfg.cache_dir, workers=cfg.workers,
                              on_invalid=cfg.on_invalid, progress=progress)
    stats = cache.build_stats
    console.print(f"graph cache: {cache.path} ({'reused' if stats and stats.built == 0 else f'built {stats.built} graphs in {stats.seconds:.1f} s'})")
    report = cache.report
    report.print(console)
    if write:
        report.save(run_dir)
    cache.check_unique_ids()
    check_targets(cache, cfg.targets)

    labels = target_labels(cache, cfg.targets)
    labelled = [i for i, d in enumerate(labels) if any((~np.isnan(v)).any() for v in d.values())]
    if len(labelled) < len(cache):
        keep = set(labelled)
        console.print(f"{len(cache) - len(labelled)} structures carry none of the targets "
                      f"{[h.name for h in cfg.targets]} and are left out (listed in unlabelled.txt)")
        if write:
            (run_dir / "unlabelled.txt").write_text("\n".join(cache.ids[i] for i in range(len(cache)) if i not in keep) + "\n")
    if resume:
        saved = json.loads((run_dir / "split.json").read_text())
        split, missing = splitting.ids_split(cache.ids, {k: saved[k] for k in ("train", "val", "test")})
        if any(missing.values()) and not allow_changed_data:
            raise UserError(f"{run_dir}: the data changed since the run started: "
                            + "; ".join(f"{v} {k} structures missing" for k, v in missing.items() if v)
                            + ". Start a new run, or continue anyway with --allow-changed-data (recorded in "
                              "the run folder)")
        if write:
            check_same_data(run_dir, data_fingerprint(cache, labels, split), allow_changed_data, console)
    else:
        split = make_split(cfg, cache, labels, labelled, console)
        if write:
            (run_dir / "split.json").write_text(json.dumps(
                {k: [cache.ids[i] for i in v] for k, v in split.items()} | {"config": cfg.split.model_dump(mode="json")}))
            (run_dir / FINGERPRINT_FILE).write_text(json.dumps(data_fingerprint(cache, labels, split)))
    if cfg.split.bootstrap is not None:  # a bootstrap member: the training split resampled with replacement
        rng = np.random.default_rng(cfg.split.bootstrap)
        split["train"] = [split["train"][i] for i in rng.integers(0, len(split["train"]), len(split["train"]))]
        console.print(f"bootstrap resample of the training split (seed {cfg.split.bootstrap}): "
                      f"{len(set(split['train']))} distinct structures")
    console.print(f"split ({cfg.split.kind}): {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test")
    if not split["train"]:
        raise UserError(f"the training split is empty ({len(labelled)} labelled structures; split {cfg.split.kind})")
    if not split["val"]:
        console.print("warning: the validation split is empty: early stopping, the LR schedule and "
                      "the best weights follow the training loss; history.csv's validation columns stay empty")
    if not split["test"]:
        console.print("warning: the test split is empty: the run reports no test metrics")

    return cache, labels, split


@dataclass
class SplitGraphs:
    """Each split's graphs and the loaders the run uses (``shape``: how batches are cut)."""

    graphs: dict[str, PackedGraphs | StreamedGraphs]
    loaders: dict[str, GraphLoader | None]
    shape: dict

    def add_batch_fields(self, fields: tuple[str, ...]) -> None:
        """Have every batch carry the extra fields the run's models declare (triplets)."""
        for g in self.graphs.values():
            g.extras = check_extras([*g.extras, *fields])

    def loader(self, split: str, batch_size: int) -> GraphLoader:
        """A single-process pass over every graph of ``split`` once (final scoring)."""
        return make_loader(self.graphs[split], batch_size, **self.shape)


def split_graphs(cfg: RunConfig, cache: GraphCache, split: dict[str, list[int]], generator: torch.Generator,
                 console: Console, rank: int = 0, world: int = 1) -> SplitGraphs:
    """The split's graphs (in RAM when the training split is small enough, or ``train.in_memory``)
    and loaders: training shuffled from ``generator``; validation and test for per-epoch scoring,
    each rank scoring its share."""
    tc = cfg.train
    in_memory = tc.in_memory
    if in_memory == "auto":
        in_memory = sum(cache.meta["n_edges"][i] for i in split["train"]) < 20_000_000
    g_names, n_names = batch_targets(cfg.targets)
    graphs = {k: (PackedGraphs if in_memory else StreamedGraphs)(cache, v, g_names, n_names) for k, v in split.items()}
    console.print("graphs " + ("held in RAM" if in_memory else "streamed from the LMDB cache")
                  + (f"; batches of ~{tc.batch_budget or 'batch_size × mean'} {tc.batch_by}" if tc.batch_by != "graphs" else ""))
    shape = {"batch_by": tc.batch_by, "budget": tc.batch_budget, "workers": 0 if in_memory else tc.loader_workers}
    loaders: dict[str, GraphLoader | None] = {
        "train": make_loader(graphs["train"], tc.batch_size, shuffle=True, generator=generator, rank=rank,
                             world=world, **shape)}
    for k in ("val", "test"):
        loaders[k] = (make_loader(graphs[k], tc.batch_size, rank=rank, world=world, pad=False, **shape)
                      if len(graphs[k]) else None)
    return SplitGraphs(graphs, loaders, shape)
