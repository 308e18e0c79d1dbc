"""Per-atom magnetic moments |m| (μB) from a pretrained backbone's frozen features, against the shipped
``magmom-mp`` and CHGNet 0.3.0 zero-shot, in distribution and out of it.

- Split: the shipped ``magmom-mp``'s own (its ``training_config.yaml``: all 47,628 MP magnetic ground
  states, composition-grouped 80/10/10, seed 42), re-derived, so every model is scored on the same
  4,713 test structures.
- Backbone model (``backbone.*``): ``model: {name: chgnet}`` (or ``sevennet``) — the backbone's frozen
  per-atom features, computed once per structure and cached (``--shards`` processes), feed our per-atom
  MLP and node head with the per-element-mean baseline, trained through ``matgnn.training.run.train``
  (the code path of ``matgnn train``).
- ``backbone_prior.*`` (chgnet only): the same model with ``baseline: backbone`` — the head learns the
  residual to CHGNet's own zero-shot moment of each atom (its magmom head on the cached features), and an
  atom of an element the training set never labelled gets CHGNet's answer unchanged.
- ``magmom_mp.*``, ``magmom_mp_ensemble.*``: the shipped models, scored as shipped.
- ``mean_backbone_magmom_mp.*``: a matgnn ensemble (``predictions.Predictor``, the code path of
  ``matgnn predict`` with several models) of the backbone model and ``magmom-mp``.
- ``chgnet_zero_shot.*``: CHGNet 0.3.0's own magmom head on every test structure (the structures it
  rejects are listed and left out of every method's ``*.common_mae``).
- Slices (``slice.<family>.<method>.mae``): per-site MAE by the site's element family (3d, 4d, 5d
  transition metals, lanthanides, actinides, other), so a model that loses to CHGNet zero-shot
  somewhere shows where.
- Out of distribution (``ood.*``): whole element families held out of training — every training and
  validation structure that contains a lanthanide (or ``--ood-family``) is dropped, the backbone models
  (``--ood-models``) and a CGCNN (the trunk of ``mp_magmom.py``, ``--ood-gnn-epochs``) are trained on the rest and scored
  on the test structures that contain one, beside CHGNet zero-shot and the same architectures trained
  with the family (same budget).

CHGNet and SevenNet were trained on MPtrj, which contains Materials Project structures — these test
structures among them: the backbone and zero-shot figures are not a clean held-out test.

Usage: python benchmarks/magmom_backbone.py [--backbone chgnet] [--epochs 30] [--shards 2]
       [--ood-family lanthanides] [--ood-gnn-epochs 8] [--ood-models backbone,backbone_prior,cgcnn] [--skip-ood]
Writes benchmarks/results/magmom_backbone.json (or --result NAME).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, target, write_result  # noqa: E402
from mp_magmom import MeanOf  # noqa: E402
from rich.console import Console  # noqa: E402

from matgnn import pretrained  # noqa: E402
from matgnn.config import RunConfig  # noqa: E402
from matgnn.evaluation.scoring import evaluate_split  # noqa: E402
from matgnn.graphs.batching import make_loader  # noqa: E402
from matgnn.graphs.packed import PackedGraphs  # noqa: E402
from matgnn.models.base import batch_fields_of  # noqa: E402
from matgnn.prediction.predict import Predictor  # noqa: E402
from matgnn.training.run import prepare_run_data, train  # noqa: E402

OUT = ROOT / "benchmarks" / "runs" / "magmom_backbone"
FAMILIES = {
    "3d": set(range(21, 31)), "4d": set(range(39, 49)), "5d": {57} | set(range(72, 81)),
    "lanthanides": set(range(58, 72)), "actinides": set(range(89, 104)),
}
BACKBONE_TRAIN = {"epochs": 30, "batch_size": 64, "lr": 0.002, "weight_decay": 1e-5, "scheduler": "onecycle",
                  "patience": 1000, "tensorboard": False, "in_memory": True}
GNN = {"name": "cgcnn", "hidden": 128, "layers": 3}


def family_of(z: int) -> str:
    return next((name for name, zs in FAMILIES.items() if z in zs), "other")


#: --limit: the first N structures only (a quick check of the script; not the benchmark's split)
LIMIT: int | None = None


def shipped_cfg() -> RunConfig:
    cfg = RunConfig.from_yaml(pretrained.model_path("magmom-mp") / "training_config.yaml")
    return cfg.model_copy(update={"transfer": type(cfg.transfer)(), "delta": type(cfg.delta)(), "output_dir": str(OUT),
                                  "source": cfg.source.model_copy(update={"limit": LIMIT})})


def backbone_cfg(base: RunConfig, backbone: str, epochs: int, name: str, split: dict | None = None,
                 model: dict | None = None, train_cfg: dict | None = None, baseline: str | None = None) -> RunConfig:
    d = json.loads(base.model_dump_json())
    if baseline:
        d["targets"] = [{**t, "baseline": baseline} for t in d["targets"]]
    d["model"] = model or {"name": backbone, "hidden": 256, "layers": 3, "dropout": 0.0}
    d["train"] = {**(train_cfg or BACKBONE_TRAIN), "epochs": epochs, "threads": 1}
    if split:
        d["split"] = split
    d["name"] = name
    return RunConfig.model_validate(d)


def feature_shard(backbone: str, shard: int, shards: int) -> None:
    """Compute (and cache) the backbone's features of every shard-th structure."""
    from matgnn.graphs.backbone_features import record_structure
    from matgnn.models.backbones import feature_store as backbone_features

    torch.set_num_threads(1)
    cache, _, _ = prepare_run_data(shipped_cfg(), OUT / f"shard{shard}", Console(stderr=True, quiet=True), progress=False)
    store = backbone_features(backbone)
    todo = list(range(shard, len(cache), shards))
    t0 = time.time()
    for start in range(0, len(todo), 32):
        store.features([record_structure(cache.record(i)) for i in todo[start:start + 32]])
        store._memo.clear()  # noqa: SLF001 - only the disk cache is wanted here
        if start % 2048 == 0:
            print(f"shard {shard}: {start + 32}/{len(todo)} in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    (OUT / f"shard{shard}.done").write_text(json.dumps({"seconds": time.time() - t0, "n": len(todo),
                                                        "rejected": sorted(store.rejected)}))


def zero_shot(out_csv: Path) -> None:
    """CHGNet 0.3.0 zero-shot |m| of every test structure, one row per site."""
    from matgnn.baselines.run import chgnet_magmoms

    torch.set_num_threads(1)
    cache, _, pos = prepare_run_data(shipped_cfg(), OUT / "zero_shot", Console(stderr=True, quiet=True), progress=False)
    recs = [cache.record(i) for i in pos["test"]]
    moms, rejected, secs = chgnet_magmoms(recs)
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "site", "magmom_pred"])
        for r, m in zip(recs, moms):
            for k, v in enumerate(m if m is not None else []):
                w.writerow([r["id"], k, float(v)])
    (out_csv.with_suffix(".json")).write_text(json.dumps({"seconds": secs, "structures": len(recs),
                                                          "rejected": rejected}))


def predict_test(paths: list[Path], cfg: RunConfig, cache, test: list[int], out: Path) -> dict:  # noqa: ANN001
    """Score saved model folders (one, or their mean) on the test structures; per-site rows in ``out``."""
    ens = Predictor(paths)
    out.mkdir(parents=True, exist_ok=True)
    graphs = PackedGraphs(cache, test, [], ["magmom"], extras=batch_fields_of(*ens.members))
    return evaluate_split(MeanOf(ens), make_loader(graphs, 64), cfg.targets, out, "test", plots=False,
                          evaluation=cfg.evaluation)


def train_quietly(cfg: RunConfig) -> Path:
    """One training run in a worker process (one thread; the backbone features come from the disk cache)."""
    torch.set_num_threads(1)
    return train(cfg, Console(stderr=True, quiet=True), progress=False)


def site_table(folder: Path) -> dict[tuple[str, int], tuple[float, float]]:
    rows, seen = {}, {}
    for r in csv.DictReader(open(folder / "predictions_test_atoms.csv")):
        k = seen.get(r["id"], 0)
        seen[r["id"]] = k + 1
        rows[(r["id"], k)] = (float(r["magmom_true"]), float(r["magmom_pred"]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="chgnet", choices=["chgnet", "sevennet"])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--ood-family", default="lanthanides", choices=sorted(FAMILIES))
    p.add_argument("--ood-gnn-epochs", type=int, default=8)
    p.add_argument("--ood-train", type=int, default=10000,
                   help="training structures of each held-out-family run (the same number with and without it)")
    p.add_argument("--ood-models", default="backbone,backbone_prior,cgcnn",
                   help="models trained with and without the held-out family")
    p.add_argument("--skip-ood", action="store_true")
    p.add_argument("--result", default="magmom_backbone")
    p.add_argument("--limit", type=int, help="the first N structures only: a quick check, not the benchmark")
    p.add_argument("--feature-shard", type=int, help=argparse.SUPPRESS)
    p.add_argument("--zero-shot", help=argparse.SUPPRESS)
    args = p.parse_args()
    global LIMIT
    LIMIT = args.limit
    OUT.mkdir(parents=True, exist_ok=True)
    if args.feature_shard is not None:
        return feature_shard(args.backbone, args.feature_shard, args.shards)
    if args.zero_shot:
        return zero_shot(Path(args.zero_shot))

    started = time.time()
    console = Console(stderr=True)
    base = shipped_cfg()
    cache, _, pos = prepare_run_data(base, OUT / "data", console, progress=False)
    ids = cache.ids
    metrics: dict[str, float] = {"n_train": len(pos["train"]), "n_val": len(pos["val"]), "n_test": len(pos["test"])}
    notes: dict[str, object] = {}

    # 1. the backbone's features of every structure, in --shards processes (cached on disk)
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    me = [sys.executable, __file__, "--backbone", args.backbone, "--shards", str(args.shards),
          *(["--limit", str(args.limit)] if args.limit else [])]
    procs = [subprocess.Popen([*me, "--feature-shard", str(k)], env=env) for k in range(args.shards)]
    if any(proc.wait() for proc in procs):
        raise SystemExit("a feature shard failed")
    shard_info = [json.loads((OUT / f"shard{k}.done").read_text()) for k in range(args.shards)]
    metrics["backbone.feature_seconds"] = time.time() - t0
    metrics["backbone.feature_structures_per_s"] = len(ids) / metrics["backbone.feature_seconds"]
    notes["backbone_rejected"] = sorted({i for s in shard_info for i in s["rejected"]})

    # 2. CHGNet zero-shot on the test set (one process) while the backbone models train (--shards at once)
    zs_csv = OUT / "chgnet_zero_shot_test.csv"
    zs = subprocess.Popen([*me, "--zero-shot", str(zs_csv)], env=env)
    variants = {"backbone": None, **({"backbone_prior": "backbone"} if args.backbone == "chgnet" else {})}
    cfgs = [backbone_cfg(base, args.backbone, args.epochs, f"{args.backbone}-magmom" + ("-prior" if b else ""),
                         baseline=b) for b in variants.values()]
    with ProcessPoolExecutor(max_workers=args.shards, mp_context=multiprocessing.get_context("spawn")) as pool:
        trained = dict(zip(variants, pool.map(train_quietly, cfgs)))
    for key, run in trained.items():
        m = json.loads((run / "metrics.json").read_text())
        metrics[f"{key}.test_mae"] = m["test.magmom.mae"]
        metrics[f"{key}.test_mae_without_V-Cr-Mn"] = m["test.magmom.without_V-Cr-Mn.mae"]
        metrics[f"{key}.train_seconds"] = m["wall_seconds"]
        notes[f"{key}_run"] = str(run.relative_to(ROOT))
    run = trained["backbone"]
    zs.wait()
    zs_info = json.loads(zs_csv.with_suffix(".json").read_text())

    # 3. the shipped models and the mean of the backbone model and magmom-mp, on the same test set
    folders = dict(trained)
    for key, paths in (("magmom_mp", [pretrained.model_path("magmom-mp")]),
                       ("magmom_mp_ensemble", [pretrained.model_path("magmom-mp-ensemble")]),
                       ("mean_backbone_magmom_mp", [run, pretrained.model_path("magmom-mp")])):
        folder = OUT / f"test-{key}"
        got = predict_test(paths, base, cache, pos["test"], folder)
        metrics[f"{key}.test_mae"] = got["test.magmom.mae"]
        metrics[f"{key}.test_mae_without_V-Cr-Mn"] = got["test.magmom.without_V-Cr-Mn.mae"]
        folders[key] = folder

    # 4. per-site comparison with CHGNet zero-shot, overall and by element family
    tables = {k: site_table(f) for k, f in folders.items()}
    zero = {}
    for r in csv.DictReader(open(zs_csv)):
        zero[(r["id"], int(r["site"]))] = float(r["magmom_pred"])
    z_of = {}
    for i in pos["test"]:
        r = cache.record(i)
        for k, z in enumerate(np.asarray(r["z"]).tolist()):
            z_of[(r["id"], k)] = int(z)
    common = [k for k in tables["backbone"] if k in zero and not np.isnan(tables["backbone"][k][0])]
    metrics["chgnet_zero_shot.rejected"] = len(zs_info["rejected"])
    metrics["chgnet_zero_shot.inference_structures_per_s"] = zs_info["structures"] / zs_info["seconds"]
    truth = np.array([tables["backbone"][k][0] for k in common])
    preds = {key: np.array([t[k][1] for k in common]) for key, t in tables.items()}
    preds["chgnet_zero_shot"] = np.array([zero[k] for k in common])
    fam = np.array([family_of(z_of[k]) for k in common])
    metrics["common.sites"] = len(common)
    for key, pr in preds.items():
        metrics[f"{key}.common_mae"] = float(np.abs(pr - truth).mean())
        for f in [*FAMILIES, "other"]:
            sel = fam == f
            if sel.any():
                metrics[f"slice.{f}.{key}.mae"] = float(np.abs(pr[sel] - truth[sel]).mean())
                metrics[f"slice.{f}.sites"] = int(sel.sum())

    # 5. out of distribution: a whole element family held out of training and validation
    if not args.skip_ood:
        zs_family = FAMILIES[args.ood_family]

        def has_family(i: int) -> bool:
            return bool(set(np.asarray(cache.record(i)["z"]).tolist()) & zs_family)

        def subset(names: list[str]) -> list[str]:  # the same training-set size with and without the family
            n = min(args.ood_train, len(names))
            return sorted(np.random.default_rng(7).choice(names, n, replace=False).tolist())

        held = {k: [ids[i] for i in v if not has_family(i)] for k, v in pos.items() if k != "test"}
        held["train"] = subset(held["train"])
        ood_test = [i for i in pos["test"] if has_family(i)]
        split_file = OUT / f"split_without_{args.ood_family}.json"
        split_file.write_text(json.dumps({**held, "test": [ids[i] for i in ood_test]}))
        same_file = OUT / f"split_with_{args.ood_family}.json"
        same_file.write_text(json.dumps({"train": subset([ids[i] for i in pos["train"]]),
                                         "val": [ids[i] for i in pos["val"]], "test": [ids[i] for i in ood_test]}))
        metrics["ood.test_structures"] = len(ood_test)
        metrics["ood.train_structures_without"] = len(held["train"])
        ood_keys = {ids[i] for i in ood_test}
        sites = [k for k in common if k[0] in ood_keys]
        t_ood = np.array([tables["backbone"][k][0] for k in sites])
        metrics["ood.sites"] = len(sites)
        metrics["ood.chgnet_zero_shot.mae"] = float(np.abs(np.array([zero[k] for k in sites]) - t_ood).mean())
        metrics["ood.magmom_mp_trained_with.mae"] = float(np.abs(np.array([tables["magmom_mp"][k][1] for k in sites])
                                                                 - t_ood).mean())
        gnn_train = {"epochs": args.ood_gnn_epochs, "batch_size": 64, "lr": 0.002, "weight_decay": 1e-5,
                     "scheduler": "onecycle", "patience": 1000, "tensorboard": False, "in_memory": True}
        kinds = {"backbone": (None, None, args.epochs, None), "backbone_prior": (None, None, args.epochs, "backbone"),
                 "cgcnn": (GNN, gnn_train, args.ood_gnn_epochs, None)}
        jobs = [(label, tag, backbone_cfg(base, args.backbone, epochs, f"ood-{label}-{tag}-{args.ood_family}",
                                          {"kind": "ids", "ids_file": str(f)}, model, train_cfg, baseline))
                for label in args.ood_models.split(",") if label in variants or label == "cgcnn"
                for model, train_cfg, epochs, baseline in [kinds[label]]
                for tag, f in (("without", split_file), ("with", same_file))]
        with ProcessPoolExecutor(max_workers=args.shards, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(train_quietly, [cfg for *_, cfg in jobs]))
        for (label, tag, _), r in zip(jobs, runs):
            got_rows = site_table(r)
            notes[f"ood_{label}_{tag}_run"] = str(r.relative_to(ROOT))
            notes.setdefault("ood_seconds", {})[f"{label}_{tag}"] = json.loads((r / "metrics.json").read_text())[
                "wall_seconds"]
            metrics[f"ood.{label}_trained_{tag}.mae"] = float(np.abs(np.array([got_rows[k][1] for k in sites])
                                                                     - t_ood).mean())

    notes.update({
        "split": "the shipped magmom-mp's: composition-grouped 80/10/10 (seed 42) of mp_magmoms.jsonl.gz",
        "backbone_model": f"model: {{name: {args.backbone}, hidden: 256, layers: 3}}; node head magmom (l1, residual "
                          f"to the per-element mean); {args.epochs} epochs, batch 64, lr 2e-3 one-cycle, 1 thread",
        "backbone_prior_model": "the same with baseline: backbone (the residual to CHGNet's own zero-shot moment; "
                                "elements absent from training get CHGNet's answer unchanged)",
        "mptrj_overlap": ("CHGNet and SevenNet were trained on MPtrj, which contains Materials Project structures, "
                          "including these test structures: backbone and zero-shot figures are not clean held-out "
                          "results"),
        "families": {k: sorted(v) for k, v in FAMILIES.items()},
        "ood": None if args.skip_ood else (
            f"every train/val structure containing a {args.ood_family[:-1]} dropped; scored on the test structures "
            f"containing one; the backbone model ({args.epochs} epochs) and cgcnn {GNN} ({args.ood_gnn_epochs} epochs) "
            f"each trained on {args.ood_train} seeded training structures without the family and on as many drawn "
            "from the whole training set"),
        "zero_shot_rejected": zs_info["rejected"],
    })
    anchors = {"magmom_mp.test_mae (mp_magmom.json, the shipped PNA)": 0.1006,
               "magmom_mp_ensemble.test_mae (mp_magmom.json)": 0.0990,
               "chgnet_zero_shot.sample_mae (mp_magmom.json, 200 test structures)": 0.110}
    best = min(metrics["backbone.test_mae"], metrics["mean_backbone_magmom_mp.test_mae"])
    best = min(best, metrics.get("backbone_prior.test_mae", best))
    targets = {"best backbone-based model test MAE (μB), issue 16": target(0.085, "<=", best)}
    for key in ("backbone", "backbone_prior"):
        if f"ood.{key}_trained_without.mae" in metrics:
            targets[f"held-out family: {key} model not worse than CHGNet zero-shot"] = target(
                metrics["ood.chgnet_zero_shot.mae"], "<=", metrics[f"ood.{key}_trained_without.mae"])
        for f in [*FAMILIES, "other"]:  # in distribution, every element family
            if f"slice.{f}.{key}.mae" in metrics:
                targets[f"{f} sites: {key} model not worse than CHGNet zero-shot"] = target(
                    metrics[f"slice.{f}.chgnet_zero_shot.mae"], "<=", metrics[f"slice.{f}.{key}.mae"])
    write_result(args.result, started, notes, metrics, anchors, targets)


if __name__ == "__main__":
    main()
