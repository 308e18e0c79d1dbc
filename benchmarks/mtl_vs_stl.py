"""Multi-task (one trunk, one head per task) against single-task models with the same trunk and
budget, HydraGNN's table 1 / figure 7 in form: each task's test MAE in the multi-task model and in
its own single-task model (mean ± std over seeds), and the training time of one multi-task run
against the sum of the single-task runs (training loops only; the shared graph cache is built once).

Datasets (``--datasets``):
- ``emt``: the embedded EMT alloy set, mixing energy (graph, eV/atom) + per-atom energy (node, eV).
- ``dft_3d``: the 1,056-entry JARVIS dft_3d subset, formation energy, band gap, bulk modulus
  (one entry has an unphysical -14 GPa, kept), magmom_oszicar; labels missing for some entries are masked per head.
- ``mp_cgcnn``: Materials Project (CGCNN set) formation energy, band gap, Fermi energy, total
  magnetisation; ``--mp-limit`` entries (the whole 36,738 does not fit 2 cores in an hour).

Same seeded random 80/10/10 split per seed for the MTL run and every STL run; CGCNN width 64 × 3;
AdamW one-cycle. Every run goes through ``matgnn.training.run.train``.
Writes benchmarks/results/mtl_vs_stl.json.
Usage: python benchmarks/mtl_vs_stl.py [--datasets emt,dft_3d,mp_cgcnn] [--seeds 0,1,2] [--epochs 60]
       [--mp-limit 5000] [--mp-epochs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, SHARED_DATA, write_result  # noqa: E402

from matgnn.config import RunConfig  # noqa: E402
from matgnn.training.run import train  # noqa: E402

OUT = ROOT / "benchmarks" / "runs" / "mtl_vs_stl"


def datasets(mp_limit: int) -> dict[str, tuple[dict, list[dict]]]:
    return {
        "emt": ({"kind": "emt", "n_structures": 1000},
                [{"name": "mixing_energy"}, {"name": "atom_energy", "level": "node"}]),
        "dft_3d": ({"kind": "jarvis", "dataset": "dft_3d", "store_dir": str(SHARED_DATA / "jarvis")},
                   [{"name": "formation_energy_peratom"}, {"name": "optb88vdw_bandgap"},
                    {"name": "bulk_modulus_kv"}, {"name": "magmom_oszicar"}]),
        "mp_cgcnn": ({"kind": "cif_jsonl", "path": str(SHARED_DATA / "mp_cgcnn" / "mp_cgcnn.jsonl.gz"), "limit": mp_limit,
                      "targets": ["formation_energy_per_atom", "band_gap", "efermi", "total_magnetization"]},
                     [{"name": "formation_energy_per_atom"}, {"name": "band_gap"}, {"name": "efermi"},
                      {"name": "total_magnetization"}]),
    }


def run(source: dict, heads: list[dict], seed: int, epochs: int, name: str) -> tuple[dict, float]:
    cfg = RunConfig.model_validate({
        "source": source, "graphs": {"cutoff": 8.0, "max_neighbors": 12},
        "targets": [{"loss": "l1", **h} for h in heads],
        "model": {"name": "cgcnn", "hidden": 64, "layers": 3},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "scheduler": "onecycle", "patience": epochs,
                  "seed": seed, "tensorboard": False},
        "split": {"kind": "random", "train": 0.8, "val": 0.1, "seed": seed},
        "output_dir": str(OUT), "name": name,
    })
    run_dir = train(cfg, progress=False)
    m = json.loads((run_dir / "metrics.json").read_text())
    return {h["name"]: m[f"test.{h['name']}.mae"] for h in heads}, m["train_seconds"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default="emt,dft_3d,mp_cgcnn")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--mp-limit", type=int, default=5000)
    p.add_argument("--mp-epochs", type=int, default=15, help="epochs for mp_cgcnn (its runs are 5x the others)")
    args = p.parse_args()
    started = time.time()
    seeds = [int(s) for s in args.seeds.split(",")]
    metrics: dict[str, float] = {}
    table = datasets(args.mp_limit)
    for ds in args.datasets.split(","):
        source, heads = table[ds]
        mtl = {h["name"]: [] for h in heads}
        stl = {h["name"]: [] for h in heads}
        t_mtl, t_stl = [], []
        for seed in seeds:
            epochs = args.mp_epochs if ds == "mp_cgcnn" else args.epochs
            maes, wall = run(source, heads, seed, epochs, f"{ds}-mtl-s{seed}")
            t_mtl.append(wall)
            for k, v in maes.items():
                mtl[k].append(v)
            total = 0.0
            for h in heads:
                maes, wall = run(source, [h], seed, epochs, f"{ds}-stl-{h['name']}-s{seed}")
                stl[h["name"]].append(maes[h["name"]])
                total += wall
            t_stl.append(total)
            print(f"{ds} seed {seed}: MTL {t_mtl[-1]:.0f} s, STL total {total:.0f} s", flush=True)
        for h in heads:
            n = h["name"]
            metrics[f"{ds}.{n}.mtl_mae_mean"] = float(np.mean(mtl[n]))
            metrics[f"{ds}.{n}.mtl_mae_std"] = float(np.std(mtl[n]))
            metrics[f"{ds}.{n}.stl_mae_mean"] = float(np.mean(stl[n]))
            metrics[f"{ds}.{n}.stl_mae_std"] = float(np.std(stl[n]))
            metrics[f"{ds}.{n}.mtl_over_stl"] = float(np.mean(mtl[n]) / np.mean(stl[n]))
        metrics[f"{ds}.mtl_wall_s_mean"] = float(np.mean(t_mtl))
        metrics[f"{ds}.stl_sum_wall_s_mean"] = float(np.mean(t_stl))
        metrics[f"{ds}.wall_ratio_mtl_over_stl_sum"] = float(np.mean(t_mtl) / np.mean(t_stl))
    write_result(
        "mtl_vs_stl", started,
        data={"datasets": args.datasets, "seeds": seeds, "epochs": args.epochs, "mp_limit": args.mp_limit,
              "mp_epochs": args.mp_epochs, "mp_subset": f"first {args.mp_limit} entries of mp_cgcnn.jsonl.gz",
              "split": "random 80/10/10 per seed", "model": "cgcnn width 64 × 3, AdamW one-cycle lr 2e-3, batch 64",
              "units": "eV/atom (energies per atom), eV (gap, Fermi), GPa (bulk modulus), μB (magnetisation)"},
        metrics=metrics, anchors={}, targets={},
    )


if __name__ == "__main__":
    main()
