"""Per-atom magnetic moments |m| (μB) of Materials Project structures (../shared/data/mp_magmoms):
our node-level GNN against the per-element mean, ridge regression and XGBoost on hand-built
per-atom descriptors, and CHGNet 0.3.0 zero-shot, on one composition-grouped split (seeded 80/10/10,
all entries of a reduced formula on one side).

- Our model ("ours.*" in the results): without ``--model``, a CGCNN trunk (width 128, 3 layers, cutoff
  6 Å, 12 neighbours) with a per-atom head that learns the residual to the per-element mean
  (``baseline: element_mean``), trained here through ``matgnn.training.run.train`` (the code path of
  ``matgnn train``); with ``--model RUN``, that run (its architecture is in ``model_config``, its
  training stages — epochs, time, device — in ``model_stages``).
- Baselines through ``matgnn.baselines.run_baseline`` (the code path of ``matgnn baseline``).
- CHGNet is slow on CPU, so it is scored on a seeded sample of the test structures
  (``--chgnet-test``), zero-shot and fine-tuned on a seeded sample of our training structures
  (``--finetune-structures``, ``--finetune-epochs``); every method's MAE is also reported on exactly
  that sample.
- Inference speed: test structures per second, our model (batches of 64, CPU) and CHGNet
  (batches of 16, its own graph conversion included), on the same CPU.
- ``--limit N`` takes the first N entries of the file (2 cores cannot train on all 47,628 in an hour);
  ``--sizes`` adds a learning curve over training-set size.

Writes benchmarks/results/mp_magmom.json.
- ``--model RUN``: score a model trained elsewhere (e.g. on all 47,628 entries, streamed — see
  ``benchmarks/configs/magmom_pna.yaml`` and ``magmom_pna_continue.yaml``) on its own split; the baselines use its split and
  graphs, the learning-curve runs its config with fewer training structures.

Usage: python benchmarks/mp_magmom.py [--limit 12000] [--epochs 30] [--sizes 2000,5000] [--chgnet-test 300]
       [--model RUN]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, SHARED_DATA, UNKNOWN, target, write_result  # noqa: E402
from rich.console import Console  # noqa: E402

from matgnn import pretrained  # noqa: E402
from matgnn.artifacts import ENSEMBLE_FILE, ensemble_members, lineage  # noqa: E402
from matgnn.baselines import run_baseline  # noqa: E402
from matgnn.baselines.run import chgnet_finetune, chgnet_magmoms, write_rejected  # noqa: E402
from matgnn.config import RunConfig  # noqa: E402
from matgnn.data.sources import make_source  # noqa: E402
from matgnn.data.structure import Structure  # noqa: E402
from matgnn.evaluation.scoring import evaluate_split  # noqa: E402
from matgnn.graphs.batching import make_loader  # noqa: E402
from matgnn.graphs.cache import build_graph_cache  # noqa: E402
from matgnn.graphs.packed import PackedGraphs  # noqa: E402
from matgnn.models import load_model  # noqa: E402
from matgnn.prediction.predict import Predictor, graph_settings_of, predict_structures  # noqa: E402
from matgnn.training.run import prepare_run_data, train  # noqa: E402

OUT = ROOT / "benchmarks" / "runs" / "mp_magmom"
EXCLUDE = ["V", "Cr", "Mn"]


#: with --model: the config the model was trained with (its graphs, architecture and source)
MODEL_CFG: RunConfig | None = None


def base_cfg(limit: int | None, epochs: int, name: str, split: dict | None = None) -> RunConfig:
    if MODEL_CFG is not None:
        return MODEL_CFG.model_copy(update={
            "train": MODEL_CFG.train.model_copy(update={"epochs": epochs, "patience": epochs}),
            "split": RunConfig.model_validate({"split": split}).split if split else MODEL_CFG.split,
            "transfer": type(MODEL_CFG.transfer)(), "output_dir": str(OUT), "name": name})
    return RunConfig.model_validate({
        "source": {"kind": "magmoms", "path": str(SHARED_DATA / "mp_magmoms" / "mp_magmoms.jsonl.gz"), "limit": limit},
        "graphs": {"cutoff": 6.0, "max_neighbors": 12},
        "targets": [{"name": "magmom", "level": "node", "loss": "l1", "baseline": "element_mean"}],
        "model": {"name": "cgcnn", "hidden": 128, "layers": 3},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "scheduler": "onecycle", "patience": epochs,
                  "tensorboard": False},
        "split": split or {"kind": "grouped", "train": 0.8, "val": 0.1, "seed": 42},
        "evaluation": {"exclude_elements": EXCLUDE},
        "output_dir": str(OUT), "name": name,
    })


class MeanOf(torch.nn.Module):
    """An ensemble's mean as a model (what evaluation scores)."""

    def __init__(self, ens: Predictor) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(ens.members)
        self.ens, self.head_specs = ens, ens.head_specs

    def forward(self, batch):  # noqa: ANN001, ANN201
        return {k: mean for k, (mean, _) in self.ens(batch).items()}


def score_shipped(name: str):
    """A shipped model scored on its test split, re-derived from its training config: the run-folder
    stand-in (with predictions_test_atoms.csv), its members, test metrics and the split by id."""
    global MODEL_CFG
    folder = pretrained.model_path(name)
    members = ensemble_members(folder)[0] if (folder / ENSEMBLE_FILE).is_file() else [folder]
    cfg = RunConfig.from_yaml(members[0] / "training_config.yaml")
    MODEL_CFG = cfg.model_copy(update={"transfer": type(cfg.transfer)(), "delta": type(cfg.delta)()})
    for mem in members[1:]:  # members must share the split: same source, graphs and split settings
        other = RunConfig.from_yaml(mem / "training_config.yaml")
        if (other.source, other.split, other.graphs) != (cfg.source, cfg.split, cfg.graphs):
            raise SystemExit(f"{mem}: trained on another source/split/graphs than {members[0]}")
    out = OUT / f"shipped-{name}"
    out.mkdir(parents=True, exist_ok=True)
    cache, _, pos = prepare_run_data(MODEL_CFG, out, Console(stderr=True), progress=False)
    split = {k: [cache.ids[i] for i in v] for k, v in pos.items()}
    graphs = PackedGraphs(cache, pos["test"], [], [h.name for h in MODEL_CFG.targets if h.level == "node"])
    metrics = evaluate_split(MeanOf(Predictor([folder])), make_loader(graphs, 64), MODEL_CFG.targets, out, "test",
                             plots=False, evaluation=MODEL_CFG.evaluation)
    metrics.update(n_train=len(pos["train"]), n_test=len(pos["test"]))
    return out, members, metrics, split


def describe_model(args, members) -> str:  # noqa: ANN001
    if args.shipped:
        return f"shipped {args.shipped} ({len(members)} member(s); training stages: its model card, not re-measured)"
    if not args.model:
        return f"trained here, {args.epochs} epochs"
    if len(members) > 1:
        return (f"{args.model}: the mean of {len(members)} models trained on the same split "
                "(ensemble.json lists them; their stages are in model_stages)")
    return (f"{args.model} (trained by its config.yaml"
            + (f", continued from {MODEL_CFG.transfer.from_model}" if MODEL_CFG.transfer.from_model else "") + ")")


def atom_rows(run) -> dict[str, list[tuple[float, float]]]:
    """(true, pred) per atom of each test structure of a run folder."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in csv.DictReader(open(run / "predictions_test_atoms.csv")):
        out.setdefault(r["id"], []).append((float(r["magmom_true"]), float(r["magmom_pred"])))
    return out


def mae_on(rows: dict[str, list[tuple[float, float]]], ids: list[str]) -> float:
    pairs = np.array([p for i in ids for p in rows[i] if not np.isnan(p[0])])
    return float(np.abs(pairs[:, 1] - pairs[:, 0]).mean())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--limit", type=int, default=12000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--sizes", default="2000,5000")
    p.add_argument("--chgnet-test", type=int, default=300)
    p.add_argument("--max-train-rows", type=int, default=300_000)
    p.add_argument("--finetune-structures", type=int, default=400)
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--model", help="score this trained run folder (its config, graphs and split) instead of "
                                   "training one; --limit and --epochs then only shape the learning-curve runs")
    p.add_argument("--shipped", help="score this shipped model (e.g. magmom-mp-ensemble) from its own folder: the "
                                     "split is re-derived from its training_config.yaml (source, graphs and seeded "
                                     "split), so a fresh clone reproduces the figures")
    args = p.parse_args()
    global MODEL_CFG
    started = time.time()
    limit = args.limit or None
    metrics: dict[str, float] = {}
    runs: dict[str, str] = {}

    if args.shipped:
        ours, members, m, split = score_shipped(args.shipped)
        limit = MODEL_CFG.source.limit
        metrics["ours.members"] = len(members)
    elif args.model:
        ours = Path(args.model).resolve()
        MODEL_CFG = RunConfig.from_yaml(ours / "config.yaml")
        limit = MODEL_CFG.source.limit
        m = json.loads((ours / "metrics.json").read_text())
        # an ensemble folder (``matgnn ensemble --combine``) stands for its members, each with its stages
        members = ensemble_members(ours)[0] if (ours / ENSEMBLE_FILE).is_file() else [ours]
        first = json.loads((members[0] / "metrics.json").read_text())
        m = {**m, "n_train": first["n_train"], "n_test": first["n_test"]}
        stages = [(r, sm) for member in members for r, _, sm in lineage(member, [ROOT / "runs", ROOT / "benchmarks" / "runs"])]
        metrics["ours.members"] = len(members)
        metrics["ours.train_wall_s"] = sum(sm["train_seconds"] for _, sm in stages)
        metrics["ours.epochs"] = sum(sm["epochs_run"] for _, sm in stages)
    else:  # our model on the full (limited) training split
        t0 = time.perf_counter()
        ours = train(base_cfg(limit, args.epochs, "cgcnn-magmom"), progress=False)
        metrics["ours.train_wall_s"] = time.perf_counter() - t0
        m = json.loads((ours / "metrics.json").read_text())
        members = [ours]
    runs["ours"] = str(ours.relative_to(ROOT)) if ours.is_relative_to(ROOT) else str(ours)
    for key in ("mae", "r2", "count"):
        metrics[f"ours.test_{key}"] = m[f"test.magmom.{key}"]
    metrics["ours.test_mae_without_V-Cr-Mn"] = m["test.magmom.without_V-Cr-Mn.mae"]
    metrics["n_train"], metrics["n_test"] = m["n_train"], m["n_test"]
    if not args.shipped:
        split = json.loads((members[0] / "split.json").read_text())

    # inference speed of our model on the test structures, from atoms to moments (neighbour lists,
    # featurisation and batching included, as CHGNet's own graph conversion is in its figure)
    cfg = base_cfg(limit, args.epochs, "speed")
    cache = build_graph_cache(make_source(cfg.source), cfg.graphs, progress=False)
    where = {sid: k for k, sid in enumerate(cache.ids)}
    test_pos = [where[i] for i in split["test"]]
    structures = [Structure(r["id"], np.asarray(r["z"]), r["pos"], r["cell"], np.asarray(r["pbc"], bool), {}, {})
                  for r in (cache.record(k) for k in test_pos)]
    model = (Predictor([pretrained.model_path(args.shipped)]) if args.shipped else
             Predictor([ours]) if (ours / ENSEMBLE_FILE).is_file() else load_model(ours))
    t0 = time.perf_counter()
    n_pred = sum(1 for _ in predict_structures(
        model, structures, model.settings if isinstance(model, Predictor) else graph_settings_of(ours)))
    metrics["ours.inference_structures_per_s"] = n_pred / (time.perf_counter() - t0)

    # baselines on the same split (saved split ids → kind: ids)
    split_file = OUT / "split.json"
    split_file.write_text(json.dumps({k: split[k] for k in ("train", "val", "test")}))
    ids_split = {"kind": "ids", "ids_file": str(split_file)}
    rows = {"ours": atom_rows(ours)}
    for kind in ("element_mean", "linear", "xgboost"):
        run = run_baseline(base_cfg(limit, args.epochs, kind, ids_split), kind, progress=False,
                           max_train_rows=args.max_train_rows if kind == "xgboost" else None)
        runs[kind] = str(run.relative_to(ROOT))
        bm = json.loads((run / "metrics.json").read_text())
        metrics[f"{kind}.test_mae"] = bm["test.magmom.mae"]
        metrics[f"{kind}.test_mae_without_V-Cr-Mn"] = bm["test.magmom.without_V-Cr-Mn.mae"]
        rows[kind] = atom_rows(run)

    # CHGNet zero-shot on a seeded sample of the test structures; everyone scored on that sample
    rng = np.random.default_rng(0)
    sample = sorted(rng.choice(len(test_pos), min(args.chgnet_test, len(test_pos)), replace=False).tolist())
    recs = [cache.record(test_pos[k]) for k in sample]
    torch.set_num_threads(os.cpu_count() or 1)
    moms, rejected, secs = chgnet_magmoms(recs)
    ok = [(r, mm) for r, mm in zip(recs, moms) if mm is not None]
    pairs = np.concatenate([np.c_[np.asarray(r["node_targets"]["magmom"], float), mm] for r, mm in ok])
    pairs = pairs[~np.isnan(pairs[:, 0])]
    metrics["chgnet_zero_shot.sample_mae"] = float(np.abs(pairs[:, 1] - pairs[:, 0]).mean())
    metrics["chgnet_zero_shot.inference_structures_per_s"] = len(ok) / secs
    metrics["chgnet_zero_shot.rejected"] = len(rejected)
    metrics["chgnet_sample.n_structures"] = len(ok)
    sample_ids = [r["id"] for r, _ in ok]
    for k, r in rows.items():
        metrics[f"{k}.sample_mae"] = mae_on(r, sample_ids)
    # CHGNet fine-tuned on a seeded sample of our training structures, scored on the same sample
    train_pos = [where[i] for i in split["train"]]
    pick = np.sort(np.random.default_rng(1).choice(len(train_pos), min(args.finetune_structures, len(train_pos)),
                                                   replace=False))
    val_pick = [where[i] for i in split["val"][: args.chgnet_test]]
    t0 = time.perf_counter()
    tuned = chgnet_finetune([cache.record(train_pos[k]) for k in pick], [cache.record(k) for k in val_pick], "magmom",
                            epochs=args.finetune_epochs)
    metrics["chgnet_finetuned.finetune_seconds"] = time.perf_counter() - t0
    moms_ft, _, _ = chgnet_magmoms([r for r, _ in ok], model=tuned)
    pairs = np.concatenate([np.c_[np.asarray(r["node_targets"]["magmom"], float), mm] for (r, _), mm in zip(ok, moms_ft)
                            if mm is not None])
    pairs = pairs[~np.isnan(pairs[:, 0])]
    metrics["chgnet_finetuned.sample_mae"] = float(np.abs(pairs[:, 1] - pairs[:, 0]).mean())
    write_rejected(rejected, OUT / "chgnet_rejected.csv")
    metrics["ours.speedup_vs_chgnet"] = (metrics["ours.inference_structures_per_s"]
                                          / metrics["chgnet_zero_shot.inference_structures_per_s"])

    # learning curve over training-set size (same epochs, same val/test)
    for n in [int(x) for x in args.sizes.split(",") if x]:
        if n >= len(split["train"]):
            continue
        sub = dict({k: split[k] for k in ("val", "test")},
                   train=sorted(np.random.default_rng(42).choice(split["train"], n, replace=False).tolist()))
        f = OUT / f"split_{n}.json"
        f.write_text(json.dumps(sub))
        run = train(base_cfg(limit, args.epochs, f"cgcnn-n{n}", {"kind": "ids", "ids_file": str(f)}), progress=False)
        metrics[f"ours.n{n}.test_mae"] = json.loads((run / "metrics.json").read_text())["test.magmom.mae"]
        runs[f"ours.n{n}"] = str(run.relative_to(ROOT))

    write_result(
        "mp_magmom", started,
        data={"source": "mp_magmoms (Materials Project per-atom |m|)", "limit": limit,
              "model": describe_model(args, members),
              "model_config": {"graphs": cfg.graphs.model_dump(), "model": cfg.model.model_dump()}
              if len(members) == 1 else
              {"graphs": cfg.graphs.model_dump(),
               "members": [RunConfig.from_yaml(r / ("training_config.yaml" if args.shipped else "config.yaml")
                                               ).model.model_dump() for r in members]},
              "model_stages": [{"run": str(r.relative_to(ROOT)) if r.is_relative_to(ROOT) else str(r),
                                "epochs": sm["epochs_run"], "train_seconds": round(sm["train_seconds"], 1),
                                "device": sm.get("device", UNKNOWN),
                                "test_mae": sm["test.magmom.mae"]} for r, sm in stages] if args.model else None,
              "split": "composition-grouped 80/10/10, seed 42", "exclusion_set": EXCLUDE,
              "chgnet_sample": f"{len(ok)} test structures (seed 0)", "epochs": args.epochs,
              "xgboost_max_train_rows": args.max_train_rows, "runs": runs,
              "chgnet_finetune": f"{args.finetune_structures} training structures (seed 1), {args.finetune_epochs} epochs, "
                                 "L1 on |m|, AdamW lr 1e-4, all weights; best validation epoch kept",
              "mptrj_overlap": "CHGNet 0.3.0 was trained on MPtrj, which contains Materials Project structures, "
                               "including these test structures: its zero-shot and fine-tuned figures are not "
                               "held-out results"},
        metrics=metrics,
        anchors={"predict_zero.mae_300_sample": 0.454, "element_mean.mae_300_sample": 0.235,
                 "chgnet_zero_shot.mae_300_sample": 0.140, "chgnet_zero_shot.structures_per_s": 13},
        targets={"ours.test_mae": target(0.10, "<=", metrics["ours.test_mae"]),
                 "ours_below_chgnet_zero_shot_on_sample": target(metrics["chgnet_zero_shot.sample_mae"], "<=",
                                                                  metrics["ours.sample_mae"]),
                 "ours_below_chgnet_finetuned_on_sample": target(metrics["chgnet_finetuned.sample_mae"], "<=",
                                                                  metrics["ours.sample_mae"]),
                 "ours.speedup_vs_chgnet": target(10.0, ">=", metrics["ours.speedup_vs_chgnet"])},
    )


if __name__ == "__main__":
    main()
