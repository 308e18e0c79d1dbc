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
import csv
import json
import math
import os
import random
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

from matgnn import keys
from matgnn.config import EvaluationConfig, HeadConfig, RunConfig
from matgnn.data.sources import make_source
from matgnn.data.structure import MAX_Z
from matgnn.errors import Interrupted, UnsafeArtifactError, UserError
from matgnn.evaluation.metrics import binned_errors, metrics_without, regression_metrics
from matgnn.evaluation.per_element import per_element_table, write_per_element
from matgnn.evaluation.plots import learning_curve, parity_plot
from matgnn.graphs.batching import make_loader
from matgnn.graphs.cache import GraphCache, build_graph_cache
from matgnn.graphs.packed import PackedGraphs, StreamedGraphs
from matgnn.models import MatgnnModel, build_model, load_model, model_class
from matgnn.models.base import save_tensors
from matgnn.training import distributed, transfer
from matgnn.training import splits as splitting
from matgnn.training.losses import masked_loss

CHECKPOINT = "checkpoint_last.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_targets(cache: GraphCache, heads: list[HeadConfig]) -> None:
    available = {"graph": cache.meta["graph_targets"], "node": cache.meta["node_targets"]}
    for h in heads:
        if h.name not in available[h.level]:
            raise ValueError(
                f"target {h.name!r} ({h.level}-level) is not in source {cache.meta['source']}; "
                f"graph-level targets: {available['graph'] or 'none'}; node-level: {available['node'] or 'none'}")


def head_labels(rec: dict[str, Any], head: HeadConfig) -> np.ndarray:
    """A graph record's labels for ``head``: one value (graph heads) or one per atom (node
    heads), float64, NaN where the label is missing."""
    if head.level == "graph":
        return np.array([rec["graph_targets"].get(head.name, math.nan)], float)
    return np.asarray(rec["node_targets"].get(head.name, np.full(len(rec["z"]), np.nan)), float)


def _labels(cache: GraphCache, heads: list[HeadConfig]) -> list[dict[str, np.ndarray]]:
    """Every graph's labels for the heads (one pass over the cache); ``"z"`` holds its
    atoms' Z when a head needs per-element statistics."""
    need_z = any(h.baseline != "none" for h in heads)
    out = []
    for rec in cache.records():
        d = {h.name: head_labels(rec, h) for h in heads}
        if need_z:
            d["z"] = np.asarray(rec["z"], np.int64)
        out.append(d)
    return out


def element_means(labels: list[dict[str, np.ndarray]], idx: list[int], name: str) -> np.ndarray:
    """Mean label of each element over the labelled atoms of graphs ``idx``; elements
    without a labelled atom get the overall mean."""
    z = np.concatenate([labels[i]["z"] for i in idx])
    y = np.concatenate([labels[i][name] for i in idx])
    ok = ~np.isnan(y)
    z, y = z[ok], y[ok]
    out = np.full(MAX_Z + 1, float(y.mean()) if len(y) else 0.0)
    counts = np.bincount(z, minlength=MAX_Z + 1)
    sums = np.bincount(z, weights=y, minlength=MAX_Z + 1)
    out[counts > 0] = sums[counts > 0] / counts[counts > 0]
    return out


def _standardisation(vals: np.ndarray, head: HeadConfig) -> tuple[float, float]:
    """Mean and std a head's labelled training values are standardised with (0 and 1 when the
    head is not normalised or has fewer than two values)."""
    if not head.normalize or len(vals) < 2:
        return 0.0, 1.0
    return float(vals.mean()), float(vals.std()) or 1.0


def _normalization(labels: list[dict[str, np.ndarray]], idx: list[int], heads: list[HeadConfig]):
    """Per-head mean and std of the training labels in the space the model learns
    (after ``transform`` or minus the element baseline), and the baselines."""
    mean, std = [], []
    baseline = np.zeros((len(heads), MAX_Z + 1))
    for k, h in enumerate(heads):
        vals = np.concatenate([labels[i][h.name] for i in idx])
        if h.baseline == "element_mean":
            baseline[k] = element_means(labels, idx, h.name)
            vals = vals - baseline[k][np.concatenate([labels[i]["z"] for i in idx])]
        vals = vals[~np.isnan(vals)]
        if h.transform == "log":
            if (vals <= -1).any():
                raise ValueError(f"target {h.name!r} has values <= -1; transform 'log' (log1p) needs y > -1")
            vals = np.log1p(vals)
        mu, sd = _standardisation(vals, h)
        mean.append(mu)
        std.append(sd)
    return torch.tensor(mean), torch.tensor(std), torch.tensor(baseline, dtype=torch.float32)


@torch.no_grad()
def _residual_normalization(base: MatgnnModel, loader, heads: list[HeadConfig]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of ``label − base prediction`` over the training graphs, per head."""
    base.eval()
    res: dict[str, list[np.ndarray]] = {h.name: [] for h in heads}
    for batch in loader:
        out = base(batch)
        for h in heads:
            r = (batch[keys.target(h.name)] - out[h.name].float()).numpy()
            res[h.name].append(r[~np.isnan(r)])
    stats = [_standardisation(np.concatenate(res[h.name]) if res[h.name] else np.zeros(0), h) for h in heads]
    return torch.tensor([m for m, _ in stats]), torch.tensor([sd for _, sd in stats])


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


def _numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state as tensors and plain values (a checkpoint holds nothing else,
    so it loads with ``torch.load(weights_only=True)``)."""
    kind, keys_, pos, has_gauss, cached = np.random.get_state()
    return {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys_, np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_rng_state(st: dict[str, Any]) -> None:
    np.random.set_state((st["kind"], st["keys"].numpy().astype(np.uint32), st["pos"], st["has_gauss"],
                         st["cached_gaussian"]))


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
        self.device = device or torch.device("cpu")
        self.base = base.to(self.device).eval() if base is not None else None  # delta learning: frozen base
        self.amp = bool(cfg.amp) and self.device.type == "cuda"
        self.model = model.to(self.device)
        self.heads = heads
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.log_vars = (torch.nn.Parameter(torch.zeros(len(heads), device=self.device))
                         if cfg.task_weighting == "uncertainty" else None)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]  # frozen groups left out
        if self.log_vars is not None:
            groups.append({"params": [self.log_vars], "weight_decay": 0.0})
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ddp = None
        if distributed.active():
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(distributed.NormalizedForward(self.model),
                                               device_ids=[self.device] if self.device.type == "cuda" else None)
        self.batch_sched = False
        if cfg.scheduler == "plateau":
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, factor=0.5, patience=cfg.scheduler_patience or max(cfg.patience // 3, 1))
        elif cfg.scheduler == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=cfg.epochs)
        elif cfg.scheduler == "onecycle":
            self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=cfg.lr,
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
            t = (self.model.transform_target(k, label, batch) - self.model.target_mean[k]) / self.model.target_std[k]
            task = masked_loss(pred, t, h.loss, h.huber_delta)
            if self.log_vars is not None:  # learned uncertainty weighting
                task = torch.exp(-self.log_vars[k]) * task + self.log_vars[k]
            total = total + h.weight * task
            if errors is not None:
                mask = ~torch.isnan(label)
                err = (self.model.denormalize(k, pred.detach(), batch)[mask] - label[mask]).abs()
                errors[h.name][0] += float(err.sum())
                errors[h.name][1] += int(mask.sum())
        return total

    def run_epoch(self, loader, train: bool) -> tuple[float, dict[str, float]]:
        """Mean loss over the epoch, and (evaluation passes) each head's MAE in its own units."""
        self.model.train(train)
        total, n = 0.0, 0
        errors = None if train else {h.name: [0.0, 0] for h in self.heads}
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
        self.model.load_state_dict(st["model"])  # load_state_dict copies onto the model's device
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

    def fit(self, train_loader, val_loader,
            on_epoch_end: Callable[[Trainer], None] | None = None) -> list[dict[str, Any]]:
        """Train until ``epochs`` or early stopping. Without a validation split the training
        loss drives early stopping, the schedule and the best weights (said once); the history's
        validation columns then stay empty (NaN), never a copy of the training loss. On a
        terminal a progress bar; otherwise (logs, batch jobs) one line per epoch."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        live = self.console.is_terminal
        bar = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                       TextColumn("train {task.fields[tl]:.4f}  val {task.fields[vl]:.4f}  best {task.fields[best]:.4f}"),
                       TimeElapsedColumn(), console=self.console, disable=not live)
        with bar:
            task = bar.add_task("train", total=self.cfg.epochs, completed=self.epoch, tl=math.nan, vl=math.nan,
                                best=self.best)
            while self.epoch < self.cfg.epochs and self.stale < self.cfg.patience:
                self.epoch += 1
                t0 = time.perf_counter()
                lr = self.opt.param_groups[0]["lr"]
                tl, _ = self.run_epoch(train_loader, True)
                vl, vmae = self.run_epoch(val_loader, False) if val_loader is not None else (math.nan, {})
                monitor = vl if val_loader is not None else tl
                if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.sched.step(monitor)
                elif self.sched is not None and not self.batch_sched:
                    self.sched.step()
                self.history.append({"epoch": self.epoch, "train_loss": tl, "val_loss": vl,
                                     **{f"val_mae.{h.name}": vmae.get(h.name, math.nan) for h in self.heads},
                                     **({f"task_weight.{h.name}": float(torch.exp(-self.log_vars[k].detach()))
                                         for k, h in enumerate(self.heads)} if self.log_vars is not None else {}),
                                     "lr": lr, "seconds": time.perf_counter() - t0})
                if monitor < self.best:
                    self.best, self.stale, self.best_epoch = monitor, 0, self.epoch
                    self.best_state = copy.deepcopy(self.model.state_dict())
                else:
                    self.stale += 1
                bar.update(task, completed=self.epoch, tl=tl, vl=vl, best=self.best)
                if not live:
                    self.console.print(epoch_line(self.history[-1], self.cfg.epochs, [h.name for h in self.heads]),
                                       highlight=False, soft_wrap=True)
                if on_epoch_end is not None:
                    on_epoch_end(self)
            if self.stale >= self.cfg.patience:
                self.console.print(f"early stop after epoch {self.epoch} (no improvement for {self.stale} epochs)")
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.history


def epoch_line(row: dict[str, Any], epochs: int, heads: list[str]) -> str:
    """One log line of an epoch: losses, each head's validation MAE in its units, LR, time."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4g}"]
    if not math.isnan(row["val_loss"]):
        parts.append(f"val loss {row['val_loss']:.4g}")
        parts += [f"val MAE {h} {row[f'val_mae.{h}']:.4g}" for h in heads]
    parts += [f"lr {row['lr']:.3g}", f"{row['seconds']:.1f} s"]
    return "  ".join(parts)


@torch.no_grad()
def predict_dataset(model: MatgnnModel, loader) -> dict[str, Any]:
    """Per-head predictions and labels, ids, each graph's elements and each atom's Z."""
    model.eval()
    device = next(model.parameters()).device
    node_heads = any(s["level"] == "node" for s in model.head_specs)
    res: dict[str, Any] = {"ids": [], "graph_z": [], "heads": {s["name"]: {"true": [], "pred": []} for s in model.head_specs},
                           "atoms": {"id": [], "index": [], "z": []}}
    for batch in loader:
        out = model(batch.to(device))
        batch = batch.cpu()
        res["ids"].extend(batch[keys.STRUCTURE_ID])
        for name, p in out.items():
            res["heads"][name]["pred"].append(p.float().cpu().numpy())
            res["heads"][name]["true"].append(batch[keys.target(name)].numpy())
        counts = batch[keys.N_ATOMS].tolist()
        zs = batch[keys.Z].tolist()
        start = 0
        for sid, n in zip(batch[keys.STRUCTURE_ID], counts):
            res["graph_z"].append(sorted(set(zs[start:start + n])))
            if node_heads:
                res["atoms"]["id"].extend([sid] * n)
                res["atoms"]["index"].extend(range(n))
            start += n
        if node_heads:
            res["atoms"]["z"].extend(zs)
    for name in res["heads"]:
        for k in ("true", "pred"):
            res["heads"][name][k] = np.concatenate(res["heads"][name][k]) if res["heads"][name][k] else np.zeros(0)
    return res


def _write_predictions(run_dir: Path, split: str, res: dict[str, Any], heads: list[HeadConfig]) -> None:
    graph = [h.name for h in heads if h.level == "graph"]
    node = [h.name for h in heads if h.level == "node"]
    if graph:
        with open(run_dir / f"predictions_{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id"] + [f"{n}_{k}" for n in graph for k in ("true", "pred")])
            for r, sid in enumerate(res["ids"]):
                w.writerow([sid] + [f"{res['heads'][n][k][r]:.6g}" for n in graph for k in ("true", "pred")])
    if node:
        with open(run_dir / f"predictions_{split}_atoms.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "atom", "z"] + [f"{n}_{k}" for n in node for k in ("true", "pred")])
            a = res["atoms"]
            for r in range(len(a["id"])):
                w.writerow([a["id"][r], a["index"][r], a["z"][r]] +
                           [f"{res['heads'][n][k][r]:.6g}" for n in node for k in ("true", "pred")])


def evaluate_split(model: MatgnnModel, loader, heads: list[HeadConfig], run_dir: Path, split: str,
                   plots: bool = True, evaluation: EvaluationConfig | None = None) -> dict[str, float]:
    """Predictions CSV, metrics, per-element table and parity plot of one split."""
    return evaluate_predictions(predict_dataset(model, loader), heads, run_dir, split, plots, evaluation)


def evaluate_predictions(res: dict[str, Any], heads: list[HeadConfig], run_dir: Path, split: str,
                         plots: bool = True, evaluation: EvaluationConfig | None = None) -> dict[str, float]:
    """Everything :func:`evaluate_split` writes, from predictions in the layout of
    :func:`predict_dataset` (so baselines that are not models are scored the same way)."""
    from ase.data import chemical_symbols

    evaluation = evaluation or EvaluationConfig()
    _write_predictions(run_dir, split, res, heads)
    metrics: dict[str, float] = {}
    for h in heads:
        true, pred = res["heads"][h.name]["true"], res["heads"][h.name]["pred"]
        mt = regression_metrics(true, pred)
        metrics.update({f"{split}.{h.name}.{key}": v for key, v in mt.items()})
        node = h.level == "node"
        elements = res["atoms"]["z"] if node else res["graph_z"]
        metrics.update({f"{split}.{h.name}.{key}": v
                        for key, v in metrics_without(elements, true, pred, evaluation.exclude_elements, node).items()})
        if split == "test" and mt["count"]:
            write_per_element(per_element_table(elements, true, pred, node), run_dir / f"per_element_{h.name}.csv")
            if node:
                rows = binned_errors(true, pred, evaluation.error_bins)
                with open(run_dir / f"errors_by_bin_{h.name}.csv", "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)
            if plots:
                groups = [chemical_symbols[z] for z in elements] if node else None
                parity_plot(true, pred, run_dir / f"parity_{h.name}.png", f"{h.name} (test)", groups=groups)
    return metrics


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


def _write_history(history: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def _model_extra(cfg: RunConfig, epoch: int, train_elements: list[int] | None = None) -> dict[str, Any]:
    """Saved next to the weights so a model folder alone can featurise new structures (and
    flag predictions for elements absent from its training split)."""
    extra = {"epoch": epoch, "graphs": cfg.graphs.model_dump(), "targets": [h.model_dump() for h in cfg.targets]}
    if train_elements is not None:
        extra["train_elements"] = train_elements
    return extra


def train_elements(cache: GraphCache, idx: list[int]) -> list[int]:
    """Atomic numbers present in the graphs ``idx`` (the training split)."""
    seen = np.zeros(MAX_Z + 1, bool)
    for k in set(idx):
        seen[np.asarray(cache.record(k)["z"], np.int64)] = True
    return np.flatnonzero(seen).tolist()


def _save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Atomic: a kill, a full disk or a read-only folder never leaves a half-written checkpoint
    (the last good one stays); the OS error names the file."""
    save_tensors(state, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A training checkpoint, loaded as data (``weights_only=True``: tensors and plain types)."""
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location=device)
    except pickle.UnpicklingError:
        raise UnsafeArtifactError(f"{path}: refused, it holds more than tensors and plain values (torch.load "
                                  "with weights_only=True failed); checkpoints written before matgnn stored "
                                  "them as data cannot be resumed") from None


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
    _check_targets(cache, cfg.targets)

    labels = _labels(cache, cfg.targets)
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
    """Settings that can be checked before any work (model name, split settings, files named):
    a :class:`UserError` naming the setting, raised before a run folder exists."""
    if cfg.transfer.from_model and cfg.delta.base_model:
        raise UserError("transfer.from_model and delta.base_model cannot be combined in one run")
    if not cfg.transfer.from_model:
        try:
            model_class(cfg.model.name)
        except ValueError as e:
            raise UserError(f"model.name: {e}") from None
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
        mean, std = _residual_normalization(base, make_loader(graphs["train"], tc.batch_size), cfg.targets)
        baseline = None
        console.print(f"delta learning on the residuals of {cfg.delta.base_model}")
    else:
        mean, std, baseline = _normalization(labels, split["train"], cfg.targets)
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
            _save_checkpoint(pending, run_dir / CHECKPOINT)
            _write_history(pending["history"], run_dir / "history.csv")
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
        _save_checkpoint(tr.state_dict(gen), run_dir / CHECKPOINT)
        saved["unwritten"] = None
        _write_history(tr.history, run_dir / "history.csv")
        if writer is not None:
            writer.flush()
        # (after the last epoch, train() itself saves the best model once fit() has loaded it)
        if not final and tr.best_epoch != saved["best_written"] and tr.best_state is not None:
            best = copy.deepcopy(tr.model)
            best.load_state_dict(tr.best_state)
            best.save(run_dir / "model", extra=_model_extra(cfg, tr.best_epoch))
            saved["best_written"] = tr.best_epoch
        saved["at"] = time.perf_counter()
