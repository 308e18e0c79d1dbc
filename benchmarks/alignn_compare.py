"""Our ALIGNN-style model beside ALIGNN's own release on the same folds, CPU threads and epochs.

JARVIS dft_2d ``optb88vdw_bandgap`` (eV), the folds of ``benchmarks/dft2d_bandgap.py`` (5-fold,
seed 42, validation 10 % of all drawn from the training folds). ALIGNN 2026.8.11 runs through its
own ``train_alignn.py`` with its pure-PyTorch model at its property-prediction settings (4 + 4
layers, width 256; see ``benchmarks/_alignn.py``); ours runs ``matgnn train`` (a subprocess, as
users run it) with ``model: alignn`` at the widths below. Both: L1 loss, AdamW lr 1e-3 one-cycle,
batch 32, the same number of epochs, the same threads (``--threads``, default 1 each), 8 Å / 12
neighbours.

Throughput = training structures per second over whole epochs' training passes, the same quantity
for both: ALIGNN's printed train time per epoch, and our history's ``train_pass_seconds`` (the training
pass of each epoch, without its validation pass). The ``epoch_*`` figures time whole epochs with their
validation passes for both (ALIGNN's train + validation times; our history's epoch seconds); results
before this file's commit 2026-12-01 set ours' whole epochs against ALIGNN's training passes.
Inference = validation structures per second of a forward pass over prebuilt graphs (ALIGNN's printed
validation time; our timed pass over the test split).
Peak memory = each training process's maximum resident set size.

On a GPU (``--device cuda``; results in ``alignn_compare_gpu.json`` unless ``--result`` says
otherwise) both train on the GPU; peak memory is then each process's peak GPU memory allocated
through PyTorch (``torch.cuda.max_memory_allocated``) beside its resident set size.

Usage: python benchmarks/alignn_compare.py [--folds 5] [--epochs 30] [--threads 1] [--only alignn|ours]
       [--device cpu|cuda] [--result NAME] [--hidden 48]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _alignn import alignn_version, run_fold, write_poscars  # noqa: E402
from _common import ROOT, SHARED_DATA, missed_targets, target, write_result  # noqa: E402

from matgnn.data.sources import JarvisSource  # noqa: E402
from matgnn.training.splits import kfold_split  # noqa: E402

TARGET = "optb88vdw_bandgap"
OUT = ROOT / "benchmarks" / "runs" / "alignn_compare"
#: our model's settings: the defaults (4 + 2 layers, bond pairs of bonds under 3.5 Å, layer normalisation and wide
#: Gaussians as ALIGNN's release) at width ``--hidden`` (48 here: as accurate on these folds as the default 64, at
#: 1.3x the speed; ``--hidden 64`` for the default)
OURS = {"name": "alignn", "hidden": 48, "layers": 4, "gcn_layers": 2, "angle_cutoff": 3.5, "norm": "layer",
        "gaussians": "wide"}


#: runs a module's command line in this process, then prints the peak GPU memory PyTorch allocated
CUDA_PEAK = ("import runpy, sys, torch\ntry:\n    sys.argv = sys.argv[1:]\n    runpy.run_module(sys.argv[0], "
             "run_name='__main__', alter_sys=True)\nfinally:\n    print('CUDA_PEAK_BYTES', torch.cuda.max_memory_allocated() "
             "if torch.cuda.is_available() else 0, flush=True)\n")


def _matgnn_command() -> list[str]:
    exe = Path(sys.executable).parent / "matgnn"
    if exe.is_file():
        return [str(exe)]
    import shutil

    found = shutil.which("matgnn")
    return [found] if found else [sys.executable, "-m", "matgnn"]


def ours_fold(split_file: Path, name: str, epochs: int, threads: int, device: str = "cpu",
              source: dict | None = None, target_name: str = TARGET, lr: float = 1e-3) -> dict:
    """``matgnn train`` (subprocess) on one fold of ``source`` (default: JARVIS dft_2d); then a timed
    inference pass over its test split. ``val_mae``: the validation MAE of the weights it tests (its best
    epoch's)."""
    cfg = {
        "source": source or {"kind": "jarvis", "dataset": "dft_2d", "store_dir": str(SHARED_DATA / "jarvis")},
        "graphs": {"cutoff": 8.0, "max_neighbors": 12},
        "targets": [{"name": target_name, "level": "graph", "loss": "l1"}],
        "model": OURS,
        "train": {"epochs": epochs, "batch_size": 32, "lr": lr, "weight_decay": 1e-5, "scheduler": "onecycle",
                  "patience": epochs, "threads": threads, "tensorboard": False, "device": device},
        "split": {"kind": "ids", "ids_file": str(split_file)},
        "output_dir": str(OUT / "ours"), "name": name,
    }
    path = OUT / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), COLUMNS="1000")  # one log line per message
    command = ([*_matgnn_command(), "train", str(path)] if device == "cpu"
               else [sys.executable, "-c", CUDA_PEAK, "matgnn", "train", str(path)])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"matgnn train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run = Path(re.search(r"run folder: (\S+)", proc.stdout + proc.stderr).group(1))
    m = json.loads((run / "metrics.json").read_text())
    rss = int(re.search(r"MAXRSS_KB (\d+)", proc.stdout).group(1)) / 1024**2
    gpu = re.search(r"CUDA_PEAK_BYTES (\d+)", proc.stdout)
    return {"mae": m[f"test.{target_name}.mae"], "val_mae": m.get(f"val.{target_name}.mae"), "lr": lr,
            "epochs": m["epochs_run"], "n_test": m["n_test"],
            "train_structures_per_s": m.get("train_pass_structures_per_s", m["train_structures_per_s"]),
            "epoch_structures_per_s": m["train_structures_per_s"],
            "inference_structures_per_s": _inference_rate(run, threads, device),
            "peak_rss_gb": rss, **({"peak_gpu_gb": int(gpu.group(1)) / 1024**3} if gpu else {}),
            "n_parameters": m["n_parameters"], "wall_s": wall, "run_folder": str(run)}


def _inference_rate(run: Path, threads: int, device: str = "cpu") -> float:
    """Structures per second of a forward pass over the run's test split (graphs prebuilt, batch 32)."""
    import torch

    from matgnn.artifacts import RunFolder
    from matgnn.config import RunConfig, batch_targets
    from matgnn.data.sources import make_source
    from matgnn.evaluation.scoring import predict_dataset
    from matgnn.graphs.batching import make_loader
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.graphs.packed import PackedGraphs
    from matgnn.models import load_model
    from matgnn.models.base import batch_fields_of
    from matgnn.training.splits import ids_split

    torch.set_num_threads(threads)
    cfg = RunConfig.from_yaml(run / "config.yaml")
    model = load_model(run).to(torch.device(device))
    cache = build_graph_cache(make_source(cfg.source), cfg.graphs, progress=False)
    pos, _ = ids_split(cache.ids, {"test": RunFolder(run).read_split()["test"]})
    graphs = PackedGraphs(cache, pos["test"], *batch_targets(cfg.targets), extras=batch_fields_of(model))
    loader = make_loader(graphs, 32)
    predict_dataset(model, loader)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    predict_dataset(model, loader)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(graphs) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet-epochs", type=int, default=3,
                   help="throughput measured again on fold 0, each tool alone on the machine, over this many epochs "
                        "(0: skip); the speed-up targets use these figures")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--result", default=None, help="results file (default alignn_compare, alignn_compare_gpu on cuda)")
    p.add_argument("--hidden", type=int, default=OURS["hidden"], help="our model's width")
    p.add_argument("--only", choices=["alignn", "ours"], default=None,
                   help="run one side only (fills ALIGNN's run cache; writes no results file)")
    args = p.parse_args()
    OURS["hidden"] = args.hidden
    started = time.time()
    keep = [s for s in JarvisSource("dft_2d", store_dir=str(SHARED_DATA / "jarvis"), targets=[TARGET])
            if np.isfinite(s.graph_targets[TARGET])]
    ids = [s.id for s in keep]
    labels = {s.id: float(s.graph_targets[TARGET]) for s in keep}
    posc = OUT / "poscars"
    write_poscars(keep, posc)
    res: dict[str, list[dict]] = {"alignn": [], "ours": []}
    gpu = "-gpu" if args.device == "cuda" else ""
    for fold in range(args.folds):
        parts = {k: [ids[i] for i in v] for k, v in kfold_split(len(ids), 5, fold, 0.1, 42).items()}
        split_file = OUT / f"fold{fold}.json"
        split_file.write_text(json.dumps(parts))
        if args.only != "ours":
            res["alignn"].append(run_fold(posc, parts, labels, OUT / "alignn" / f"dft2d_gap-fold{fold}{gpu}", args.epochs,
                                          args.threads, args.device))
        if args.only != "alignn":
            res["ours"].append(ours_fold(split_file, f"alignn-fold{fold}{gpu}", args.epochs, args.threads, args.device))
        print(f"fold {fold}: " + "  ".join(f"{k} MAE {v[-1]['mae']:.3f} eV, {v[-1]['train_structures_per_s']:.1f}/s"
                                           for k, v in res.items() if v), flush=True)
        if args.device == "cuda" and not args.only and fold + 1 < args.folds:  # a time-limited GPU lease keeps each fold
            _report(args, res, {}, len(ids), started)
    if args.only:
        return
    quiet: dict[str, dict] = {}
    if args.quiet_epochs:  # each tool alone: nothing else of ours runs meanwhile (the folds above shared the CPU)
        parts = {k: [ids[i] for i in v] for k, v in kfold_split(len(ids), 5, 0, 0.1, 42).items()}
        quiet["alignn"] = run_fold(posc, parts, labels, OUT / "alignn" / f"quiet-fold0{gpu}", args.quiet_epochs,
                                   args.threads, args.device)
        quiet["ours"] = ours_fold(OUT / "fold0.json", f"alignn-quiet-fold0{gpu}", args.quiet_epochs, args.threads,
                                  args.device)
    _report(args, res, quiet, len(ids), started)


def _report(args, res: dict[str, list[dict]], quiet: dict[str, dict], n_ids: int, started: float) -> None:
    """The results file from the folds run so far."""
    metrics: dict[str, float] = {}
    for side, rows in res.items():
        for key in ("mae", "train_structures_per_s", "epoch_structures_per_s", "inference_structures_per_s",
                    "peak_rss_gb", "wall_s", "peak_gpu_gb"):
            vals = [r[key] for r in rows if r.get(key) is not None]
            if not vals:
                continue
            metrics[f"{side}.dft2d_gap.{key.replace('mae', 'mae_mean') if key == 'mae' else key}"] = float(np.mean(vals))
        metrics[f"{side}.dft2d_gap.mae_std"] = float(np.std([r["mae"] for r in rows]))
        metrics[f"{side}.n_parameters"] = float(rows[0]["n_parameters"] or 0)
    a, o = "alignn.dft2d_gap.", "ours.dft2d_gap."
    metrics["ours.train_speedup_vs_alignn.folds"] = (metrics[o + "train_structures_per_s"]
                                                     / metrics[a + "train_structures_per_s"])
    metrics["ours.inference_speedup_vs_alignn.folds"] = (metrics[o + "inference_structures_per_s"]
                                                         / metrics[a + "inference_structures_per_s"])
    for side, r in quiet.items():
        for key in ("train_structures_per_s", "epoch_structures_per_s", "inference_structures_per_s", "peak_rss_gb",
                    "peak_gpu_gb"):
            if r.get(key) is not None:
                metrics[f"{side}.quiet.{key}"] = float(r[key])
    src = "quiet" if quiet else "folds"
    if quiet:  # whole epochs, validation included, for both
        metrics["ours.epoch_speedup_vs_alignn"] = (metrics["ours.quiet.epoch_structures_per_s"]
                                                   / metrics["alignn.quiet.epoch_structures_per_s"])
    for kind in ("train", "inference"):
        metrics[f"ours.{kind}_speedup_vs_alignn"] = (
            metrics[f"ours.quiet.{kind}_structures_per_s"] / metrics[f"alignn.quiet.{kind}_structures_per_s"]
            if quiet else metrics[f"ours.{kind}_speedup_vs_alignn.folds"])
    metrics["ours.peak_memory_ratio_vs_alignn"] = metrics[o + "peak_rss_gb"] / metrics[a + "peak_rss_gb"]
    if o + "peak_gpu_gb" in metrics and metrics.get(a + "peak_gpu_gb"):
        metrics["ours.peak_gpu_memory_ratio_vs_alignn"] = metrics[o + "peak_gpu_gb"] / metrics[a + "peak_gpu_gb"]
    noise = float(np.hypot(metrics[a + "mae_std"], metrics[o + "mae_std"]))
    targets = {
        "mae_at_or_below_alignn": target(metrics[a + "mae_mean"], "<=", metrics[o + "mae_mean"]),
        "mae_within_fold_noise_or_better": target(noise, "<=", metrics[o + "mae_mean"] - metrics[a + "mae_mean"]),
        "train_speedup_vs_alignn": target(10.0, ">=", metrics["ours.train_speedup_vs_alignn"]),
        "inference_speedup_vs_alignn": target(10.0, ">=", metrics["ours.inference_speedup_vs_alignn"]),
        "peak_memory_ratio_vs_alignn": target(1 / 3, "<=", metrics["ours.peak_memory_ratio_vs_alignn"]),
    }
    write_result(
        args.result or ("alignn_compare_gpu" if args.device == "cuda" else "alignn_compare"), started,
        data={"source": "jarvis:dft_2d", "target": f"{TARGET} (eV)", "n_structures": n_ids,
              "split": f"{len(res['ours'])} of the 5 folds of benchmarks/dft2d_bandgap.py (seed 42, val 10 %)",
              "epochs": args.epochs, "threads_each": args.threads, "alignn_version": alignn_version(),
              "device": args.device,
              "alignn_settings": "alignn_atomwise_pure via train_alignn.py, 4+4 layers, width 256, cgcnn features, "
                                 "pure_torch graphs 8 Å / 12 neighbours, L1, AdamW lr 1e-3 one-cycle, batch 32",
              "ours_settings": OURS, "alignn_runs_reused_from_cache": [r.get("cached", False) for r in res["alignn"]],
              "speedups_from": src, "quiet": quiet,
              "concurrency": (f"on the GPU machine, while the other runs of {os.environ.get('MATGNN_GPU_SCRIPT', 'the GPU script')} "
                              "shared its cores and GPU (the two tools ran one after the other, never together)"
                              if args.device == "cuda" else
                              "the five folds of each tool ran while other benchmarks shared the 2 cores (one thread "
                              "each); the quiet figures ran each tool alone"),
              "per_fold": res, "missed_targets": missed_targets(targets, MISSED.__getitem__),
              "not_measured": "MEGNet-MP formation energy and gap on a 10,000-structure subset with ALIGNN's own: "
                              "on one CPU thread it trains at ~17 structures/s (10 min per epoch); on the GPU its "
                              "per-structure graph builder and the 15-minute device budget left no room (see "
                              "mp_megnet_alignn.json for ours on the GPU)"},
        metrics=metrics,
        anchors={"alignn.issue_quoted.dft2d_gap.mae_70_30": 0.553, "alignn.issue_quoted.train_structures_per_s": 17,
                 "alignn.issue_quoted.inference_structures_per_s": 45, "alignn.issue_quoted.peak_gb": 3.8},
        targets=targets,
    )


#: for a missed target of the results file: why, and what would close it
MISSED = {
    "mae_at_or_below_alignn": (
        "a 0.14 M-parameter model (width 48, 4 + 2 layers) against ALIGNN's 4.0 M (width 256, 4 + 4) at 20 epochs; "
        "the difference is smaller than the spread over folds",
        "several seeds per fold to tell a difference of this size from noise (float rounding alone moved one fold by "
        "0.02 eV between this file's commits 77cdd2a and 4266798); ALIGNN's 4 + 4 layers (the default since the task "
        "suite preferred them, task_suite_alignn.json) or more width, at some throughput"),
    "mae_within_fold_noise_or_better": ("see mae_at_or_below_alignn", "see mae_at_or_below_alignn"),
    "train_speedup_vs_alignn": (
        "the ratio depends on the CPU: the same code met it on an AMD EPYC and missed it on an Intel Xeon (this file "
        "at 0627efb and at 77cdd2a) before the edge-gated convolutions were fused",
        "a profile of a training step on the CPU it misses on, then fused kernels for what dominates it (after the "
        "fused edge-gated convolutions: the matrix products, then layer normalisation with SiLU over the edges)"),
    "inference_speedup_vs_alignn": ("as train_speedup_vs_alignn", "as train_speedup_vs_alignn"),
    "peak_memory_ratio_vs_alignn": (
        "about 0.36 GB of ours is the Python process with torch and PyG loaded, before any graph",
        "fewer imports at start"),
}


if __name__ == "__main__":
    main()
