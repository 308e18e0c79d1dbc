"""Screening throughput of the shipped magnetic-moment model, end to end, and what the shipped
models cost to load and run.

``matgnn predict magmom-mp`` (the CLI, a fresh process: start-up included) on the first
``--structures`` (10,000) entries of ``../shared/data/mp_magmoms`` — read (the JSON Lines file as
shipped, and once more the same structures as one extxyz file), graph, model, write (one row per
structure plus one per atom, 330 k rows) — with both CPU cores; structures/s = structures / wall
time of the process; peak memory = peak summed RSS of the process tree, sampled every 0.2 s.

Deployment cost of every shipped model (``matgnn.prediction.deploy.deploy_cost``, the code of
``matgnn bench deploy``): load time (cold process and warm), graph building and latency for a
64-atom cell, single and batched (64 per batch).

Usage: python benchmarks/predict_throughput.py [--structures 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, SHARED_DATA, PeakRSS, target, write_result  # noqa: E402

from matgnn.pretrained import available, model_path  # noqa: E402

DATA = SHARED_DATA / "mp_magmoms" / "mp_magmoms.jsonl.gz"
OUT = ROOT / "benchmarks" / "runs" / "predict_throughput"


def timed_predict(inputs: list[str], out: str, limit: int | None) -> dict[str, float]:
    cmd = [sys.executable, "-m", "matgnn", "predict", "magmom-mp", *inputs, "--out", out, "--batch-size", "256"]
    if limit:
        cmd += ["--limit", str(limit)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rss = PeakRSS(proc.pid)
    log, _ = proc.communicate()
    wall = time.perf_counter() - t0
    peak = rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"matgnn predict failed:\n{log[-3000:]}")
    n = sum(1 for _ in open(out)) - 1
    n_atoms = sum(1 for _ in open(out.replace(".csv", "_atoms.csv"))) - 1
    return {"structures": n, "atom_rows": n_atoms, "wall_s": wall, "structures_per_s": n / wall, "peak_rss_gb": peak}


def cold_load_s(name: str) -> float:
    """Seconds for ``load_model`` of a shipped model in a fresh process (imports excluded)."""
    code = ("import time; from matgnn.models import load_model; from matgnn.pretrained import model_path, is_ensemble; "
            "from matgnn.prediction.predict import Predictor; "
            f"t=time.perf_counter(); Predictor([{name!r}]) if is_ensemble({name!r}) else load_model(model_path({name!r})); "
            "print(time.perf_counter()-t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    from ase.io import write

    from matgnn.data.sources import MagmomSource
    from matgnn.prediction.deploy import deploy_cost

    p = argparse.ArgumentParser()
    p.add_argument("--structures", type=int, default=10_000)
    args = p.parse_args()
    started = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    res = timed_predict([str(DATA)], str(OUT / "jsonl.csv"), args.structures)
    metrics.update({f"jsonl.{k}": v for k, v in res.items()})
    print("jsonl", res, flush=True)

    xyz = OUT / f"mp_magmoms_first{args.structures}.extxyz"
    if not xyz.exists():  # the same structures as one extxyz file (written once, not timed)
        from ase import Atoms

        frames = [Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc, info={"id": s.id})
                  for s in MagmomSource(DATA, limit=args.structures) if hasattr(s, "numbers")]
        write(str(xyz), frames, format="extxyz")
    res = timed_predict([str(xyz)], str(OUT / "extxyz.csv"), None)
    metrics.update({f"extxyz.{k}": v for k, v in res.items()})
    print("extxyz", res, flush=True)

    for name in available():
        cost = deploy_cost(model_path(name), n_atoms=64, batch=64, repeats=50)
        metrics.update({f"{name}.{k}": float(v) for k, v in cost.items() if isinstance(v, (int, float))})
        metrics[f"{name}.cold_load_s"] = cold_load_s(name)
        print(name, cost, flush=True)

    targets = {"jsonl.structures_per_s": target(200, ">=", metrics["jsonl.structures_per_s"]),
               "jsonl.peak_rss_gb": target(2.0, "<", metrics["jsonl.peak_rss_gb"])}
    for name in available():
        targets[f"{name}.cold_load_s"] = target(1.0, "<", metrics[f"{name}.cold_load_s"])
        targets[f"{name}.cpu.batched_ms_per_structure"] = target(5.0, "<", metrics[f"{name}.cpu.batched_ms_per_structure"])
    write_result("predict_throughput", started,
                 data={"source": f"mp_magmoms, first {args.structures} entries", "model": "magmom-mp (shipped)",
                       "inputs": {"jsonl": str(DATA), "extxyz": "the same structures written as one extxyz file"},
                       "batch_size": 256, "shipped_models": available(),
                       "deploy_cell": "64-atom cell (matgnn.prediction.deploy.example_cell), batch 64"},
                 metrics=metrics, anchors={"seed_research.cgconv_64_atom_slab_ms": 3.6,
                                           "seed_research.schnet_64_atom_slab_ms": 5.6},
                 targets=targets)
    print(json.dumps(targets, indent=1))


if __name__ == "__main__":
    main()
