"""Fit and score a baseline like a training run: same config, graph cache, split, metrics,
predictions CSV, per-element table, error bins and parity plot, in a run folder."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from rich.console import Console

from matgnn.baselines.descriptors import FEATURE_SETS, BackboneSpace, DescriptorSpace
from matgnn.config import HeadConfig, RunConfig
from matgnn.evaluation.scoring import evaluate_predictions
from matgnn.training.data import prepare_run_data
from matgnn.training.run import make_run_dir
from matgnn.training.targets import element_means, head_labels

BASELINES = ("element_mean", "linear", "xgboost", "chgnet", "chgnet_finetuned")


def _split_labels(recs: list[dict[str, Any]], head: HeadConfig) -> np.ndarray:
    """The labels of ``head`` over a split's records, concatenated (per graph or per atom)."""
    return np.concatenate([head_labels(r, head) for r in recs]) if recs else np.zeros(0)


def _skeleton(recs: list[dict[str, Any]], heads: list[HeadConfig]) -> dict[str, Any]:
    """Labels, ids and elements of a split in the layout of ``predict_dataset``."""
    res: dict[str, Any] = {"ids": [], "graph_z": [], "heads": {}, "atoms": {"id": [], "index": [], "z": []}}
    node = any(h.level == "node" for h in heads)
    for r in recs:
        n = len(r["z"])
        res["ids"].append(r["id"])
        res["graph_z"].append(sorted(set(int(z) for z in r["z"])))
        if node:
            res["atoms"]["id"].extend([r["id"]] * n)
            res["atoms"]["index"].extend(range(n))
            res["atoms"]["z"].extend(int(z) for z in r["z"])
    for h in heads:
        true = _split_labels(recs, h)
        res["heads"][h.name] = {"true": true, "pred": np.full(len(true), np.nan)}
    return res


def _ridge(x: sp.csr_matrix, y: np.ndarray, lam: float = 1e-3) -> np.ndarray:
    """Least squares with an intercept and a small ridge penalty (not on the intercept)."""
    xa = sp.hstack([x, np.ones((x.shape[0], 1))]).tocsr()
    a = (xa.T @ xa).toarray()
    a[np.diag_indices(a.shape[0] - 1)] += lam * x.shape[0]
    return np.linalg.solve(a, xa.T @ y)


def _ridge_predict(w: np.ndarray, x: sp.csr_matrix) -> np.ndarray:
    return x @ w[:-1] + w[-1]


class _Fitted:
    """One head's fitted baseline: ``predict(recs) -> values`` (per atom or per graph)."""

    def __init__(self, kind: str, head: HeadConfig, space: DescriptorSpace, train_recs, val_recs,
                 max_train_rows: int | None, seed: int, console: Console) -> None:
        self.kind, self.head, self.space = kind, head, space
        x, y = self._xy(train_recs)
        ok = ~np.isnan(y)
        x, y = x[np.flatnonzero(ok)], y[ok]
        if max_train_rows and x.shape[0] > max_train_rows:
            keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_train_rows, replace=False))
            console.print(f"{kind} {head.name}: fitting on a seeded sample of {max_train_rows:,} of {x.shape[0]:,} rows")
            x, y = x[keep], y[keep]
        self.n_rows = int(x.shape[0])
        if kind == "element_mean" and head.level == "node":
            labels = [{"z": np.asarray(r["z"], np.int64), head.name: head_labels(r, head)} for r in train_recs]
            self.table = element_means(labels, list(range(len(labels))), head.name)
        elif kind == "element_mean":  # graph head: per-element contributions to an intensive target
            self.w = _ridge(x[:, : space.n_el], y)
        elif kind == "linear":
            self.w = _ridge(x, y)
        elif kind == "xgboost":
            import xgboost as xgb

            xv, yv = self._xy(val_recs)
            okv = ~np.isnan(yv)
            from matgnn.progress import Progress

            rounds = 800
            with Progress(f"xgboost {head.name} on {x.shape[0]:,} rows", total=rounds, unit="rounds") as progress:
                class _Rounds(xgb.callback.TrainingCallback):
                    def after_iteration(self, model, epoch, evals_log) -> bool:  # noqa: ANN001
                        progress.advance()
                        return False

                self.model = xgb.XGBRegressor(n_estimators=rounds, max_depth=8, learning_rate=0.08, subsample=0.8,
                                              colsample_bytree=0.8, min_child_weight=2, tree_method="hist",
                                              objective="reg:absoluteerror", early_stopping_rounds=40,
                                              n_jobs=os.cpu_count(), random_state=seed, callbacks=[_Rounds()])
                self.model.fit(x, y, eval_set=[(xv[np.flatnonzero(okv)], yv[okv])] if okv.any() else None,
                               verbose=False)
        else:
            raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")

    def _x(self, recs) -> sp.csr_matrix:
        if self.head.level == "node":
            return sp.vstack([self.space.atoms(r) for r in recs]).tocsr() if recs else sp.csr_matrix((0, self.space.n_columns))
        return self.space.graphs(recs)

    def _xy(self, recs) -> tuple[sp.csr_matrix, np.ndarray]:
        return self._x(recs), _split_labels(recs, self.head)

    def predict(self, recs) -> np.ndarray:
        if self.kind == "element_mean" and self.head.level == "node":
            return self.table[np.concatenate([np.asarray(r["z"], np.int64) for r in recs])] if recs else np.zeros(0)
        x = self._x(recs)
        if self.kind == "element_mean":
            return _ridge_predict(self.w, x[:, : self.space.n_el])
        if self.kind == "linear":
            return _ridge_predict(self.w, x)
        return self.model.predict(x)


def _pymatgen(rec: dict[str, Any]):
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice(rec["cell"]), [int(z) for z in rec["z"]], rec["pos"], coords_are_cartesian=True)


def chgnet_magmoms(recs: list[dict[str, Any]], batch_size: int = 16,
                   model: Any = None) -> tuple[list[np.ndarray | None], list[tuple[str, str]], float]:
    """CHGNet's (zero-shot) per-atom |m| for each graph; ``None`` for structures CHGNet
    rejects (listed with its message). Returns (moments, rejected, seconds)."""
    from chgnet.model import CHGNet

    model = model or CHGNet.load(verbose=False)
    out: list[np.ndarray | None] = [None] * len(recs)
    rejected: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    for start in range(0, len(recs), batch_size):
        chunk = list(range(start, min(start + batch_size, len(recs))))
        structs = [_pymatgen(recs[k]) for k in chunk]
        try:
            preds = model.predict_structure(structs, task="em", batch_size=batch_size)
            for k, p in zip(chunk, preds):
                out[k] = np.asarray(p["m"], float).reshape(-1)
        except Exception:  # noqa: BLE001 - one bad structure fails the batch: redo one by one
            for k, s in zip(chunk, structs):
                try:
                    out[k] = np.asarray(model.predict_structure(s, task="em")["m"], float).reshape(-1)
                except Exception as e:  # noqa: BLE001 - CHGNet's own errors (e.g. isolated atoms)
                    rejected.append((recs[k]["id"], f"{type(e).__name__}: {e}"[:300]))
    return out, rejected, time.perf_counter() - t0


def chgnet_finetune(train_recs: list[dict[str, Any]], val_recs: list[dict[str, Any]], head: str, epochs: int = 3,
                    lr: float = 1e-4, batch_size: int = 16, seed: int = 0, console: Console | None = None) -> Any:
    """CHGNet 0.3.0 fine-tuned on per-atom |m| labels (L1, as our models): all weights trained with
    AdamW, the epoch with the lowest validation MAE kept. Structures CHGNet cannot convert are
    skipped (counted in the console output). Returns the model."""
    import copy

    import torch
    from chgnet.model import CHGNet

    console = console or Console(stderr=True)
    model = CHGNet.load(verbose=False)

    def graphs(recs):
        out, bad = [], 0
        for r in recs:
            try:
                g = model.graph_converter(_pymatgen(r))
            except Exception:  # noqa: BLE001 - CHGNet's own checks (e.g. isolated atoms)
                bad += 1
                continue
            out.append((g, torch.as_tensor(np.asarray(r["node_targets"][head], float), dtype=torch.float32)))
        return out, bad

    train_g, bad_t = graphs(train_recs)
    val_g, bad_v = graphs(val_recs)
    if bad_t or bad_v:
        console.print(f"CHGNet fine-tuning: {bad_t} training and {bad_v} validation structures rejected by CHGNet")
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = np.random.default_rng(seed)

    def mae(items, train: bool) -> float:
        model.train(train)
        err, count = 0.0, 0
        order = gen.permutation(len(items)) if train else np.arange(len(items))
        for start in range(0, len(items), batch_size):
            chunk = [items[k] for k in order[start:start + batch_size]]
            with torch.set_grad_enabled(train):
                pred = torch.cat(model([g for g, _ in chunk], task="em")["m"])
                true = torch.cat([y for _, y in chunk])
                ok = ~torch.isnan(true)
                loss = (pred[ok] - true[ok]).abs().mean()
                if train:
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            err += float(loss) * int(ok.sum())
            count += int(ok.sum())
        return err / max(count, 1)

    best, best_state = mae(val_g, False), copy.deepcopy(model.state_dict())
    console.print(f"CHGNet fine-tuning on {len(train_g)} structures: zero-shot validation MAE {best:.4f}")
    for epoch in range(1, epochs + 1):
        tl = mae(train_g, True)
        vl = mae(val_g, False)
        console.print(f"CHGNet fine-tuning epoch {epoch}: train MAE {tl:.4f}, validation MAE {vl:.4f}")
        if vl < best:
            best, best_state = vl, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return model


def write_rejected(rejected: list[tuple[str, str]], path: str | Path) -> Path:
    """``id,reason`` CSV of the structures CHGNet rejected."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "reason"])
        w.writerows(rejected)
    return Path(path)


def save_regressor(cfg: RunConfig, kind: str, backbone: str, fits: list[_Fitted], train_recs: list[dict[str, Any]],
                   folder: Path) -> Path:
    """The fitted heads as one :class:`~matgnn.models.regressors.BackboneRegressor` in ``folder`` (with the graph
    settings, targets and training elements a model folder records)."""
    from matgnn.models.regressors import BackboneRegressor
    from matgnn.training.outcome import model_extra

    heads = [{"name": h.name, "level": h.level} for h in cfg.targets]
    model = BackboneRegressor.of(heads, backbone, kind, [f.model if kind == "xgboost" else f.w for f in fits])
    seen = sorted({int(z) for r in train_recs for z in r["z"]})
    return model.save(folder, extra=model_extra(cfg, 0, seen))


def run_baseline(cfg: RunConfig, kind: str, console: Console | None = None, progress: bool = True,
                 max_train_rows: int | None = None, finetune_epochs: int = 3, features: str = "descriptors") -> Path:
    """Fit baseline ``kind`` on the config's training split, score it on val and test;
    returns the run folder (same files as a training run; ``model/`` for linear and xgboost on a backbone's
    features, which predict like any model). ``max_train_rows``:
    fit on a seeded sample of that many rows (atoms or graphs; structures for CHGNet).
    ``features`` (linear, xgboost): ``descriptors`` (hand-built, from the graph) or a pretrained
    backbone's frozen features, ``chgnet`` or ``sevennet``."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; known: {', '.join(FEATURE_SETS)}")
    if features != "descriptors" and kind not in ("linear", "xgboost"):
        raise ValueError(f"--features {features} is for the linear and xgboost baselines, not {kind}")
    from matgnn.packages import require_package

    needs = {"xgboost": "xgboost", "chgnet": "chgnet", "chgnet_finetuned": "chgnet"}
    if kind in needs:  # before any run folder or cache exists
        require_package(needs[kind], f"baseline {kind}")
    if features != "descriptors":
        from matgnn.packages import BACKBONES

        require_package(BACKBONES[features].package, f"--features {features}")
    console = console or Console(stderr=True)
    t_start = time.perf_counter()
    cfg = cfg.model_copy(update={"name": cfg.name or f"{kind}-{'+'.join(h.name for h in cfg.targets)}"})
    run_dir = make_run_dir(cfg)
    cfg.to_yaml(run_dir / "config.yaml")
    console.print(f"baseline {kind}, run folder: {run_dir}")
    cache, _, split = prepare_run_data(cfg, run_dir, console, progress)
    recs = {k: [cache.record(i) for i in v] for k, v in split.items()}
    res = {k: _skeleton(recs[k], cfg.targets) for k in ("val", "test")}
    info: dict[str, Any] = {"kind": kind, "features": features, "max_train_rows": max_train_rows,
                            "finetune_epochs": finetune_epochs if kind == "chgnet_finetuned" else None}
    metrics: dict[str, Any] = {"n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
                               "n_skipped": len(cache.report.skipped)}
    if kind.startswith("chgnet"):
        node = [h for h in cfg.targets if h.level == "node"]
        if len(node) != 1 or len(cfg.targets) != 1:
            raise ValueError("the chgnet baselines predict magnetic moments: give exactly one node-level head "
                             "(e.g. magmom, |m| in μB)")
        model = None
        if kind == "chgnet_finetuned":
            train_recs = recs["train"]
            if max_train_rows and len(train_recs) > max_train_rows:  # rows = structures here
                pick = np.sort(np.random.default_rng(cfg.train.seed).choice(len(train_recs), max_train_rows, replace=False))
                train_recs = [train_recs[k] for k in pick]
                console.print(f"CHGNet fine-tuning on a seeded sample of {max_train_rows} training structures")
            t0 = time.perf_counter()
            model = chgnet_finetune(train_recs, recs["val"], node[0].name, epochs=finetune_epochs,
                                    seed=cfg.train.seed, console=console)
            metrics["finetune_seconds"] = time.perf_counter() - t0
            metrics["finetune_structures"] = len(train_recs)
        for part in ("val", "test"):
            moms, rejected, secs = chgnet_magmoms(recs[part], model=model)
            res[part]["heads"][node[0].name]["pred"] = np.concatenate(
                [m if m is not None else np.full(len(r["z"]), np.nan) for m, r in zip(moms, recs[part])]) \
                if recs[part] else np.zeros(0)
            metrics[f"{part}.chgnet_rejected"] = len(rejected)
            metrics[f"{part}.structures_per_s"] = (len(recs[part]) - len(rejected)) / max(secs, 1e-9)
            write_rejected(rejected, run_dir / f"chgnet_rejected_{part}.csv")
            if rejected:
                console.print(f"CHGNet rejected {len(rejected)} {part} structures (listed in chgnet_rejected_{part}.csv); "
                              "they are scored without them")
            # score only the structures CHGNet predicted: NaN predictions are left out of the metrics
            pred, true = res[part]["heads"][node[0].name]["pred"], res[part]["heads"][node[0].name]["true"]
            true[np.isnan(pred)] = np.nan
    else:
        if features == "descriptors":
            space = DescriptorSpace(z for r in recs["train"] for z in r["z"])
            info["descriptor_columns"] = space.names()
        else:
            space = BackboneSpace(features)
            t0 = time.perf_counter()
            # the structures of this run the backbone refused (the store's own list spans the whole process)
            refused = space.prefetch([r for part in ("train", "val", "test") for r in recs[part]])
            metrics[f"{features}_feature_seconds"] = time.perf_counter() - t0
            metrics[f"{features}_rejected"] = len(refused)
            info["descriptor_columns"] = {"node": space.names(), "graph": space.graph_names()}
            info["backbone"] = {"name": features, "version": space.store.version, "rejected": sorted(refused)}
            if refused:  # zero features answer nothing: left out of the fit and the scores, and said
                recs = {k: [r for r in v if r["id"] not in refused] for k, v in recs.items()}
                res = {k: _skeleton(recs[k], cfg.targets) for k in ("val", "test")}
                console.print(f"{len(refused)} structures refused by the backbone are left out of the fit and the "
                              f"scores (listed in baseline.json): {', '.join(sorted(refused)[:5])}"
                              f"{', ...' if len(refused) > 5 else ''}")
        fits = []
        for h in cfg.targets:
            t0 = time.perf_counter()
            fitted = _Fitted(kind, h, space, recs["train"], recs["val"], max_train_rows, cfg.train.seed, console)
            fits.append(fitted)
            metrics[f"{h.name}.fit_seconds"] = time.perf_counter() - t0
            metrics[f"{h.name}.fit_rows"] = fitted.n_rows
            for part in ("val", "test"):
                t0 = time.perf_counter()
                res[part]["heads"][h.name]["pred"] = np.asarray(fitted.predict(recs[part]), float)
                metrics[f"{part}.structures_per_s"] = len(recs[part]) / max(time.perf_counter() - t0, 1e-9)
        if features != "descriptors":  # a model folder: predict, ensembles, reference fallbacks use it
            save_regressor(cfg, kind, features, fits, recs["train"], run_dir / "model")
            info["model"] = "model"
        else:
            info["model"] = None  # hand-built descriptors need the training elements' columns: scored, not saved
    for part in ("val", "test"):
        if recs[part]:
            metrics.update(evaluate_predictions(res[part], cfg.targets, run_dir, part, evaluation=cfg.evaluation))
    metrics["wall_seconds"] = time.perf_counter() - t_start
    (run_dir / "baseline.json").write_text(json.dumps(info, indent=1))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    for h in cfg.targets:
        key = f"test.{h.name}.mae"
        if key in metrics:
            console.print(f"{kind} test {h.name}: MAE {metrics[key]:.4g} (n={metrics[f'test.{h.name}.count']})")
    return run_dir


__all__ = ["BASELINES", "chgnet_magmoms", "run_baseline"]
