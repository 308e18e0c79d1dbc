"""Driving ALIGNN's own release (``alignn`` 2026.8.11, PyPI) through its own training entry point
``alignn/train_alignn.py`` with its pure-PyTorch model (``alignn_atomwise_pure``, graphs from its
``pure_torch`` builder: no DGL), for side-by-side benchmarks.

ALIGNN runs in its own Python environment (``$ALIGNN_PYTHON``, default ``/work/alignn-venv/bin/python``;
make it with ``python -m venv V && V/bin/pip install torch==2.13.0 alignn==2026.8.11``). Our structures
are written as POSCAR files with an ``id_prop.csv`` ordered train, validation, test, and ALIGNN's
``keep_data_order`` with ``n_train``/``n_val``/``n_test`` reproduces exactly our fold. Its printed
per-epoch times give the training and validation throughput; the peak memory is the child's maximum
resident set size.

Runs are cached under ``benchmarks/runs/alignn_compare/alignn/<task>-fold<k>-<hash>``, keyed by the
ALIGNN version, the config and the fold's ids: an external tool's finished run is reused, and the
results JSON says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path


#: ALIGNN's property-prediction settings (its example config): 4 ALIGNN + 4 GCN layers, width 256,
#: cgcnn atom features, 80 bond and 40 angle Gaussians, 12 neighbours within 8 Å, L1 loss, AdamW,
#: one-cycle schedule; the pure model's force-field defaults (gradients, ZBL) switched off
def alignn_config(epochs: int, n_train: int, n_val: int, n_test: int, batch_size: int = 32,
                  lr: float = 1e-3) -> dict:
    return {
        "version": "112bbedebdaecf59fb18e11c929080fb2f358246",
        "dataset": "user_data", "target": "target", "atom_features": "cgcnn",
        "neighbor_strategy": "pure_torch", "id_tag": "jid", "random_seed": 123,
        "n_train": n_train, "n_val": n_val, "n_test": n_test, "keep_data_order": True,
        "train_ratio": None, "val_ratio": None, "test_ratio": None,
        "epochs": epochs, "batch_size": batch_size, "weight_decay": 1e-5, "learning_rate": lr,
        "criterion": "l1", "optimizer": "adamw", "scheduler": "onecycle",
        "num_workers": 0, "cutoff": 8.0, "max_neighbors": 12, "use_canonize": True,
        "write_checkpoint": True, "write_predictions": True, "store_outputs": False, "progress": False,
        "use_lmdb": True, "filename": "bench",
        "model": {"name": "alignn_atomwise_pure", "alignn_layers": 4, "gcn_layers": 4,
                  "atom_input_features": 92, "edge_input_features": 80, "triplet_input_features": 40,
                  "embedding_features": 64, "hidden_features": 256, "output_features": 1,
                  "calculate_gradient": False, "gradwise_weight": 0.0, "stresswise_weight": 0.0,
                  "atomwise_weight": 0.0, "graphwise_weight": 1.0, "use_zbl": False},
    }


def alignn_python() -> str:
    return os.environ.get("ALIGNN_PYTHON", "/work/alignn-venv/bin/python")


def alignn_version() -> str | None:
    try:
        out = subprocess.run([alignn_python(), "-c", "import importlib.metadata as m; print(m.version('alignn'))"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def write_poscars(structures, folder: Path) -> None:
    """``<id>.vasp`` POSCAR files (ASE's writer; existing files are kept)."""
    from ase import Atoms
    from ase.io import write

    folder.mkdir(parents=True, exist_ok=True)
    for s in structures:
        path = folder / f"{s.id}.vasp"
        if not path.exists():
            write(path, Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=True), format="vasp",
                  direct=True)


def _epoch_times(log: str) -> tuple[list[float], list[float]]:
    """Per-epoch training and validation seconds from ALIGNN's printed loss table: a ``Train Loss:``
    or ``Val Loss:`` header, then a row whose last-but-maybe-a-message number is the time."""
    train: list[float] = []
    val: list[float] = []
    lines = log.splitlines()
    for k, line in enumerate(lines[:-1]):
        head = line.strip()
        if head.startswith(("Train Loss:", "Val Loss:")) and "Time" in head:
            numbers = re.findall(r"-?\d+\.?\d*(?:[eE][-+]?\d+)?", lines[k + 1])
            if len(numbers) >= 8:
                (train if head.startswith("Train") else val).append(float(numbers[7]))
    return train, val


def run_fold(posc: Path, parts: dict[str, list[str]], labels: dict[str, float], work: Path, epochs: int,
             threads: int = 1, device: str = "cpu", lr: float = 1e-3) -> dict:
    """ALIGNN's ``train_alignn.py`` on one fold: test MAE, training / validation structures per
    second over whole epochs, peak memory, parameters, wall time, and the validation MAE of the model it
    tests (its last epoch's: ``train_alignn.py`` predicts the test set with the final weights) (cached, see the
    module doc)."""
    cfg = alignn_config(epochs, len(parts["train"]), len(parts["val"]), len(parts["test"]), lr=lr)
    key = hashlib.sha256(json.dumps([alignn_version(), cfg, parts], sort_keys=True).encode()).hexdigest()[:12]
    out = work.with_name(f"{work.name}-{key}")
    done = out / "result.json"
    if done.is_file():
        return {**json.loads(done.read_text()), "cached": True}
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    order = parts["train"] + parts["val"] + parts["test"]
    for i in order:
        link = data / f"{i}.vasp"
        if not link.exists():
            os.symlink(posc / f"{i}.vasp", link)
    (data / "id_prop.csv").write_text("".join(f"{i}.vasp,{labels[i]}\n" for i in order))
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    script = ("import resource, runpy, sys, torch\ntorch.set_num_threads(%d)\nsys.argv = sys.argv[1:]\ntry:\n"
              "    runpy.run_module('alignn.train_alignn', run_name='__main__')\nfinally:\n"
              "    print('CUDA_PEAK_BYTES', torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0, "
              "flush=True)\n" % threads)
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, alignn_python(), "-c", script, "train_alignn.py",
                           "--root_dir", str(data), "--config_name", str(out / "config.json"),
                           "--file_format", "poscar", "--output_dir", str(out / "out"), "--device", device],
                          capture_output=True, text=True, env=env, cwd=out)
    wall = time.perf_counter() - t0
    (out / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"alignn failed (exit {proc.returncode}); see {out / 'log.txt'}:\n{proc.stderr[-2000:]}")
    train_s, val_s = _epoch_times(proc.stdout)
    rows = [line.split(",") for line in (out / "out" / "prediction_results_test_set.csv").read_text().splitlines()[1:]]
    mae = sum(abs(float(t) - float(p)) for _, t, p in rows) / len(rows)
    history = out / "out" / "history_val.json"  # per epoch: [loss (L1 = MAE of the one graph target), parts...]
    val_mae = float(json.loads(history.read_text())[-1][0]) if history.is_file() else None
    params = re.search(r"Model parameters (\d+)", proc.stdout)
    rss = re.search(r"MAXRSS_KB (\d+)", proc.stdout)
    gpu = re.search(r"CUDA_PEAK_BYTES (\d+)", proc.stdout)
    res = {"mae": mae, "val_mae": val_mae, "lr": lr, "n_test": len(rows), "epochs": len(train_s),
           "train_structures_per_s": len(parts["train"]) * len(train_s) / max(sum(train_s), 1e-9),
           "epoch_structures_per_s": len(parts["train"]) * len(train_s) / max(sum(train_s) + sum(val_s), 1e-9),
           "inference_structures_per_s": len(parts["val"]) * len(val_s) / max(sum(val_s), 1e-9),
           "peak_rss_gb": int(rss.group(1)) / 1024**2 if rss else None,
           **({"peak_gpu_gb": int(gpu.group(1)) / 1024**3} if gpu and device == "cuda" else {}),
           "n_parameters": int(params.group(1)) if params else None, "wall_s": wall,
           "threads": threads, "alignn_version": alignn_version(), "run_folder": str(out)}
    done.write_text(json.dumps(res, indent=1))
    return res
