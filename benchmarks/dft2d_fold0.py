"""Behaviour unchanged through the redesign: fold 0 of ``benchmarks/dft2d_bandgap.py`` for CGCNN and PNA
(its exact settings: 8 Å / 12 neighbours, L1, AdamW lr 2e-3 one-cycle, batch 32, weight decay 1e-4,
patience 40, 150 epochs, PNA capped at 100), one CPU thread, compared with the same fold trained by
the code of commit a534c13 (the commit of the committed dft2d_bandgap.json, before the redesign),
measured with this script's ``run_one`` calls in a worktree of that commit:
cgcnn 0.5622570279563122 eV, pna 0.5556882059123988 eV.

The comparison runs with the fused CPU kernel switched off (``MATGNN_KERNELS=off``: the PyTorch path, the code
the reference ran); ``cgcnn_fused`` is CGCNN once more with the kernel (session 16), whose sums run in another
order, so it is compared with the reference's fold noise, not bit for bit.

Usage: python benchmarks/dft2d_fold0.py
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, ROOT, target, write_result  # noqa: E402
from dft2d_bandgap import run_one  # noqa: E402

REFERENCE = {"commit": "a534c130395a4b43d213ae1905bdf81f90cea609",
             "cgcnn": 0.5622570279563122, "pna": 0.5556882059123988}


def main() -> None:
    torch.set_num_threads(1)
    started = time.time()
    metrics: dict[str, float] = {}
    for fam in ("cgcnn", "pna", "cgcnn_fused"):
        os.environ["MATGNN_KERNELS"] = "on" if fam == "cgcnn_fused" else "off"
        mae, secs, _ = run_one(fam.removesuffix("_fused"), {"kind": "kfold", "folds": 5, "fold": 0, "val": 0.1, "seed": 42}, 150,
                               str(ROOT / "benchmarks" / "runs" / "dft2d_fold0"))
        metrics[f"{fam}.fold0.mae"] = mae
        metrics[f"{fam}.fold0.seconds"] = secs
        ref = REFERENCE[fam.removesuffix("_fused")]
        metrics[f"{fam}.fold0.abs_difference_to_reference"] = abs(mae - ref)
        print(f"{fam}: fold 0 MAE {mae!r} (reference {ref!r})", flush=True)
    os.environ.pop("MATGNN_KERNELS")
    noise = json.loads((RESULTS / "dft2d_bandgap.json").read_text())["metrics"]["cgcnn.cv5.mae_std"]
    write_result(
        "dft2d_fold0", started,
        data={"source": "jarvis:dft_2d", "target": "optb88vdw_bandgap (eV)", "split": "fold 0 of 5 (seed 42, val 10 %)",
              "threads": 1, "reference_commit": REFERENCE["commit"],
              "kernel": "cgcnn and pna with MATGNN_KERNELS=off (the PyTorch path); cgcnn_fused with the fused CPU kernel",
              "fold_noise": f"cgcnn_fused is compared with CGCNN's 5-fold std in dft2d_bandgap.json ({noise:.4f} eV)"},
        metrics=metrics,
        anchors={f"reference.{f}.fold0.mae": REFERENCE[f] for f in ("cgcnn", "pna")},
        targets={**{f"{f}.same_as_before": target(1e-6, "<=", metrics[f"{f}.fold0.abs_difference_to_reference"])
                    for f in ("cgcnn", "pna")},
                 "cgcnn_fused.within_fold_noise": target(noise, "<=", metrics["cgcnn_fused.fold0.abs_difference_to_reference"])},
    )


if __name__ == "__main__":
    main()
