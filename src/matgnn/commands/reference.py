"""``matgnn reference``: a reference model folder from a source's labels and a fallback model
(:class:`~matgnn.models.reference.ReferenceModel`)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from matgnn.data.twins import SLAB_VACUUM
from matgnn.models.reference import ReferenceModel, entries_of


def build_reference(structures: Iterable[Any], target: str, fallback: str | Path, out: str | Path,
                    fallback_head: str | None = None, tolerances: dict[str, float] | None = None,
                    skip_hubbard_u: bool = False, slab_vacuum: float | None = SLAB_VACUUM) -> tuple[Path, dict[str, Any]]:
    """Write a reference model folder ``out`` (which must not hold a model already): ``structures``'
    ``target`` labels, and ``fallback`` (a run folder, model folder, ensemble folder or shipped name; an
    ensemble answers with its members' mean) for structures without a match. Returns the folder and what ``model.json`` records under ``reference`` (entries, fallback, ...),
    with ``left_out`` the structures left out, as ``(id, reason)``. Structures match under the rule of
    :mod:`matgnn.data.twins` (slabs with their vacuum normalised to ``slab_vacuum``; None: whole cells as stored,
    the rule of older reference folders, at :data:`~matgnn.data.twins.WHOLE_CELL_TOLERANCES` unless ``tolerances`` say)."""
    from matgnn.artifacts import MODEL_FILE, model_folder, read_model_info, resolve
    from matgnn.errors import UserError
    from matgnn.models.loading import load_model

    out = Path(out)
    if (out / MODEL_FILE).exists():
        raise UserError(f"{out} holds a model already; choose another folder (nothing was overwritten)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; choose another (nothing was overwritten)")
    found = resolve(fallback)
    if found.kind == "ensemble":  # its members' mean answers (their σ is not kept: a reference answers one value)
        from matgnn.prediction.predict import Predictor

        members = Predictor([fallback])
        fb, fb_dir = members.combined, found.path
        fb_info: dict[str, Any] = {"graphs": members.settings.model_dump()}
        if members.train_elements is not None:
            fb_info["train_elements"] = sorted(members.train_elements)
    else:
        fb_dir = model_folder(fallback)
        fb = load_model(fb_dir)
        fb_info = read_model_info(fb_dir)
    entries, left_out = entries_of(structures, [target], skip_hubbard_u)
    if not entries["ids"]:
        raise UserError(f"no structure of the reference has a finite '{target}' label ({len(left_out)} left out)")
    heads_map = {target: fallback_head} if fallback_head and fallback_head != target else None
    try:
        model = ReferenceModel.of([{"name": target, "level": "graph"}], entries, fb, heads_map, tolerances, slab_vacuum)
    except ValueError as e:
        raise UserError(f"fallback {fb_dir}: {e}") from None
    extra = {k: fb_info[k] for k in ("graphs", "train_elements") if k in fb_info}
    extra["reference"] = {"entries": len(entries["ids"]), "left_out": len(left_out), "fallback": str(fb_dir),
                          "target": target, "tolerances": model.tolerances, "slab_vacuum": slab_vacuum,
                          "skip_hubbard_u": skip_hubbard_u}
    # written beside the destination and renamed into place when complete: a full disk, a read-only folder or
    # Ctrl-C leaves no half-written model behind
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        model.save(tmp, extra=extra)
        if left_out:
            with open(tmp / "reference_left_out.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "reason"])
                w.writerows(left_out)
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, {**extra["reference"], "left_out": left_out}
