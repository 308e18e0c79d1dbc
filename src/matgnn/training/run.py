"""A training run end to end: source → graph cache → split → train → evaluate → run folder.

The run folder holds everything needed to reproduce the result and reload the model
without this code: ``config.yaml`` (resolved), ``split.json``, ``load_report.json`` and
``skipped.csv``, ``history.csv``, ``metrics.json``, ``model/`` (``load_model``),
``predictions_<split>.csv`` (and ``..._atoms.csv`` for per-atom heads),
``per_element_<target>.csv``, plots, and ``checkpoint_last.pt`` from which an
interrupted run resumes exactly (``matgnn train --resume RUN``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from matgnn.config import RunConfig
from matgnn.data.sources import make_source
from matgnn.errors import Interrupted, UserError
from matgnn.evaluation.metrics import regression_metrics
from matgnn.evaluation.plots import learning_curve
from matgnn.evaluation.scoring import (
    evaluate_predictions,
    evaluate_split,
    predict_dataset,
)
from matgnn.graphs.batching import make_loader
from matgnn.graphs.cache import GraphCache, build_graph_cache
from matgnn.graphs.packed import PackedGraphs, StreamedGraphs
from matgnn.models import build_model, load_model, model_class
from matgnn.training import distributed, transfer
from matgnn.training import splits as splitting
from matgnn.training.targets import (
    check_targets,
    element_means,
    head_labels,
    normalization,
    residual_normalization,
    target_labels,
    train_elements,
)
from matgnn.training.trainer import (
    CHECKPOINT,
    Trainer,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    write_history,
)

#: names kept for callers of earlier versions
_labels = target_labels
__all__ = ["CHECKPOINT", "Trainer", "check_config", "element_means", "evaluate_predictions", "evaluate_split",
           "head_labels", "load_checkpoint", "make_run_dir", "make_split", "predict_dataset", "prepare_run_data",
           "train", "train_elements"]


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
    elif sp.kind == "grouped":
        parts = splitting.grouped_split([cache.meta["formula"][i] for i in labelled], sp.train, sp.val, sp.seed)
    elif sp.kind == "stratified":
        col = sp.stratify_by or cfg.targets[0].name
        if col not in labels[0]:
            raise ValueError(f"stratify_by {col!r} is not one of the run's targets")
        parts = splitting.stratified_split([float(np.nanmean(labels[i][col])) if (~np.isnan(labels[i][col])).any()
                                            else math.nan for i in labelled], sp.train, sp.val, sp.seed, sp.bins)
    else:
        parts = splitting.random_split(len(labelled), sp.train, sp.val, sp.seed)
    return {k: [labelled[i] for i in v] for k, v in parts.items()}


def make_run_dir(cfg: RunConfig) -> Path:
    """A new run folder ``<output_dir>/<name>-<time>[-k]``, created atomically: two runs
    started in the same second (or by two processes) never share one."""
    name = cfg.name or f"{cfg.model.name}-{'+'.join(h.name for h in cfg.targets)}"
    name = "".join(c if c.isalnum() or c in "+-_.=" else "_" for c in name).strip(".") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        run_dir = root / (f"{name}-{stamp}" if k == 1 else f"{name}-{stamp}-{k}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise UserError(f"{root}: could not find a free run folder name for {name}-{stamp}")


def _model_extra(cfg: RunConfig, epoch: int, train_elements: list[int] | None = None) -> dict[str, Any]:
    """Saved next to the weights so a model folder alone can featurise new structures (and
    flag predictions for elements absent from its training split)."""
    extra = {"epoch": epoch, "graphs": cfg.graphs.model_dump(), "targets": [h.model_dump() for h in cfg.targets]}
    if train_elements is not None:
        extra["train_elements"] = train_elements
    return extra


def prepare_run_data(cfg: RunConfig, run_dir: Path, console: Console, progress: bool = True,
                     resume: bool = False, write: bool = True
                     ) -> tuple[GraphCache, list[dict[str, np.ndarray]], dict[str, list[int]]]:
    """Graph cache (built or reused), load report, labels and the split (made and saved in
    ``split.json``, or with ``resume`` read back from it) of a run folder. ``write=False``
    (ranks other than 0 of a distributed run) writes nothing into the run folder."""
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
        if any(missing.values()):
            raise ValueError(f"{run_dir / 'split.json'}: {sum(missing.values())} ids are not in the graph cache "
                             "(did the source change?)")
    else:
        split = make_split(cfg, cache, labels, labelled, console)
        if write:
            (run_dir / "split.json").write_text(json.dumps(
                {k: [cache.ids[i] for i in v] for k, v in split.items()} | {"config": cfg.split.model_dump(mode="json")}))
    if cfg.split.bootstrap is not None:  # a bootstrap member: the training split resampled with replacement
        rng = np.random.default_rng(cfg.split.bootstrap)
        split["train"] = [split["train"][i] for i in rng.integers(0, len(split["train"]), len(split["train"]))]
        console.print(f"bootstrap resample of the training split (seed {cfg.split.bootstrap}): "
                      f"{len(set(split['train']))} distinct structures")
    console.print(f"split ({cfg.split.kind}): {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test")
    if not split["train"]:
        raise UserError(f"the training split is empty ({len(labelled)} labelled structures; split {cfg.split.kind})")
    if not split["val"]:
        console.print("[yellow]warning:[/yellow] the validation split is empty: early stopping, the LR schedule and "
                      "the best weights follow the training loss; history.csv's validation columns stay empty")
    if not split["test"]:
        console.print("[yellow]warning:[/yellow] the test split is empty: the run reports no test metrics")

    return cache, labels, split


def _describe_device(device: torch.device) -> str:
    """Where a run trained, for its metrics and model card: the GPU's name, or CPU threads."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    policy = os.environ.get("OMP_WAIT_POLICY")
    return (f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores"
            + (f", OMP_WAIT_POLICY={policy}" if policy else "") + ")")


def _device(cfg: RunConfig) -> bool:
    """Whether the run trains on CUDA."""
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but torch sees no CUDA device")
    return cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())


def train(cfg: RunConfig, console: Console | None = None, progress: bool = True, resume: str | Path | None = None,
          on_epoch_end: Callable[[Trainer], None] | None = None) -> Path:
    """Run ``cfg`` end to end; returns the run folder. ``resume``: a run folder whose
    ``checkpoint_last.pt`` is continued exactly (same split, weights, optimizer,
    schedule and random state).

    Started by ``torchrun`` with several processes, it trains data-parallel (see
    :mod:`matgnn.training.distributed`); ``train.batch_size`` is then per process.
    """
    check_config(cfg)
    info = distributed.from_environment()
    device = distributed.init(info, _device(cfg))
    owns_group = info.enabled
    state: dict[str, Any] = {}
    try:
        with _sigterm_as_interrupt():
            return _train(cfg, info, device, console, progress, resume, on_epoch_end, state)
    except BaseException:
        made = state.get("created")
        if made is not None and not state.get("training"):  # failed before any epoch: leave nothing half-made
            shutil.rmtree(made, ignore_errors=True)
            (console or Console(stderr=True)).print(f"removed the unfinished run folder {made}")
        raise
    finally:
        if owns_group:
            distributed.shutdown()


def _raise_interrupt(signum, frame):  # noqa: ANN001
    raise KeyboardInterrupt


def _default_sigterm_in_child() -> None:
    """A forked child (graph-build pool, loader workers) must die on SIGTERM as usual: a
    Python-level handler cannot run while a worker blocks in C, so ``Pool.terminate`` would hang."""
    if signal.getsignal(signal.SIGTERM) is _raise_interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_default_sigterm_in_child)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's kill, ``timeout``) handled like Ctrl-C while training."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def check_config(cfg: RunConfig) -> None:
    """Settings that can be checked before any work (split settings, models and files named):
    a :class:`UserError` naming the setting, raised before a run folder exists. (The model's name
    and settings were checked when the config was read: each model's own config class.)"""
    if cfg.transfer.from_model and cfg.delta.base_model:
        raise UserError("transfer.from_model and delta.base_model cannot be combined in one run")
    for spec in (cfg.transfer.from_model, cfg.delta.base_model):
        if spec:
            transfer.model_dir(spec)  # a missing model is a FileNotFoundError naming it
    sp = cfg.split
    if sp.kind == "ids":
        if not sp.ids_file:
            raise UserError("split.kind 'ids' needs split.ids_file (a JSON/zip file of ids per split)")
        if not Path(sp.ids_file).is_file():
            raise UserError(f"split.ids_file {sp.ids_file}: no such file")
    if sp.kind == "kfold" and sp.fold >= sp.folds:
        raise UserError(f"split.fold {sp.fold} is not one of the {sp.folds} folds (0..{sp.folds - 1})")
    if sp.kind in ("random", "grouped", "stratified") and sp.train + sp.val >= 1.0 + 1e-9:
        raise UserError(f"split.train ({sp.train}) + split.val ({sp.val}) must leave something for test")
    if sp.kind == "stratified" and sp.stratify_by and sp.stratify_by not in [h.name for h in cfg.targets]:
        raise UserError(f"split.stratify_by {sp.stratify_by!r} is not one of the run's targets "
                        f"{[h.name for h in cfg.targets]}")
    names = [h.name for h in cfg.targets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"targets: {dup} listed twice")


def _train(cfg: RunConfig, info: distributed.DistInfo, device: torch.device, console: Console | None,
           progress: bool, resume: str | Path | None, on_epoch_end: Callable[[Trainer], None] | None,
           state: dict[str, Any]) -> Path:
    main = info.main
    console = console or Console(stderr=True)
    if not main:
        console = Console(stderr=True, quiet=True)
        progress = False
    t_start = time.perf_counter()
    seed_everything(cfg.train.seed)
    if cfg.transfer.from_model or cfg.delta.base_model:  # the source's graphs: its features depend on them
        from matgnn.graphs.neighbors import GraphSettings

        src_graphs = transfer.source_info(cfg.transfer.from_model or cfg.delta.base_model).get("graphs")
        if src_graphs and GraphSettings(**src_graphs) != cfg.graphs:
            console.print(f"transfer: using the source model's graph settings {src_graphs}")
            cfg = cfg.model_copy(update={"graphs": GraphSettings(**src_graphs)})
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / CHECKPOINT).is_file():
            raise FileNotFoundError(f"{run_dir} has no {CHECKPOINT} to resume from")
        console.print(f"resuming run folder: {run_dir}")
    else:
        run_dir = None
        if main:
            run_dir = make_run_dir(cfg)
            state["created"] = run_dir
            cfg.to_yaml(run_dir / "config.yaml")
        run_dir = Path(distributed.broadcast(str(run_dir) if run_dir else None))
        console.print(f"run folder: {run_dir}")
    if info.enabled:
        console.print(f"distributed: {info.world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
                      f"batch {cfg.train.batch_size} per process")

    if not main:  # rank 0 builds (or finishes) the graph cache; the others then open it
        distributed.barrier()
    cache, labels, split = prepare_run_data(cfg, run_dir, console, progress, resume=resume is not None, write=main)
    if main:
        distributed.barrier()
    split = distributed.broadcast(split)

    g_names = [h.name for h in cfg.targets if h.level == "graph"]
    n_names = [h.name for h in cfg.targets if h.level == "node"]
    in_memory = cfg.train.in_memory
    if in_memory == "auto":
        in_memory = sum(cache.meta["n_edges"][i] for i in split["train"]) < 20_000_000
    gen = torch.Generator().manual_seed(cfg.train.seed)
    tc = cfg.train
    # whole splits as flat tensors in RAM, or read from the LMDB cache one batch at a time
    graphs = {k: (PackedGraphs if in_memory else StreamedGraphs)(cache, v, g_names, n_names) for k, v in split.items()}
    console.print("graphs " + ("held in RAM" if in_memory else "streamed from the LMDB cache")
                  + (f"; batches of ~{tc.batch_budget or 'batch_size × mean'} {tc.batch_by}" if tc.batch_by != "graphs" else ""))
    shape = {"batch_by": tc.batch_by, "budget": tc.batch_budget, "workers": 0 if in_memory else tc.loader_workers}
    loaders = {"train": make_loader(graphs["train"], tc.batch_size, shuffle=True, generator=gen,
                                    rank=info.rank, world=info.world, **shape)}
    for k in ("val", "test"):  # per-epoch validation: each rank scores its share, sums reduced
        loaders[k] = (make_loader(graphs[k], tc.batch_size, rank=info.rank, world=info.world, pad=False, **shape)
                      if len(graphs[k]) else None)

    heads = [{"name": h.name, "level": h.level, "transform": h.transform, "baseline": h.baseline} for h in cfg.targets]
    m = cfg.model
    transfer_info: dict[str, Any] | None = None
    if cfg.transfer.from_model:  # the source's architecture (a PNA keeps its degree histogram)
        model, transfer_info = transfer.transferred_model(cfg.transfer.from_model, heads, cfg.transfer.keep_heads)
        console.print(f"transfer from {transfer_info['source']} ({transfer_info['class']}): "
                      f"{len(transfer_info['loaded'])} tensors loaded, {len(transfer_info['new'])} new")
    else:
        stats = model_class(m.name).training_statistics(cache.record(k) for k in split["train"])
        model = build_model(m, heads, cutoff=cfg.graphs.cutoff, **stats)
    base = None
    if cfg.delta.base_model:
        base = load_model(transfer.model_dir(cfg.delta.base_model))
        base_heads = {(s["name"], s["level"]) for s in base.head_specs}
        missing = [h.name for h in cfg.targets if (h.name, h.level) not in base_heads]
        if missing:
            raise ValueError(f"delta learning: the base model {cfg.delta.base_model} has no head for {missing}")
        mean, std = residual_normalization(base, make_loader(graphs["train"], tc.batch_size), cfg.targets)
        baseline = None
        console.print(f"delta learning on the residuals of {cfg.delta.base_model}")
    else:
        mean, std, baseline = normalization(labels, split["train"], cfg.targets)
    model.set_normalization(mean, std, baseline)
    frozen = transfer.freeze(model, cfg.transfer.freeze)
    if frozen:
        console.print(f"frozen layer groups: {', '.join(frozen)}")
    initial = transfer.snapshot(model) if transfer_info is not None else None
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"model {m.name if transfer_info is None else transfer_info['class']}: {n_params:,} parameters")
    console.print(f"device: {_describe_device(device)}" + (" (bf16 autocast)" if cfg.train.amp and device.type == "cuda" else ""))
    trainer = Trainer(model, cfg.targets, cfg.train, len(loaders["train"]), console, device, base=base)
    if resume is not None:
        trainer.load_state_dict(load_checkpoint(run_dir / CHECKPOINT, device), gen)
        console.print(f"continuing after epoch {trainer.epoch}")

    writer = None
    if cfg.train.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))

    saved: dict[str, Any] = {"at": time.perf_counter(), "best_written": None, "unwritten": None}

    def end_of_epoch(tr: Trainer) -> None:
        state["training"] = True  # an epoch finished: the run folder is worth keeping
        if main:
            _end_of_epoch_writes(tr, cfg, run_dir, writer, saved, gen)
        if on_epoch_end is not None:
            on_epoch_end(tr)

    t0 = time.perf_counter()
    try:
        history = trainer.fit(loaders["train"], loaders["val"], on_epoch_end=end_of_epoch)
    except KeyboardInterrupt:
        pending = saved["unwritten"]
        if main and pending is not None:  # the last finished epoch, not yet on disk
            save_checkpoint(pending, run_dir / CHECKPOINT)
            write_history(pending["history"], run_dir / "history.csv")
        if main and (run_dir / CHECKPOINT).is_file():
            done = load_checkpoint(run_dir / CHECKPOINT)["epoch"]
            raise Interrupted(f"interrupted during epoch {done + 1}; the checkpoint after epoch {done} is in "
                              f"{run_dir / CHECKPOINT}; continue with: matgnn train --resume {run_dir}") from None
        raise Interrupted("interrupted before the first epoch finished: nothing to resume") from None
    finally:
        if writer is not None:
            writer.flush()
    train_seconds = time.perf_counter() - t0
    if not main:
        distributed.barrier()  # wait for rank 0's evaluation and writes
        return run_dir
    best_epoch = trainer.best_epoch
    seen_z = train_elements(cache, split["train"])
    if base is not None:  # the run's model is base + delta; the base alone is scored too
        from matgnn.models.delta import DeltaModel

        delta_only = model
        model = DeltaModel.of(base.cpu(), model.cpu()).to(device)
        delta_only.save(run_dir / "delta_model", extra=_model_extra(cfg, best_epoch, seen_z))
        from matgnn.artifacts import fingerprint

        base_dir = transfer.model_dir(cfg.delta.base_model)
        (run_dir / "delta.json").write_text(json.dumps(
            {"base_model": cfg.delta.base_model, "base_dir": str(base_dir), "base_sha256": fingerprint(base_dir)},
            indent=1))
    model.save(run_dir / "model", extra=_model_extra(cfg, best_epoch, seen_z))
    if writer is not None:
        writer.close()
    learning_curve(history, run_dir / "learning_curve.png")

    metrics: dict[str, Any] = {"n_parameters": n_params, "train_seconds": train_seconds,
                               "epochs_run": len(history), "best_epoch": best_epoch,
                               "train_structures_per_s": len(split["train"]) * len(history) / max(
                                   sum(h["seconds"] for h in history), 1e-9),
                               "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
                               "n_skipped": len(cache.report.skipped), "world_size": info.world,
                               "device": _describe_device(device)}
    if transfer_info is not None:  # which parts moved: ‖Δw‖/‖w‖ per layer group
        shift = transfer.weight_shift(initial, model)
        metrics.update({f"transfer.weight_shift.{g}": v for g, v in shift.items()})
        (run_dir / "transfer.json").write_text(json.dumps(
            {**transfer_info, "freeze": cfg.transfer.freeze, "frozen_groups": frozen, "weight_shift": shift,
             "keep_heads": cfg.transfer.keep_heads}, indent=1))
    for k in ("val", "test"):
        if base is not None and len(graphs[k]):
            res = predict_dataset(base, make_loader(graphs[k], tc.batch_size, **shape))
            for h in cfg.targets:
                metrics.update({f"base.{k}.{h.name}.{key}": v for key, v in
                                regression_metrics(res["heads"][h.name]["true"], res["heads"][h.name]["pred"]).items()})
    for k in ("val", "test"):
        if len(graphs[k]):  # the final evaluation sees every graph once, on rank 0
            loader = make_loader(graphs[k], tc.batch_size, **shape)
            metrics.update(evaluate_split(model, loader, cfg.targets, run_dir, k, evaluation=cfg.evaluation))
    metrics["wall_seconds"] = time.perf_counter() - t_start
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    for h in cfg.targets:
        key = f"test.{h.name}.mae"
        if key in metrics:
            console.print(f"test {h.name}: MAE {metrics[key]:.4g}, RMSE {metrics[f'test.{h.name}.rmse']:.4g}, "
                          f"R² {metrics[f'test.{h.name}.r2']:.3f} (n={metrics[f'test.{h.name}.count']})")
    console.print(f"done in {metrics['wall_seconds']:.0f} s → {run_dir}")
    distributed.barrier()
    return run_dir


def _end_of_epoch_writes(tr: Trainer, cfg: RunConfig, run_dir: Path, writer, saved: dict[str, Any],
                         gen: torch.Generator) -> None:
    """TensorBoard scalars every epoch; checkpoint, history and best model every
    ``train.checkpoint_every`` seconds and after the last epoch (rank 0 only)."""
    last = tr.history[-1]
    if writer is not None:
        for key, value in last.items():
            if key not in ("epoch", "seconds"):
                writer.add_scalar(key.replace(".", "/"), value, last["epoch"])
    final = tr.epoch >= cfg.train.epochs or tr.stale >= cfg.train.patience
    if not (final or time.perf_counter() - saved["at"] >= cfg.train.checkpoint_every):
        # kept in memory (assigned only once complete): an interrupt (Ctrl-C, SIGTERM) before the
        # next write saves this epoch
        saved["unwritten"] = copy.deepcopy(tr.state_dict(gen))
    else:
        # the last state (to resume), the log so far, and the best weights so far
        save_checkpoint(tr.state_dict(gen), run_dir / CHECKPOINT)
        saved["unwritten"] = None
        write_history(tr.history, run_dir / "history.csv")
        if writer is not None:
            writer.flush()
        # (after the last epoch, train() itself saves the best model once fit() has loaded it)
        if not final and tr.best_epoch != saved["best_written"] and tr.best_state is not None:
            best = copy.deepcopy(tr.model)
            best.load_state_dict(tr.best_state)
            best.save(run_dir / "model", extra=_model_extra(cfg, tr.best_epoch))
            saved["best_written"] = tr.best_epoch
        saved["at"] = time.perf_counter()
