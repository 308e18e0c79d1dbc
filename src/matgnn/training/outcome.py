"""What a finished run leaves: the model (and, for delta learning, the residual model with the
base's hash), ``transfer.json`` for transfer runs, the learning curve, predictions, per-element
tables and plots of the validation and test splits, and ``metrics.json``."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from rich.console import Console

from matgnn.artifacts import RunFolder, fingerprint
from matgnn.config import RunConfig
from matgnn.evaluation.metrics import regression_metrics
from matgnn.evaluation.plots import learning_curve
from matgnn.evaluation.scoring import flat, predict_dataset, score_predictions
from matgnn.models.base import value_names
from matgnn.training import transfer
from matgnn.training.data import SplitGraphs
from matgnn.training.model_setup import RunModel
from matgnn.training.trainer import Trainer


def model_extra(cfg: RunConfig, epoch: int, train_elements: list[int] | None = None) -> dict[str, Any]:
    """Saved next to the weights so a model folder alone can featurise new structures (and
    flag predictions for elements absent from its training split)."""
    extra = {"epoch": epoch, "graphs": cfg.graphs.model_dump(), "targets": [h.model_dump() for h in cfg.targets]}
    if train_elements is not None:
        extra["train_elements"] = train_elements
    return extra


def describe_device(device: torch.device) -> str:
    """Where a run trained, for its metrics and model card: the GPU's name, or CPU threads."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    policy = os.environ.get("OMP_WAIT_POLICY")
    return (f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores"
            + (f", OMP_WAIT_POLICY={policy}" if policy else "") + ")")


def save_models(cfg: RunConfig, folder: RunFolder, run: RunModel, best_epoch: int, seen_z: list[int],
                device: torch.device) -> torch.nn.Module:
    """The run's model folder (for delta learning: base + residual model, with ``delta.json``
    naming the base by hash); returns the model the run is scored with."""
    model = run.model
    if run.base is not None:
        from matgnn.models.delta import DeltaModel

        model = DeltaModel.of(run.base.cpu(), run.model.cpu()).to(device)
        run.model.save(folder.delta_model, extra=model_extra(cfg, best_epoch, seen_z))
        base_dir = transfer.model_dir(cfg.delta.base_model)
        folder.write_json("delta.json", {"base_model": cfg.delta.base_model, "base_dir": str(base_dir),
                                         "base_sha256": fingerprint(base_dir)})
    model.save(folder.model, extra=model_extra(cfg, best_epoch, seen_z))
    return model


def score_run(cfg: RunConfig, folder: RunFolder, run: RunModel, model: torch.nn.Module, trainer: Trainer,
              data: SplitGraphs, metrics: dict[str, Any], started: float, console: Console) -> dict[str, Any]:
    """Learning curve, ``transfer.json``, the base's and the model's scores on validation and test
    (each graph once), ``metrics.json``; the test metrics printed."""
    learning_curve(trainer.history, folder.path / "learning_curve.png")
    if run.transfer_info is not None:  # which parts moved: ‖Δw‖/‖w‖ per layer group
        shift = transfer.weight_shift(run.initial, model)
        metrics.update({f"transfer.weight_shift.{g}": v for g, v in shift.items()})
        folder.write_json("transfer.json", {**run.transfer_info, "freeze": cfg.transfer.freeze,
                                            "frozen_groups": run.frozen, "weight_shift": shift,
                                            "keep_heads": cfg.transfer.keep_heads})
    bs = cfg.train.batch_size
    for k in ("val", "test"):
        if run.base is not None and len(data.graphs[k]):
            res = predict_dataset(run.base, data.loader(k, bs))
            for h in cfg.targets:
                metrics.update({f"base.{k}.{h.name}.{key}": v for key, v in
                                regression_metrics(res["heads"][h.name]["true"], res["heads"][h.name]["pred"]).items()})
    scores = {}
    for k in ("val", "test"):
        if len(data.graphs[k]):  # the final evaluation sees every graph once, on rank 0
            scores[k] = score_predictions(predict_dataset(model, data.loader(k, bs)), cfg.targets, folder.path, k,
                                          evaluation=cfg.evaluation)
            metrics.update(flat(k, scores[k]))
    metrics["wall_seconds"] = time.perf_counter() - started
    metrics["scores"] = scores  # the same numbers structured: split -> head (or head.component) -> metric
    folder.write_json("metrics.json", metrics)
    for name in (n for h in cfg.targets for n in value_names(h.spec())):
        key = f"test.{name}.mae"
        if key in metrics:
            console.print(f"test {name}: MAE {metrics[key]:.4g}, RMSE {metrics[f'test.{name}.rmse']:.4g}, "
                          f"R² {metrics[f'test.{name}.r2']:.3f} (n={metrics[f'test.{name}.count']})")
    rate = metrics.get("train_structures_per_s")
    console.print(f"done in {metrics['wall_seconds']:.0f} s"
                  + (f" ({rate:.3g} training structures/s)" if isinstance(rate, (int, float)) else "")
                  + f" → {folder.path}")
    return metrics
