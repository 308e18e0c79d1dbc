"""Behaviour unchanged through the redesign: fold 0 of ``benchmarks/dft2d_bandgap.py`` for CGCNN and PNA
(its exact settings: 8 Å / 12 neighbours, L1, AdamW lr 2e-3 one-cycle, batch 32, weight decay 1e-4,
patience 40, 150 epochs, PNA capped at 100), one CPU thread, compared with the same fold trained by
the code of commit a534c13 (the commit of the committed dft2d_bandgap.json, before the redesign),
measured with this script's ``run_one`` calls in a worktree of that commit:
cgcnn 0.5622570279563122 eV, pna 0.5556882059123988 eV.

The comparison runs with the fused CPU kernel switched off (``MATGNN_KERNELS=off``: the PyTorch path, the code
the reference ran); ``cgcnn_fused`` is CGCNN once more with the kernel, whose sums run in another
order, so it is compared with the reference's fold noise, not bit for bit.

The recorded reference values were trained on the machine of that run; another CPU (another instruction set,
so other MKL kernels) rounds differently and, over 150 epochs, lands elsewhere. ``--reference-from COMMIT``
trains the reference here, from that commit's own code (a temporary git worktree, its ``run_one`` in a subprocess,
one thread), so the comparison is on one machine.

Usage: python benchmarks/dft2d_fold0.py [--reference-from a534c13]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, ROOT, kernels, target, write_result  # noqa: E402
from dft2d_bandgap import run_one  # noqa: E402

REFERENCE = {"commit": "a534c130395a4b43d213ae1905bdf81f90cea609",
             "cgcnn": 0.5622570279563122, "pna": 0.5556882059123988}


SPLIT = {"kind": "kfold", "folds": 5, "fold": 0, "val": 0.1, "seed": 42}


def reference_here(commit: str) -> dict[str, float]:
    """Fold 0 of CGCNN and PNA trained on this machine by ``commit``'s code (a temporary worktree beside this
    checkout, removed afterwards)."""
    # beside this checkout, so the old code finds ../shared/data where this one does
    tree = ROOT.parent / f".{ROOT.name}-fold0-reference-{os.getpid()}"
    subprocess.run(["git", "worktree", "add", "--detach", "-f", str(tree), commit], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        code = ("import json, sys, torch; torch.set_num_threads(1); sys.path.insert(0, 'benchmarks'); "
                "from dft2d_bandgap import run_one; "
                f"out = {{f: run_one(f, {SPLIT!r}, 150, {str(ROOT / 'benchmarks' / 'runs' / 'dft2d_fold0_reference')!r})[0] "
                "for f in ('cgcnn', 'pna')}; print('REFERENCE ' + json.dumps(out))")
        r = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(tree / "src"), "MATGNN_KERNELS": "off"})
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("REFERENCE ")]
        if r.returncode != 0 or not lines:
            raise SystemExit(f"the reference run at {commit} failed:\n{r.stderr[-3000:]}")
        return json.loads(lines[-1].removeprefix("REFERENCE "))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reference-from", metavar="COMMIT", help="train the reference on this machine from COMMIT's code")
    args = p.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    reference = dict(REFERENCE)
    if args.reference_from:
        full = subprocess.run(["git", "rev-parse", args.reference_from], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout.strip()
        reference = {"commit": full, **reference_here(full)}
        print("reference on this machine:", reference, flush=True)
    metrics: dict[str, float] = {}
    for fam in ("cgcnn", "pna", "cgcnn_fused"):
        with kernels("on" if fam == "cgcnn_fused" else "off"):
            mae, secs, _ = run_one(fam.removesuffix("_fused"), SPLIT, 150,
                                   str(ROOT / "benchmarks" / "runs" / "dft2d_fold0"))
        metrics[f"{fam}.fold0.mae"] = mae
        metrics[f"{fam}.fold0.seconds"] = secs
        ref = reference[fam.removesuffix("_fused")]
        metrics[f"{fam}.fold0.abs_difference_to_reference"] = abs(mae - ref)
        print(f"{fam}: fold 0 MAE {mae!r} (reference {ref!r})", flush=True)
    noise = json.loads((RESULTS / "dft2d_bandgap.json").read_text())["metrics"]["cgcnn.cv5.mae_std"]
    write_result(
        "dft2d_fold0", started,
        data={"source": "jarvis:dft_2d", "target": "optb88vdw_bandgap (eV)", "split": "fold 0 of 5 (seed 42, val 10 %)",
              "threads": 1, "reference_commit": reference["commit"],
              "reference": ("trained on this machine by the reference commit's code" if args.reference_from else
                            "the values recorded in this script (trained on the machine of that run)"),
              "kernel": "cgcnn and pna with MATGNN_KERNELS=off (the PyTorch path); cgcnn_fused with the fused CPU kernel",
              "fold_noise": f"cgcnn_fused is compared with CGCNN's 5-fold std in dft2d_bandgap.json ({noise:.4f} eV)"},
        metrics=metrics,
        anchors={**{f"reference.{f}.fold0.mae": reference[f] for f in ("cgcnn", "pna")},
                 **({f"recorded_reference.{f}.fold0.mae": REFERENCE[f] for f in ("cgcnn", "pna")}
                    if args.reference_from else {})},
        targets={**{f"{f}.same_as_before": target(1e-6, "<=", metrics[f"{f}.fold0.abs_difference_to_reference"])
                    for f in ("cgcnn", "pna")},
                 "cgcnn_fused.within_fold_noise": target(noise, "<=", metrics["cgcnn_fused.fold0.abs_difference_to_reference"])},
    )


if __name__ == "__main__":
    main()
