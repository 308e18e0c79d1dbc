"""Training and inference throughput on Materials Project magnetic structures, side by side with
the PyPI reference CGCNN (``cgcnn2``), and peak memory of a streamed training run on all 47,628.

Data: the first ``--structures`` (10,000) entries of ``../shared/data/mp_magmoms`` (mean 33 atoms,
up to 404), graphs at CGCNN's settings (8 Å, 12 nearest neighbours); target the structure's mean
|m| per atom (``magmom_abs_mean``, μB/atom; a graph-level target, since cgcnn2 predicts one value
per structure); one seeded random 80/10/10 split given to both tools.

Training throughput: every model at CGCNN's published size (width 64, 3 convolutions, 128-wide
head) and cgcnn2's default batch of 256, ``--epochs`` epochs; structures/s = training structures ×
epochs / time of those epochs (training pass + validation pass + bookkeeping), leaving out the first
epoch of every tool (cgcnn2 parses its CIFs and builds graphs then; ours are cached). cgcnn2 runs
through its own CLI at its defaults (Adam lr 0.01, 41 Gaussians, both CPU threads) on CIF files
written from the same structures; matgnn through ``train()`` (the code path of ``matgnn train``).
Ours also once streamed from LMDB (``in_memory: false``) instead of held in RAM.

Inference throughput on all structures: cgcnn2's ``cgcnn-pr`` and ``matgnn predict`` end to end from
the same CIF files (read, graph, model, write; process start included), and our model alone on
cached graphs.

Memory: ``matgnn train`` (the CLI, a subprocess) on all 47,628 structures, per-atom |m| with CGCNN
(residual to the per-element mean), composition-grouped 80/10/10 split, streamed from LMDB with
size-aware batches (≈ 64 structures' atoms each), ``--memory-epochs`` epochs, one-cycle schedule
(this run is also how the shipped ``magmom-mp`` model is trained); peak resident memory (RSS) of the process and its children, sampled every 0.2 s.

Needs ``cgcnn-tr``/``cgcnn-pr`` on PATH (``pip install cgcnn2``, Python ≥ 3.11).
Kernel A/B (``--phases kernel``): our CGCNN trained twice on the same split, with the fused CPU kernel switched
off (``MATGNN_KERNELS=off``, the PyTorch path) and on; ``kernel_ab.speedup`` is the ratio of their throughputs.

Usage: python benchmarks/throughput.py [--structures 10000] [--epochs 4] [--phases train,infer,memory,kernel] [--memory-epochs 10]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _cgcnn2 import set_folder, train_cli, write_cifs  # noqa: E402
from _common import (  # noqa: E402
    RESULTS,
    ROOT,
    SHARED_DATA,
    UNKNOWN,
    PeakRSS,
    kernels,
    target,
    write_result,
)

from matgnn.config import RunConfig  # noqa: E402
from matgnn.data.sources import MagmomSource  # noqa: E402
from matgnn.graphs.cache import build_graph_cache  # noqa: E402
from matgnn.graphs.neighbors import GraphSettings  # noqa: E402
from matgnn.training.run import train  # noqa: E402
from matgnn.training.splits import random_split  # noqa: E402

TARGET = "magmom_abs_mean"
OUT = ROOT / "benchmarks" / "runs" / "throughput"
DATA = SHARED_DATA / "mp_magmoms" / "mp_magmoms.jsonl.gz"
GRAPHS = GraphSettings(cutoff=8.0, max_neighbors=12)
PHASES = ("train", "infer", "memory", "kernel")


def safe(sid: str) -> str:
    return sid.replace(":", "-").replace("/", "_")


def export_cifs(source: MagmomSource, folder: Path, keep: set[str]) -> dict[str, float]:
    """The structures as ``<id>.cif`` (pymatgen writer), ``atom_init.json`` and the labels."""
    chosen = [s for s in source if hasattr(s, "numbers") and s.id in keep]
    write_cifs(((safe(s.id), s) for s in chosen), folder)
    return {safe(s.id): float(s.graph_targets[TARGET]) for s in chosen}


def cgcnn2_train(cifs: Path, parts: dict[str, list[str]], labels: dict[str, float], work: Path,
                 epochs: int) -> dict[str, float]:
    shutil.rmtree(work, ignore_errors=True)
    r = train_cli(cifs, parts, labels, work, ["-e", str(epochs)])
    return {"train_structures_per_s": r["structures_per_s"], "test_mae": r["mae"], "epochs": r["epochs"],
            "train_wall_s": r["wall_s"]}


def cgcnn2_checkpoint(work: Path) -> Path:
    found = [p for ext in ("ckpt", "pth", "pth.tar", "pt") for p in sorted((work / "output_bench").glob(f"*.{ext}"))]
    if not found:
        raise FileNotFoundError(f"no cgcnn2 checkpoint in {work / 'output_bench'}")
    best = [p for p in found if "best" in p.name]
    return (best or found)[0]


def cgcnn2_predict(model: Path, cifs: Path, labels: dict[str, float], work: Path) -> dict[str, float]:
    d = set_folder(cifs, list(labels), labels, work / "predict_all")
    t0 = time.perf_counter()
    proc = subprocess.run(["cgcnn-pr", "-mp", str(model), "-as", str(d), "-ji", "pred"], cwd=work,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cgcnn-pr failed:\n{proc.stderr[-3000:]}")
    return {"predict_structures_per_s_end_to_end": len(labels) / wall, "predict_wall_s": wall}


def ours_train(name: str, model: str, split_file: Path, n: int, epochs: int, **train_kw) -> tuple[Path, dict[str, float]]:
    cfg = RunConfig.model_validate({
        "source": {"kind": "magmoms", "path": str(DATA), "limit": n},
        "graphs": GRAPHS.model_dump(),
        "targets": [{"name": TARGET, "level": "graph", "loss": "l1"}],
        "model": {"name": model, "hidden": 64, "layers": 3, "head_hidden": 128},
        "train": {"batch_size": 256, "epochs": epochs, "patience": 1000, **train_kw},
        "split": {"kind": "ids", "ids_file": str(split_file)},
        "output_dir": str(OUT / "matgnn"), "name": name,
    })
    run = train(cfg, progress=False)
    m = json.loads((run / "metrics.json").read_text())
    hist = list(csv.DictReader(open(run / "history.csv")))
    later = hist[1:] or hist
    rate = m["n_train"] * len(later) / sum(float(h["seconds"]) for h in later)
    return run, {"train_structures_per_s": rate, "test_mae": m[f"test.{TARGET}.mae"], "epochs": m["epochs_run"],
                 "train_wall_s": m["train_seconds"], "n_parameters": m["n_parameters"]}


def ours_model_only(run: Path, n: int) -> float:
    """Our model alone on cached graphs (batches of 256, inference mode): structures/s."""
    import torch

    from matgnn.graphs.batching import make_loader
    from matgnn.graphs.packed import PackedGraphs
    from matgnn.models import load_model

    cache = build_graph_cache(MagmomSource(DATA, limit=n), GRAPHS, progress=False)
    graphs = PackedGraphs(cache)
    model = load_model(run / "model").eval()
    with torch.inference_mode():
        for b in make_loader(graphs, 256):  # warm-up pass
            model(b)
        t0 = time.perf_counter()
        for b in make_loader(graphs, 256):
            model(b)
    return len(graphs) / (time.perf_counter() - t0)


def ours_predict(run: Path, cifs: Path, n_files: int, work: Path) -> dict[str, float]:
    out = work / "predictions.csv"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "matgnn", "predict", str(run), str(cifs), "--out", str(out),
                           "--batch-size", "256"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"matgnn predict failed:\n{proc.stderr[-3000:]}")
    return {"predict_structures_per_s_end_to_end": n_files / wall, "predict_wall_s": wall}


def memory_run(epochs: int, in_memory: bool) -> tuple[dict[str, float], Path | None]:
    cfg = RunConfig.model_validate({
        "source": {"kind": "magmoms", "path": str(DATA)},
        "graphs": GRAPHS.model_dump(),
        "targets": [{"name": "magmom", "level": "node", "loss": "l1", "baseline": "element_mean"}],
        "model": {"name": "cgcnn", "hidden": 64, "layers": 3},
        "train": {"batch_size": 64, "batch_by": "atoms", "epochs": epochs, "in_memory": in_memory,
                  "scheduler": "onecycle", "lr": 0.002, "patience": 1000, "tensorboard": False},
        "evaluation": {"exclude_elements": ["V", "Cr", "Mn"]},
        "split": {"kind": "grouped"},
        "output_dir": str(OUT / "memory"), "name": "stream" if not in_memory else "in-memory",
    })
    path = OUT / f"memory-{'ram' if in_memory else 'stream'}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(path)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "matgnn", "train", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    rss = PeakRSS(proc.pid)
    out, _ = proc.communicate()
    peak = rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"matgnn train failed:\n{out[-3000:]}")
    run = Path(re.search(r"done in \d+ s → (.+)", out.replace("\n", "")).group(1).strip()) if "done in" in out else None
    m = json.loads((run / "metrics.json").read_text()) if run else {}
    return {"peak_rss_gb": peak, "wall_s": time.perf_counter() - t0, "n_train": m.get("n_train", UNKNOWN),
            "train_structures_per_s": m.get("train_structures_per_s", UNKNOWN),
            "test_mae": m.get("test.magmom.mae", UNKNOWN),
            "test_mae_without_V_Cr_Mn": m.get("test.magmom.without_V-Cr-Mn.mae", UNKNOWN),
            "epochs": m.get("epochs_run", UNKNOWN)}, run


def _phase(metric: str) -> str:
    """Which phase measured a metric (memory, infer or train)."""
    if metric.startswith("memory"):
        return "memory"
    if metric.startswith("kernel_ab"):
        return "kernel"
    return "infer" if "predict" in metric or "model_only" in metric else "train"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--structures", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--models", default="cgcnn,schnet,pna")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--memory-epochs", type=int, default=10)
    args = p.parse_args()
    phases = set(args.phases.split(","))
    if {"train", "infer"} & phases and shutil.which("cgcnn-tr") is None:
        sys.exit("cgcnn-tr not found: pip install cgcnn2")
    started = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    source = MagmomSource(DATA, limit=args.structures)
    cache = build_graph_cache(source, GRAPHS, progress=False)  # the same graphs train() will reuse
    ids = list(cache.ids)
    parts = {k: [ids[i] for i in v] for k, v in random_split(len(ids), 0.8, 0.1, 42).items()}
    split_file = OUT / "split.json"
    split_file.write_text(json.dumps(parts))
    res: dict[str, dict[str, float]] = {}
    metrics: dict[str, float] = {}
    previous = RESULTS / "throughput.json"
    earlier = {}
    if phases != set(PHASES) and previous.is_file():  # the phases not rerun keep their figures
        old = json.loads(previous.read_text())
        kept = {k: v for k, v in old["metrics"].items() if _phase(k) not in phases}
        metrics.update(kept)
        earlier = {"earlier_phases": {"command": old["command"], "git_commit": old["git_commit"],
                                      "created": old["created"], "wall_seconds": old["wall_seconds"],
                                      "phases": sorted({_phase(k) for k in kept}),
                                      # where that run had itself kept phases of an earlier one: their provenance
                                      **({"earlier_phases": old["data"]["earlier_phases"]}
                                         if "earlier_phases" in old.get("data", {}) else {}),
                                      **({"memory_run": old["data"]["memory_run"], "memory": old["data"]["memory"]}
                                         if "memory" not in phases and "memory" in old.get("data", {}) else {})}}
    data = {**earlier, "source": f"mp_magmoms (first {args.structures} entries; {len(ids)} with a valid graph, "
                      f"{len(cache.report.skipped)} skipped and listed in the cache's load report)",
            "target": f"{TARGET} (mean |m| per atom, μB/atom)", "graphs": GRAPHS.model_dump(),
            "split": "random 80/10/10, seed 42", "n_train": len(parts["train"]),
            "mean_atoms": float(np.mean(cache.meta["n_atoms"])), "batch_size": 256, "epochs": args.epochs,
            "MATGNN_KERNELS": os.environ.get("MATGNN_KERNELS", "unset (the fused CPU kernel where it builds)")}

    def save() -> None:
        for k, v in res.items():
            metrics.update({f"{k}.{key}": float(x) for key, x in v.items()})
        base = res.get("cgcnn2", {})
        targets = {}
        for k, v in res.items():
            if k != "cgcnn2" and "train_structures_per_s" in v and "train_structures_per_s" in base:
                metrics[f"{k}.train_speedup_vs_cgcnn2"] = v["train_structures_per_s"] / base["train_structures_per_s"]
            if k != "cgcnn2" and "predict_structures_per_s_end_to_end" in v and "predict_structures_per_s_end_to_end" in base:
                metrics[f"{k}.predict_speedup_vs_cgcnn2"] = (v["predict_structures_per_s_end_to_end"]
                                                             / base["predict_structures_per_s_end_to_end"])
        if "cgcnn.train_speedup_vs_cgcnn2" in metrics:
            targets["cgcnn.train_speedup_vs_cgcnn2"] = target(3.0, ">=", metrics["cgcnn.train_speedup_vs_cgcnn2"])
        if "memory_stream.peak_rss_gb" in metrics:
            targets["memory_stream.peak_rss_gb"] = target(4.0, "<", metrics["memory_stream.peak_rss_gb"])
        write_result("throughput", started, data=data, metrics=metrics,
                     anchors={"cgcnn2.issue_quoted.dft_2d_train_structures_per_s": 1900,
                              "alignn": "not run: its PyPI release builds graphs with DGL, whose wheels do not load "
                                        "with torch 2.13, and no separate environment can be installed offline"},
                     targets=targets)

    cifs = OUT / "cifs"
    if {"train", "infer"} & phases:
        labels = export_cifs(source, cifs, set(ids))
        sparts = {k: [safe(i) for i in v] for k, v in parts.items()}
        res["cgcnn2"] = cgcnn2_train(cifs, sparts, labels, OUT / "cgcnn2", args.epochs)
        print("cgcnn2", res["cgcnn2"], flush=True)
        save()
        runs = {}
        for model in args.models.split(","):
            runs[model], res[model] = ours_train(model, model, split_file, args.structures, args.epochs)
            print(model, res[model], flush=True)
            save()
        _, res["cgcnn_streamed"] = ours_train("cgcnn-streamed", "cgcnn", split_file, args.structures, args.epochs,
                                              in_memory=False)
        print("cgcnn_streamed", res["cgcnn_streamed"], flush=True)
        save()
        if "infer" in phases:
            res["cgcnn2"].update(cgcnn2_predict(cgcnn2_checkpoint(OUT / "cgcnn2"), cifs, labels, OUT / "cgcnn2"))
            for model, run in runs.items():
                res[model]["model_only_structures_per_s"] = ours_model_only(run, args.structures)
            res["cgcnn"].update(ours_predict(runs["cgcnn"], cifs, len(labels), OUT))
            print("infer", {k: v for k, v in res.items()}, flush=True)
            save()
    if "kernel" in phases:  # our CGCNN with and without the fused CPU kernel, one after the other
        ab = {}
        for label, switch in (("pytorch_path", "off"), ("fused", "on")):
            with kernels(switch):
                _, ab[label] = ours_train(f"cgcnn-kernel-{switch}", "cgcnn", split_file, args.structures, args.epochs)
            print("kernel", label, ab[label], flush=True)
        res.update({f"kernel_ab.{k}": v for k, v in ab.items()})
        metrics["kernel_ab.speedup"] = ab["fused"]["train_structures_per_s"] / ab["pytorch_path"]["train_structures_per_s"]
        data["kernel_ab"] = ("matgnn cgcnn trained twice on the same split, MATGNN_KERNELS=off (the PyTorch path) then "
                             "on (the fused CPU kernel of models/kernels)")
        save()
    if "memory" in phases:
        res["memory_stream"], run = memory_run(args.memory_epochs, in_memory=False)
        data["memory_run"] = str(run)
        print("memory", res["memory_stream"], flush=True)
        data["memory"] = ("all 47,628 mp_magmoms structures, per-atom |m|, CGCNN 64 × 3, grouped 80/10/10 split, "
                          f"streamed from LMDB, batches of ≈ 64 structures' atoms, {args.memory_epochs} epoch(s)")
        save()


if __name__ == "__main__":
    main()
