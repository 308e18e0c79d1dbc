"""A training run end to end, as named stages: check the config → open the run folder → data
(graph cache, labels, split, loaders; :mod:`matgnn.training.data`) → the starting model (built,
transferred or delta; :mod:`matgnn.training.model_setup`) → fit (:class:`Trainer` with callbacks:
early stopping, checkpoints, TensorBoard) → save and score (:mod:`matgnn.training.outcome`).

The run folder (:class:`matgnn.artifacts.RunFolder`) holds everything needed to reproduce the
result and reload the model without this code, and ``checkpoint_last.pt``, from which an
interrupted run resumes exactly (``matgnn train --resume RUN``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from matgnn.artifacts import RunFolder
from matgnn.config import RunConfig
from matgnn.errors import Interrupted, UserError
from matgnn.evaluation.scoring import (
    evaluate_predictions,
    evaluate_split,
    predict_dataset,
)
from matgnn.models.base import batch_fields_of
from matgnn.runtime import keep_freed_memory, threads_beside_other_work
from matgnn.training import distributed, transfer
from matgnn.training.callbacks import (
    Callback,
    Checkpointing,
    EpochFunction,
    TensorBoard,
    TimeBudget,
)
from matgnn.training.data import make_split, prepare_run_data, split_graphs
from matgnn.training.interrupts import sigterm_as_interrupt
from matgnn.training.model_setup import RunModel, build_run_model, parent_graph_settings
from matgnn.training.outcome import describe_device, model_extra, save_models, score_run
from matgnn.training.targets import element_means, head_labels, train_elements
from matgnn.training.trainer import (
    CHECKPOINT,
    Trainer,
    amp_unavailable,
    load_checkpoint,
    seed_everything,
)

__all__ = ["CHECKPOINT", "Trainer", "check_config", "element_means", "evaluate_predictions", "evaluate_split",
           "head_labels", "load_checkpoint", "make_run_dir", "make_split", "predict_dataset", "prepare_run_data",
           "train", "train_elements"]


def make_run_dir(cfg: RunConfig) -> Path:
    """A new run folder for ``cfg`` (see :meth:`RunFolder.create`)."""
    name = cfg.name or f"{cfg.model.name}-{'+'.join(h.name for h in cfg.targets)}"
    return RunFolder.create(cfg.output_dir, name).path


def check_config(cfg: RunConfig) -> None:
    """Settings that can be checked before any work (split settings, models and files named):
    a :class:`UserError` naming the setting, raised before a run folder exists. (The model's name
    and settings were checked when the config was read: each model's own config class.)"""
    if cfg.transfer.from_model and cfg.delta.base_model:
        raise UserError("transfer.from_model and delta.base_model cannot be combined in one run")
    for spec in (cfg.transfer.from_model, cfg.delta.base_model):
        if spec:
            transfer.model_dir(spec)  # a missing model is a FileNotFoundError naming it
    if cfg.transfer.from_model:
        transfer.check_source(cfg.transfer.from_model)
    sp = cfg.split
    if sp.kind == "ids":
        if not sp.ids_file:
            raise UserError("split.kind 'ids' needs split.ids_file (a JSON/zip file of ids per split)")
        if not Path(sp.ids_file).is_file():
            raise UserError(f"split.ids_file {sp.ids_file}: no such file")
    if sp.group_by == "structure" and sp.kind not in ("grouped", "grouped_kfold"):
        raise UserError(f"split.group_by 'structure' applies to split kinds grouped and grouped_kfold, not "
                        f"{sp.kind!r}: set split.kind to grouped_kfold (k-fold) or grouped (fractions)")
    if sp.kind in ("kfold", "grouped_kfold") and sp.fold >= sp.folds:
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


def _use_cuda(cfg: RunConfig) -> bool:
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but torch sees no CUDA device")
    return cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())


def train(cfg: RunConfig, console: Console | None = None, progress: bool = True, resume: str | Path | None = None,
          on_epoch_end: Callable[[Trainer], None] | None = None, allow_changed_data: bool = False) -> Path:
    """Run ``cfg`` end to end; returns the run folder. ``resume``: a run folder whose
    ``checkpoint_last.pt`` is continued exactly (same split, weights, optimizer,
    schedule and random state) — on the same data, checked against the fingerprint the run saved, unless
    ``allow_changed_data`` (recorded in the run folder). ``on_epoch_end``: called with the trainer after every
    epoch. One process at a time trains a run folder (a lock; a second one is told who holds it).

    Started by ``torchrun`` with several processes, it trains data-parallel (see
    :mod:`matgnn.training.distributed`); ``train.batch_size`` is then per process.
    """
    check_config(cfg)
    info = distributed.from_environment()
    device = distributed.init(info, _use_cuda(cfg))
    run = _Run(cfg, info, device, console, progress, on_epoch_end, allow_changed_data)
    try:
        with sigterm_as_interrupt():
            return run.execute(resume)
    except BaseException:
        if run.created is not None and not run.trained:  # failed before any epoch: leave nothing half-made
            shutil.rmtree(run.created, ignore_errors=True)
            run.console.print(f"removed the unfinished run folder {run.created}")
        raise
    finally:
        if run.folder is not None:
            run.folder.unlock()
        if run.threads_before is not None:  # the caller's process keeps its own thread count
            torch.set_num_threads(run.threads_before)
        if info.enabled:
            distributed.shutdown()


def _rate(n_train: int, history: list[dict[str, Any]], seconds: str) -> float:
    """Training structures per second over the epochs of ``history``, timed by its column ``seconds``
    (rows of a run resumed from an older version lack ``train_pass_seconds``: their whole epoch counts)."""
    return n_train * len(history) / max(sum(h.get(seconds, h["seconds"]) for h in history), 1e-9)


class _Run(Callback):
    """One run's stages and the state they hand on. (As a callback it marks the run folder worth
    keeping once an epoch has finished.)"""

    def __init__(self, cfg: RunConfig, info: distributed.DistInfo, device: torch.device, console: Console | None,
                 progress: bool, on_epoch_end: Callable[[Trainer], None] | None, allow_changed_data: bool = False
                 ) -> None:
        self.cfg, self.info, self.device, self.user_hook = cfg, info, device, on_epoch_end
        self.main = info.main
        self.console = console or Console(stderr=True)
        self.progress = progress
        if not self.main:
            self.console, self.progress = Console(stderr=True, quiet=True), False
        self.created: Path | None = None
        self.folder: RunFolder | None = None  # locked by this process (rank 0)
        self.allow_changed_data = allow_changed_data
        self.trained = False
        self.threads_before: int | None = None  # torch's threads before this run lowered them

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.trained = True

    def execute(self, resume: str | Path | None) -> Path:
        started = time.perf_counter()
        seed_everything(self.cfg.train.seed)
        self.cfg = parent_graph_settings(self.cfg, self.console).with_learning_rate()
        if self.cfg.train.threads:
            torch.set_num_threads(self.cfg.train.threads)
        else:
            busy = threads_beside_other_work()
            if busy is not None:  # torch's threads would spin against other work: fewer, for this run only
                self.threads_before = torch.get_num_threads()
                torch.set_num_threads(busy[0])
                self.console.print(f"{busy[1]} other task(s) running on this machine: training on {busy[0]} CPU "
                                   f"thread(s) instead of {self.threads_before} (set train.threads to choose)")
        keep_freed_memory()
        folder = self.open_folder(resume)
        cache, labels, split, data, gen = self.load_data(folder, resume is not None)
        run = build_run_model(self.cfg, cache, split, labels, data, self.console)
        data.add_batch_fields(batch_fields_of(run.model, run.base))
        trainer = Trainer(run.model, self.cfg.targets, self.cfg.train, len(data.loaders["train"]), self.console,
                          self.device, base=run.base)
        self.console.print(f"device: {describe_device(self.device)}" + (" (bf16 autocast)" if trainer.amp else ""))
        if self.cfg.train.amp and not trainer.amp:
            self.console.print(f"warning: train.amp ignored: {amp_unavailable(self.device)}; "
                               "training in fp32")
        if resume is not None:
            trainer.load_state_dict(load_checkpoint(folder.checkpoint, self.device), gen)
            self.console.print(f"continuing after epoch {trainer.epoch}")
        t0 = time.perf_counter()
        self.fit(trainer, data, folder, gen)
        train_seconds = time.perf_counter() - t0
        if not self.main:
            distributed.barrier()  # wait for rank 0's evaluation and writes
            return folder.path
        self.finish(folder, run, trainer, cache, split, data, train_seconds, started)
        distributed.barrier()
        return folder.path

    def open_folder(self, resume: str | Path | None) -> RunFolder:
        """The resumed run's folder, or a new one (rank 0 creates it and saves the config)."""
        if resume is not None:
            folder = RunFolder(Path(resume))
            if not folder.checkpoint.is_file():
                raise FileNotFoundError(f"{folder.path} has no {CHECKPOINT} to resume from")
            if self.main:
                folder.lock()
                self.folder = folder
            self.console.print(f"resuming run folder: {folder.path}")
            return folder
        path = None
        if self.main:
            path = self.created = make_run_dir(self.cfg)
            self.folder = RunFolder(path)
            self.folder.lock()
            self.cfg.to_yaml(path / "config.yaml")
        folder = RunFolder(Path(distributed.broadcast(str(path) if path else None)))
        self.console.print(f"run folder: {folder.path}")
        if self.info.enabled:
            self.console.print(f"distributed: {self.info.world} processes ({'nccl' if self.device.type == 'cuda' else 'gloo'}), "
                               f"batch {self.cfg.train.batch_size} per process")
        return folder

    def load_data(self, folder: RunFolder, resume: bool):
        """Rank 0 builds (or finishes) the graph cache, the others then open it; every rank gets
        rank 0's split and its own loaders."""
        if not self.main:
            distributed.barrier()
        cache, labels, split = prepare_run_data(self.cfg, folder.path, self.console, self.progress, resume=resume,
                                                write=self.main, allow_changed_data=self.allow_changed_data)
        if self.main:
            distributed.barrier()
        split = distributed.broadcast(split)
        gen = torch.Generator().manual_seed(self.cfg.train.seed)
        data = split_graphs(self.cfg, cache, split, gen, self.console, self.info.rank, self.info.world)
        return cache, labels, split, data, gen

    def fit(self, trainer: Trainer, data, folder: RunFolder, gen: torch.Generator) -> None:
        """Train with the callbacks (rank 0 writes); an interrupt leaves the last finished epoch's
        checkpoint and says how to resume."""
        callbacks: list[Callback] = [self]
        if self.main:
            callbacks.append(Checkpointing(folder.checkpoint, folder.history, self.cfg.train.checkpoint_every, gen,
                                           lambda m, epoch: m.save(folder.model, extra=model_extra(self.cfg, epoch))))
            if self.cfg.train.tensorboard:
                callbacks.append(TensorBoard(folder.path / "tensorboard"))
        if self.user_hook is not None:
            callbacks.append(EpochFunction(self.user_hook))
        if self.cfg.train.max_minutes:
            callbacks.append(TimeBudget(self.cfg.train.max_minutes))
        try:
            trainer.fit(data.loaders["train"], data.loaders["val"], callbacks=callbacks)
        except KeyboardInterrupt:
            if self.main and folder.checkpoint.is_file():
                done = load_checkpoint(folder.checkpoint)["epoch"]
                raise Interrupted(f"interrupted during epoch {done + 1}; the checkpoint after epoch {done} is in "
                                  f"{folder.checkpoint}; continue with: matgnn train --resume {folder.path}") from None
            raise Interrupted("interrupted before the first epoch finished: nothing to resume") from None

    def finish(self, folder: RunFolder, run: RunModel, trainer: Trainer, cache, split, data, train_seconds: float,
               started: float) -> None:
        """Save the models and score them (rank 0)."""
        history = trainer.history
        model = save_models(self.cfg, folder, run, trainer.best_epoch, train_elements(cache, split["train"]),
                            self.device)
        metrics: dict[str, Any] = {
            "n_parameters": run.n_parameters, "train_seconds": train_seconds, "epochs_run": len(history),
            "best_epoch": trainer.best_epoch,
            "train_structures_per_s": _rate(len(split["train"]), history, "seconds"),
            # the training passes alone (no validation), as other tools print their epochs' training time
            "train_pass_structures_per_s": _rate(len(split["train"]), history, "train_pass_seconds"),
            "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
            "n_skipped": len(cache.report.skipped), "world_size": self.info.world,
            "device": describe_device(self.device)}
        score_run(self.cfg, folder, run, model, trainer, data, metrics, started, self.console)

