"""The shipped models' answers on a fixed set of structures, kept in ``tests/data/shipped_answers.json``, and
those of the model folders in ``tests/data/saved_models/`` (a network with three kinds of heads, a delta model,
an ensemble with a binned σ recalibration, a reference model, a linear regressor on CHGNet features: written
by matgnn 0.1.0 before the saved-model base existed, and kept as they were written):
``tests/test_model_contract.py`` checks that every one still loads and gives them (bit for bit on a CPU of the
kind that recorded them), so a change of how models are put together cannot move a prediction.

``python tests/shipped_answers.py`` rewrites the file (only when a model is retrained on purpose)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ANSWERS = Path(__file__).parent / "data" / "shipped_answers.json"
SAVED = Path(__file__).parent / "data" / "saved_models"


def structures():
    """Bulk, monolayers, a magnet, a slab: ASE-built, so no file or download is needed."""
    from ase.build import bulk, fcc111, mx2

    from matgnn.data.structure import Structure

    atoms = {
        "si": bulk("Si", "diamond", a=5.43),
        "nacl": bulk("NaCl", "rocksalt", a=5.64),
        "fe": bulk("Fe", "bcc", a=2.87, cubic=True),
        "nio": bulk("NiO", "rocksalt", a=4.17),
        "mos2": mx2("MoS2", vacuum=8.0),
        "wse2_1t": mx2("WSe2", kind="1T", a=3.3, vacuum=9.0),
        "pt_slab": fcc111("Pt", size=(2, 2, 3), vacuum=7.0),
    }
    atoms["mos2"].pbc = [True, True, False]
    atoms["wse2_1t"].pbc = [True, True, False]
    atoms["pt_slab"].pbc = [True, True, False]
    return [Structure.from_ase(a, k) for k, a in atoms.items()]


def answers() -> dict:
    """Model name -> structure id -> head -> value (a list for a per-atom head; ``<head>_std`` for an ensemble's σ),
    on one thread: the same sums in the same order on any machine, and after any test that changed the count."""
    import torch

    from matgnn.artifacts import SHIPPED_DIR
    from matgnn.prediction.predict import Predictor, predict_structures

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict = {}
        names = sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
        for name in names + sorted(str(p) for p in SAVED.iterdir()):
            model = Predictor([name])
            rows = {}
            for row in predict_structures(model, structures(), model.settings):
                rows[row["id"]] = {k: (np.asarray(v, dtype=float).tolist() if np.ndim(v) else float(v))
                                   for k, v in row.items() if k not in ("id", "structure", "answers_at_bound")}
            out[name if name in names else "saved_models/" + Path(name).name] = rows
        return out
    finally:
        torch.set_num_threads(threads)


def cpu_kind() -> str:
    """torch, its SIMD level and the CPU's model name: two CPUs of one SIMD level (an Intel Xeon and an AMD EPYC,
    both AVX512) take different kernel paths and round float32 sums differently in the last digits."""
    import torch

    from matgnn.runtime import cpu_model

    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {cpu_model()}, 1 thread"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    ANSWERS.write_text(json.dumps({"cpu": cpu_kind(), "answers": answers()}, indent=1) + "\n")
    print(f"wrote {ANSWERS}")
