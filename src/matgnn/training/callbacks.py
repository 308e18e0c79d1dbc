"""What happens around the epochs of a :class:`~matgnn.training.trainer.Trainer`, as callbacks:
early stopping, the run folder's checkpoint / history / best-model writes, TensorBoard scalars,
and a caller's own function. The Trainer calls, in list order, ``on_fit_start`` once,
``on_epoch_end`` after every epoch (a callback may set ``trainer.stop``) and ``on_fit_end`` once
fit() has loaded the best weights; an interrupt (Ctrl-C, SIGTERM) reaches ``on_interrupt``
before it leaves ``fit``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from matgnn.models.loading import load_weights
from matgnn.training.checkpoints import save_checkpoint, write_history

if TYPE_CHECKING:
    from matgnn.training.trainer import Trainer


class Callback:
    """Does nothing; subclasses override what they need."""

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        pass

    def on_interrupt(self, trainer: Trainer) -> None:
        pass


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without improvement of the monitored loss (the validation
    loss, or the training loss when there is no validation split)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.stale >= self.patience:  # a resumed run that had stopped already
            trainer.stop = True

    def on_epoch_end(self, trainer: Trainer) -> None:
        if trainer.stale >= self.patience:
            trainer.stop = True

    def on_fit_end(self, trainer: Trainer) -> None:
        if trainer.stale >= self.patience:
            trainer.console.print(f"early stop after epoch {trainer.epoch} (no improvement for {trainer.stale} epochs)")


class TimeBudget(Callback):
    """Stop before an epoch that would overrun ``max_minutes`` (at the mean epoch time so far)."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.stopped = False

    def on_epoch_end(self, trainer: Trainer) -> None:
        mean = trainer.mean_epoch_seconds() or 0.0
        if trainer.epoch < trainer.cfg.epochs and trainer.elapsed_seconds() + mean > self.seconds:
            trainer.stop = self.stopped = True

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.stopped:
            trainer.console.print(f"time budget: stopped after epoch {trainer.epoch} of {trainer.cfg.epochs} "
                                  f"({trainer.elapsed_seconds() / 60:.1f} of {self.seconds / 60:g} minutes; "
                                  f"best epoch {trainer.best_epoch})")


class EpochFunction(Callback):
    """A plain function called with the trainer after every epoch (the API's ``on_epoch_end``)."""

    def __init__(self, fn: Callable[[Trainer], None]) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.fn(trainer)


class TensorBoard(Callback):
    """Every epoch's history row as TensorBoard scalars in ``folder``."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def on_epoch_end(self, trainer: Trainer) -> None:
        last = trainer.history[-1]
        for key, value in last.items():
            if key not in ("epoch", "seconds", "train_pass_seconds"):
                self.writer.add_scalar(key.replace(".", "/"), value, last["epoch"])
        self.writer.flush()  # on disk every epoch, whatever ends the run later

    def on_fit_end(self, trainer: Trainer) -> None:
        self.writer.close()

    def on_interrupt(self, trainer: Trainer) -> None:
        self.writer.flush()


class Checkpointing(Callback):
    """``checkpoint_last.pt`` (to resume exactly), ``history.csv`` and the best model so far,
    written every ``every`` seconds and after the last epoch. Between writes the last finished
    epoch's state is kept in memory, so an interrupt writes it (:meth:`on_interrupt`): nothing
    finished is lost. ``save_best(model, epoch)`` writes a model folder."""

    def __init__(self, checkpoint: Path, history: Path, every: float, generator: torch.Generator,
                 save_best: Callable[[torch.nn.Module, int], None]) -> None:
        self.checkpoint, self.history, self.every = checkpoint, history, every
        self.generator, self.save_best = generator, save_best
        self.at = time.perf_counter()
        self.best_written: int | None = None
        self.unwritten: dict[str, Any] | None = None

    def on_epoch_end(self, trainer: Trainer) -> None:
        final = trainer.epoch >= trainer.cfg.epochs or trainer.stop
        if not (final or time.perf_counter() - self.at >= self.every):
            # assigned only once complete: an interrupt before the next write saves this epoch
            self.unwritten = copy.deepcopy(trainer.state_dict(self.generator))
            return
        save_checkpoint(trainer.state_dict(self.generator), self.checkpoint)
        self.unwritten = None
        write_history(trainer.history, self.history)
        # (after the last epoch the run saves the best model itself, once fit() has loaded it)
        if not final and trainer.best_epoch != self.best_written and trainer.best_state is not None:
            best = copy.deepcopy(trainer.model)
            load_weights(best, trainer.best_state, "the best weights")
            self.save_best(best, trainer.best_epoch)
            self.best_written = trainer.best_epoch
        self.at = time.perf_counter()

    def on_interrupt(self, trainer: Trainer) -> None:
        if self.unwritten is not None:  # the last finished epoch, not yet on disk
            save_checkpoint(self.unwritten, self.checkpoint)
            write_history(self.unwritten["history"], self.history)
            self.unwritten = None
