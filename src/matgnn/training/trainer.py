"""The Trainer (AdamW, LR schedule, early stopping, gradient clipping, best weights, resumable
state) and its checkpoint files: tensors and plain values only, written atomically, loaded with
``torch.load(weights_only=True)``."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rich.console import Console

from matgnn import keys
from matgnn.config import HeadConfig
from matgnn.models import MatgnnModel
from matgnn.models.loading import load_weights
from matgnn.training import distributed
from matgnn.training.callbacks import Callback, EarlyStopping
from matgnn.training.checkpoints import (  # noqa: F401
    CHECKPOINT,
    load_checkpoint,
    save_checkpoint,
    write_history,
)
from matgnn.training.losses import masked_loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state as tensors and plain values (a checkpoint holds nothing else,
    so it loads with ``torch.load(weights_only=True)``)."""
    kind, keys_, pos, has_gauss, cached = np.random.get_state()
    return {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys_, np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_rng_state(st: dict[str, Any]) -> None:
    np.random.set_state((st["kind"], st["keys"].numpy().astype(np.uint32), st["pos"], st["has_gauss"],
                         st["cached_gaussian"]))


def optimizer_groups(model: torch.nn.Module, lr: float) -> list[dict[str, Any]]:
    """The trainable parameters in AdamW groups, one per learning rate: ``lr`` times the model's
    :meth:`~matgnn.models.base.MatgnnModel.lr_scale` of each parameter's layer group (frozen ones left out)."""
    by_scale: dict[float, list[torch.nn.Parameter]] = {}
    scale_of = getattr(model, "lr_scale", None)
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = scale_of(model.parameter_group(name)) if scale_of is not None else 1.0
            by_scale.setdefault(float(scale), []).append(p)
    return [{"params": ps, "lr": lr * scale} for scale, ps in sorted(by_scale.items(), reverse=True)] or [
        {"params": [], "lr": lr}]


def amp_unavailable(device: torch.device) -> str | None:
    """Why bf16 mixed precision is not used on ``device`` (None: a GPU with bfloat16).

    Not on CPUs, even with AVX512-BF16: PyTorch's oneDNN bf16 matmuls keep memory for every new
    matrix shape, and graph batches change shape every step (measured with torch 2.13 on ALIGNN and
    JARVIS dft_2d: +300 MB resident per epoch, for 1.2× speed)."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else f"{torch.cuda.get_device_name(device)} has no bfloat16"
    return ("on CPU, oneDNN's bf16 matrix products keep memory for every new batch shape (hundreds of MB per "
            "epoch)")


class Trainer:
    """AdamW, LR schedule, early stopping on the validation loss, gradient clipping,
    best-validation weights kept, and a resumable state (``state_dict``).

    Under ``torch.distributed`` (see :mod:`matgnn.training.distributed`) the training
    forward runs through ``DistributedDataParallel`` and epoch losses and errors are summed
    over ranks, so every rank takes the same early-stopping and schedule decisions.
    """

    def __init__(self, model: MatgnnModel, heads: list[HeadConfig], cfg, steps_per_epoch: int,
                 console: Console | None = None, device: torch.device | None = None,
                 base: MatgnnModel | None = None) -> None:
        if cfg.lr is None:  # the family's default is the run's to choose (RunConfig.with_learning_rate)
            raise ValueError("Trainer needs a learning rate: train.lr is unset (RunConfig.with_learning_rate sets it)")
        self.device = device or torch.device("cpu")
        self.base = base.to(self.device).eval() if base is not None else None  # delta learning: frozen base
        #: bf16 autocast in training and validation passes (on a GPU with bfloat16)
        self.amp = bool(cfg.amp) and amp_unavailable(self.device) is None
        self.model = model.to(self.device)
        self.heads = heads
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.log_vars = (torch.nn.Parameter(torch.zeros(len(heads), device=self.device))
                         if cfg.task_weighting == "uncertainty" else None)
        groups = optimizer_groups(model, cfg.lr)  # frozen groups left out
        if self.log_vars is not None:
            groups.append({"params": [self.log_vars], "weight_decay": 0.0, "lr": cfg.lr})
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ddp = None
        if distributed.active():
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(distributed.NormalizedForward(self.model),
                                               device_ids=[self.device] if self.device.type == "cuda" else None)
        self.batch_sched = False
        self.steps_per_epoch = max(steps_per_epoch, 1)
        #: epochs the schedule is planned over (with a time budget: re-planned each epoch)
        self.horizon = cfg.epochs
        budget = getattr(cfg, "max_minutes", None)
        if budget and cfg.scheduler in ("cosine", "onecycle"):  # planned over the epochs that fit the budget
            shape = onecycle_factor if cfg.scheduler == "onecycle" else cosine_factor
            self.sched = torch.optim.lr_scheduler.LambdaLR(
                self.opt, lambda step: shape(step / (self.horizon * self.steps_per_epoch)))
            self.batch_sched = True
        elif cfg.scheduler == "plateau":
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, factor=0.5, patience=cfg.scheduler_patience or max(cfg.patience // 3, 1))
        elif cfg.scheduler == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=cfg.epochs)
        elif cfg.scheduler == "onecycle":
            self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=[g["lr"] for g in groups],
                                                             total_steps=cfg.epochs * max(steps_per_epoch, 1))
            self.batch_sched = True
        else:
            self.sched = None
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best = math.inf
        self.best_state: dict[str, Any] | None = None
        self.best_epoch = 0
        self.stale = 0
        #: set by a callback (early stopping) to end fit() after the current epoch
        self.stop = False

    def loss(self, batch, errors: dict[str, list[float]] | None = None, train: bool = False) -> torch.Tensor:
        """Weighted sum of the heads' masked losses, in normalised units. With ``errors``,
        also adds each head's summed absolute error and label count, in the target's units.
        ``train``: through DDP when distributed (evaluation passes use the bare model, so
        ranks with different numbers of evaluation batches never wait on each other)."""
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.ddp(batch) if train and self.ddp is not None else self.model.forward_normalized(batch)
        total = 0.0
        if self.base is not None:
            with torch.no_grad():
                base_out = self.base(batch)
        for k, h in enumerate(self.heads):
            label = batch[keys.target(h.name)]
            if self.base is not None:  # delta learning: the residual of the base is the label
                label = label - base_out[h.name].float()
            pred = out[h.name].float()
            t = (self.model.transform_target(k, label, batch) - self.model.head_mean(k)) / self.model.head_std(k)
            task = masked_loss(pred, t, h.loss, h.huber_delta)
            if self.log_vars is not None:  # learned uncertainty weighting
                task = torch.exp(-self.log_vars[k]) * task + self.log_vars[k]
            total = total + h.weight * task
            if errors is not None:
                mask = ~torch.isnan(label)
                diff = (self.model.denormalize(k, pred.detach(), batch) - label).abs()
                errors[h.name][0] += float(diff[mask].sum())
                errors[h.name][1] += int(mask.sum())
                for j, c in enumerate(h.components or ()):  # a vector head: each component too
                    errors[f"{h.name}.{c}"][0] += float(diff[:, j][mask[:, j]].sum())
                    errors[f"{h.name}.{c}"][1] += int(mask[:, j].sum())
        if train:  # a model's own auxiliary term (a fine-tuned backbone kept near its pretrained outputs)
            extra = getattr(self.model, "auxiliary_loss", lambda: None)()
            if extra is not None:
                total = total + extra
        return total

    def run_epoch(self, loader, train: bool) -> tuple[float, dict[str, float]]:
        """Mean loss over the epoch, and (evaluation passes) each head's MAE in its own units."""
        self.model.train(train)
        total, n = 0.0, 0
        errors = None if train else {n: [0.0, 0] for h in self.heads
                                     for n in [h.name, *(f"{h.name}.{c}" for c in h.components or ())]}
        with torch.set_grad_enabled(train):
            for batch in loader:
                batch = batch.to(self.device)
                loss = self.loss(batch, errors, train)
                if train:
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.log_vars is not None:
                        distributed.average_gradients([self.log_vars])
                    if self.cfg.clip_grad:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
                    self.opt.step()
                    if self.batch_sched:
                        self.sched.step()
                total += float(loss.detach()) * batch.num_graphs
                n += batch.num_graphs
        errors = errors or {}
        sums = distributed.all_reduce_sum([total, n] + [v for pair in errors.values() for v in pair], self.device)
        total, n = sums[0], sums[1]
        maes = {name: (sums[2 + 2 * k] / sums[3 + 2 * k] if sums[3 + 2 * k] else math.nan)
                for k, name in enumerate(errors)}
        return total / max(n, 1), maes

    def state_dict(self, generator: torch.Generator) -> dict[str, Any]:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "log_vars": None if self.log_vars is None else self.log_vars.detach().clone(),
                "sched": self.sched.state_dict() if self.sched is not None else None,
                "history": self.history, "best": self.best, "best_state": self.best_state, "stale": self.stale,
                "best_epoch": self.best_epoch,
                "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(), "python": random.getstate(),
                        "loader": generator.get_state()}}

    def load_state_dict(self, st: dict[str, Any], generator: torch.Generator) -> None:
        self.epoch = st["epoch"]
        load_weights(self.model, st["model"], "the checkpoint")  # copies onto the model's device
        self.opt.load_state_dict(st["opt"])
        if self.log_vars is not None and st.get("log_vars") is not None:
            with torch.no_grad():
                self.log_vars.copy_(st["log_vars"])
        if self.sched is not None and st["sched"] is not None:
            self.sched.load_state_dict(st["sched"])
        self.history, self.best, self.best_state, self.stale = st["history"], st["best"], st["best_state"], st["stale"]
        self.best_epoch = st["best_epoch"]
        torch.set_rng_state(st["rng"]["torch"].cpu())
        _set_numpy_rng_state(st["rng"]["numpy"])
        random.setstate(st["rng"]["python"])
        generator.set_state(st["rng"]["loader"])

    def fit(self, train_loader, val_loader, callbacks: Sequence[Callback] = ()) -> list[dict[str, Any]]:
        """Train until ``epochs`` or until a callback sets ``stop`` (:class:`EarlyStopping` on
        ``patience`` is always first). Without a validation split the training loss drives early
        stopping, the schedule and the best weights; the history's validation columns then stay
        empty (NaN), never a copy of the training loss. On a terminal a progress bar; otherwise
        (logs, batch jobs) one line per epoch. A plain function per epoch: an
        :class:`~matgnn.training.callbacks.EpochFunction` among the callbacks."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        callbacks = [EarlyStopping(self.cfg.patience), *callbacks]
        self.stop = False
        for cb in callbacks:
            cb.on_fit_start(self)
        live = self.console.is_terminal
        bar = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                       TextColumn("train {task.fields[tl]:.4f}  val {task.fields[vl]:.4f}  best {task.fields[best]:.4f}"),
                       TimeElapsedColumn(), console=self.console, disable=not live)
        try:
            with bar:
                task = bar.add_task("train", total=self.cfg.epochs, completed=self.epoch, tl=math.nan, vl=math.nan,
                                    best=self.best)
                while self.epoch < self.cfg.epochs and not self.stop:
                    row = self.train_one_epoch(train_loader, val_loader)
                    bar.update(task, completed=self.epoch, tl=row["train_loss"], vl=row["val_loss"], best=self.best)
                    if not live:
                        self.console.print(epoch_line(row, self.cfg.epochs, [h.name for h in self.heads]),
                                           highlight=False, soft_wrap=True)
                    for cb in callbacks:
                        cb.on_epoch_end(self)
        except KeyboardInterrupt:
            for cb in callbacks:
                cb.on_interrupt(self)
            raise
        if self.best_state is not None:
            load_weights(self.model, self.best_state, "the best weights")
        for cb in callbacks:
            cb.on_fit_end(self)
        return self.history

    def train_one_epoch(self, train_loader, val_loader) -> dict[str, Any]:
        """One epoch: train, validate, step the schedule, keep the best weights; its history row."""
        self.epoch += 1
        if getattr(self.cfg, "max_minutes", None):
            self.horizon = self.epochs_in_budget()
        t0 = time.perf_counter()
        lr = self.opt.param_groups[0]["lr"]
        tl, _ = self.run_epoch(train_loader, True)
        train_pass = time.perf_counter() - t0
        vl, vmae = self.run_epoch(val_loader, False) if val_loader is not None else (math.nan, {})
        monitor = vl if val_loader is not None else tl
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched.step(monitor)
        elif self.sched is not None and not self.batch_sched:
            self.sched.step()
        self.history.append({"epoch": self.epoch, "train_loss": tl, "val_loss": vl,
                             **{f"val_mae.{n}": vmae.get(n, math.nan) for h in self.heads
                                for n in [h.name, *(f"{h.name}.{c}" for c in h.components or ())]},
                             **({f"task_weight.{h.name}": float(torch.exp(-self.log_vars[k].detach()))
                                 for k, h in enumerate(self.heads)} if self.log_vars is not None else {}),
                             "lr": lr, "seconds": time.perf_counter() - t0, "train_pass_seconds": train_pass})
        if monitor < self.best:
            self.best, self.stale, self.best_epoch = monitor, 0, self.epoch
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.stale += 1
        return self.history[-1]


    def mean_epoch_seconds(self) -> float | None:
        """Mean seconds of the epochs run so far (the same on every rank: averaged over ranks)."""
        if not self.history:
            return None
        mean = sum(r["seconds"] for r in self.history) / len(self.history)
        return distributed.all_reduce_sum([mean], self.device)[0] / distributed.world_size()

    def elapsed_seconds(self) -> float:
        """Seconds spent in training epochs so far (resumed runs included; the same on every rank)."""
        return (self.mean_epoch_seconds() or 0.0) * len(self.history)

    def epochs_in_budget(self) -> int:
        """How many epochs in all fit ``max_minutes`` at the mean epoch time so far (at least those run
        plus this one; at most ``epochs``)."""
        mean = self.mean_epoch_seconds()
        if mean is None:
            return self.cfg.epochs
        fit = int(self.cfg.max_minutes * 60 / max(mean, 1e-9))
        return max(min(fit, self.cfg.epochs), self.epoch)


def onecycle_factor(progress: float) -> float:
    """The one-cycle LR shape (as torch's OneCycleLR defaults, without momentum cycling) at ``progress``
    in [0, 1]: cosine warm-up from lr/25 to lr over the first 30 %, cosine annealing to lr/25e4."""
    p = min(max(progress, 0.0), 1.0)
    if p < 0.3:
        return _cos_between(1 / 25, 1.0, p / 0.3)
    return _cos_between(1.0, 1 / 25e4, (p - 0.3) / 0.7)


def cosine_factor(progress: float) -> float:
    """Cosine annealing from lr to 0 at ``progress`` in [0, 1]."""
    return _cos_between(1.0, 0.0, min(max(progress, 0.0), 1.0))


def _cos_between(start: float, end: float, t: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


def epoch_line(row: dict[str, Any], epochs: int, heads: list[str]) -> str:
    """One log line of an epoch: losses, each head's validation MAE in its units, LR, time."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4g}"]
    if not math.isnan(row["val_loss"]):
        parts.append(f"val loss {row['val_loss']:.4g}")
        parts += [f"val MAE {h} {row[f'val_mae.{h}']:.4g}" for h in heads]
    parts += [f"lr {row['lr']:.3g}", f"{row['seconds']:.1f} s"]
    return "  ".join(parts)
