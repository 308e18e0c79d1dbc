"""A training run end to end: source → graph cache → split → train → evaluate → run folder.

The run folder holds everything needed to reproduce the result and reload the model
without this code: ``config.yaml`` (resolved), ``split.json``, ``load_report.json`` and
``skipped.csv``, ``history.csv``, ``metrics.json``, ``model/`` (``load_model``),
``predictions_<split>.csv`` (and ``..._atoms.csv`` for per-atom heads), plots.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from matgnn import keys
from matgnn.config import HeadConfig, RunConfig
from matgnn.data.sources import make_source
from matgnn.evaluation.metrics import regression_metrics
from matgnn.evaluation.plots import learning_curve, parity_plot
from matgnn.graphs.cache import GraphCache, build_graph_cache, default_cache_root
from matgnn.graphs.dataset import GraphDataset
from matgnn.models import MatgnnModel, build_model
from matgnn.training.losses import masked_loss
from matgnn.training.splits import random_split


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


def _labels(cache: GraphCache, heads: list[HeadConfig]) -> list[dict[str, np.ndarray]]:
    """Every graph's labels for the heads (one pass over the cache)."""
    out = []
    for rec in cache.records():
        n = len(rec["z"])
        d = {}
        for h in heads:
            if h.level == "graph":
                d[h.name] = np.array([rec["graph_targets"].get(h.name, math.nan)])
            else:
                d[h.name] = np.asarray(rec["node_targets"].get(h.name, np.full(n, np.nan)), float)
        out.append(d)
    return out


def _normalization(labels: list[dict[str, np.ndarray]], idx: list[int], heads: list[HeadConfig]):
    mean, std = [], []
    for h in heads:
        vals = np.concatenate([labels[i][h.name] for i in idx])
        vals = vals[~np.isnan(vals)]
        if not h.normalize or len(vals) < 2:
            mean.append(0.0)
            std.append(1.0)
        else:
            mean.append(float(vals.mean()))
            std.append(float(vals.std()) or 1.0)
    return torch.tensor(mean), torch.tensor(std)


def degree_histogram(cache: GraphCache, idx: list[int]) -> list[int]:
    """Histogram of atoms' in-degrees over the graphs ``idx`` (PNA's degree scalers)."""
    hist = np.zeros(1, np.int64)
    for k in idx:
        deg = np.bincount(cache.record(k)["dst"], minlength=1)
        counts = np.bincount(deg)
        if len(counts) > len(hist):
            hist = np.pad(hist, (0, len(counts) - len(hist)))
        hist[: len(counts)] += counts
    return hist.tolist()


class Trainer:
    """AdamW, LR schedule, early stopping on the validation loss, gradient clipping,
    best-validation weights kept."""

    def __init__(self, model: MatgnnModel, heads: list[HeadConfig], cfg, console: Console | None = None) -> None:
        self.model = model
        self.heads = heads
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "plateau":
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, factor=0.5, patience=max(cfg.patience // 3, 1))
        elif cfg.scheduler == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=cfg.epochs)
        else:
            self.sched = None

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.model.forward_normalized(batch)
        total = 0.0
        parts = {}
        for k, h in enumerate(self.heads):
            t = (batch[keys.target(h.name)] - self.model.target_mean[k]) / self.model.target_std[k]
            loss = masked_loss(out[h.name], t, h.loss, h.huber_delta)
            parts[h.name] = float(loss.detach())
            total = total + h.weight * loss
        return total, parts

    def run_epoch(self, loader, train: bool) -> float:
        self.model.train(train)
        total, n = 0.0, 0
        with torch.set_grad_enabled(train):
            for batch in loader:
                loss, _ = self.loss(batch)
                if train:
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.cfg.clip_grad:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
                    self.opt.step()
                total += float(loss.detach()) * batch.num_graphs
                n += batch.num_graphs
        return total / max(n, 1)

    def fit(self, train_loader, val_loader, on_best=None) -> list[dict[str, Any]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        history: list[dict[str, Any]] = []
        best, best_state, stale = math.inf, None, 0
        bar = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                       TextColumn("train {task.fields[tl]:.4f}  val {task.fields[vl]:.4f}  best {task.fields[best]:.4f}"),
                       TimeElapsedColumn(), console=self.console)
        with bar:
            task = bar.add_task("train", total=self.cfg.epochs, tl=math.nan, vl=math.nan, best=math.nan)
            for epoch in range(1, self.cfg.epochs + 1):
                t0 = time.perf_counter()
                tl = self.run_epoch(train_loader, True)
                vl = self.run_epoch(val_loader, False) if val_loader is not None else tl
                lr = self.opt.param_groups[0]["lr"]
                if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.sched.step(vl)
                elif self.sched is not None:
                    self.sched.step()
                history.append({"epoch": epoch, "train_loss": tl, "val_loss": vl, "lr": lr,
                                "seconds": time.perf_counter() - t0})
                if vl < best:
                    best, stale = vl, 0
                    best_state = copy.deepcopy(self.model.state_dict())
                    if on_best is not None:
                        on_best(self.model, epoch)
                else:
                    stale += 1
                bar.update(task, advance=1, tl=tl, vl=vl, best=best)
                if stale >= self.cfg.patience:
                    self.console.print(f"early stop after epoch {epoch} (no improvement for {stale} epochs)")
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return history


@torch.no_grad()
def predict_dataset(model: MatgnnModel, loader) -> dict[str, Any]:
    """Per-head predictions and labels, plus ids (and atom numbers for node heads)."""
    model.eval()
    res: dict[str, Any] = {"ids": [], "heads": {s["name"]: {"true": [], "pred": []} for s in model.head_specs},
                           "atoms": {"id": [], "index": [], "z": []}}
    node_heads = [s["name"] for s in model.head_specs if s["level"] == "node"]
    for batch in loader:
        out = model(batch)
        res["ids"].extend(batch[keys.STRUCTURE_ID])
        for name, p in out.items():
            res["heads"][name]["pred"].append(p.numpy())
            res["heads"][name]["true"].append(batch[keys.target(name)].numpy())
        if node_heads:
            counts = batch[keys.N_ATOMS].tolist()
            for sid, n in zip(batch[keys.STRUCTURE_ID], counts):
                res["atoms"]["id"].extend([sid] * n)
                res["atoms"]["index"].extend(range(n))
            res["atoms"]["z"].extend(batch[keys.Z].tolist())
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


def make_run_dir(cfg: RunConfig) -> Path:
    name = cfg.name or f"{cfg.model.name}-{'+'.join(h.name for h in cfg.targets)}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.output_dir) / f"{name}-{stamp}"
    k = 1
    while run_dir.exists():
        k += 1
        run_dir = Path(cfg.output_dir) / f"{name}-{stamp}-{k}"
    run_dir.mkdir(parents=True)
    return run_dir


def train(cfg: RunConfig, console: Console | None = None, progress: bool = True) -> Path:
    """Run ``cfg`` end to end; returns the run folder."""
    from torch_geometric.loader import DataLoader

    console = console or Console(stderr=True)
    t_start = time.perf_counter()
    seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run_dir = make_run_dir(cfg)
    cfg.to_yaml(run_dir / "config.yaml")
    console.print(f"run folder: {run_dir}")

    source = make_source(cfg.source)
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root() / "graphs"
    cache = build_graph_cache(source, cfg.graphs, cache_root=cache_root, workers=cfg.workers,
                              on_invalid=cfg.on_invalid, progress=progress)
    stats = cache.build_stats
    console.print(f"graph cache: {cache.path} ({'reused' if stats and stats.built == 0 else f'built {stats.built} graphs in {stats.seconds:.1f} s'})")
    report = cache.report
    report.print(console)
    report.save(run_dir)
    _check_targets(cache, cfg.targets)

    labels = _labels(cache, cfg.targets)
    labelled = [i for i, d in enumerate(labels) if any((~np.isnan(v)).any() for v in d.values())]
    unlabelled = len(cache) - len(labelled)
    if unlabelled:
        console.print(f"{unlabelled} structures carry none of the targets {[h.name for h in cfg.targets]} and are left out "
                      "(listed in unlabelled.txt)")
        keep = set(labelled)
        (run_dir / "unlabelled.txt").write_text("\n".join(cache.ids[i] for i in range(len(cache)) if i not in keep) + "\n")
    parts = random_split(len(labelled), cfg.split.train, cfg.split.val, cfg.split.seed)
    split = {k: [labelled[i] for i in v] for k, v in parts.items()}
    (run_dir / "split.json").write_text(json.dumps(
        {k: [cache.ids[i] for i in v] for k, v in split.items()} | {"kind": cfg.split.kind, "seed": cfg.split.seed}))
    console.print(f"split: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test")

    g_names = [h.name for h in cfg.targets if h.level == "graph"]
    n_names = [h.name for h in cfg.targets if h.level == "node"]
    ds = {k: GraphDataset(cache, v, graph_targets=g_names, node_targets=n_names) for k, v in split.items()}
    gen = torch.Generator().manual_seed(cfg.train.seed)
    loaders = {"train": DataLoader(ds["train"], batch_size=cfg.train.batch_size, shuffle=True, generator=gen)}
    for k in ("val", "test"):
        loaders[k] = DataLoader(ds[k], batch_size=cfg.train.batch_size) if len(ds[k]) else None

    heads = [{"name": h.name, "level": h.level} for h in cfg.targets]
    m = cfg.model
    extra: dict[str, Any] = {}
    from matgnn.models import MODELS, OPERATORS

    cls = MODELS.get(m.name) or (MODELS["zoo"] if m.name in OPERATORS else None)
    if getattr(cls, "needs_degree_histogram", False):
        extra["deg"] = degree_histogram(cache, split["train"])
    model = build_model(m.name, heads, cutoff=cfg.graphs.cutoff, hidden=m.hidden, layers=m.layers,
                        atom_features=m.atom_features, n_rbf=m.n_rbf, dropout=m.dropout, pooling=m.pooling,
                        head_hidden=m.head_hidden, operator=m.operator, **extra)
    mean, std = _normalization(labels, split["train"], cfg.targets)
    model.set_normalization(mean, std)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"model {m.name}: {n_params:,} parameters")

    trainer = Trainer(model, cfg.targets, cfg.train, console)
    t0 = time.perf_counter()
    history = trainer.fit(loaders["train"], loaders["val"],
                          on_best=lambda mod, ep: mod.save(run_dir / "model", extra={"epoch": ep}))
    train_seconds = time.perf_counter() - t0
    model.save(run_dir / "model", extra={"epoch": min(history, key=lambda h: h["val_loss"])["epoch"]})
    with open(run_dir / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    learning_curve(history, run_dir / "learning_curve.png")

    metrics: dict[str, Any] = {"n_parameters": n_params, "train_seconds": train_seconds,
                               "epochs_run": len(history), "best_epoch": min(history, key=lambda h: h["val_loss"])["epoch"],
                               "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
                               "n_skipped": len(report.skipped)}
    for k in ("val", "test"):
        if loaders[k] is None:
            continue
        res = predict_dataset(model, loaders[k])
        _write_predictions(run_dir, k, res, cfg.targets)
        for h in cfg.targets:
            mt = regression_metrics(res["heads"][h.name]["true"], res["heads"][h.name]["pred"])
            metrics.update({f"{k}.{h.name}.{key}": v for key, v in mt.items()})
            if k == "test" and mt["count"]:
                parity_plot(res["heads"][h.name]["true"], res["heads"][h.name]["pred"],
                            run_dir / f"parity_{h.name}.png", f"{h.name} (test)")
    metrics["wall_seconds"] = time.perf_counter() - t_start
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    for h in cfg.targets:
        key = f"test.{h.name}.mae"
        if key in metrics:
            console.print(f"test {h.name}: MAE {metrics[key]:.4g}, RMSE {metrics[f'test.{h.name}.rmse']:.4g}, "
                          f"R² {metrics[f'test.{h.name}.r2']:.3f} (n={metrics[f'test.{h.name}.count']})")
    console.print(f"done in {metrics['wall_seconds']:.0f} s → {run_dir}")
    return run_dir
