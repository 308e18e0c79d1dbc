"""Pretrained backbones and 2D data on the small 2D sets (issue: close the small-data gap).

Tasks (5-fold; for ``dft_2d`` the folds of ``benchmarks/dft2d_bandgap.py``: seed 42, validation 10 %
of all drawn from the training folds):

- ``dft2d_gap``: JARVIS dft_2d OptB88vdW band gap (eV), 1,076 monolayers;
- ``dft2d_gap_twin_grouped``: the same gaps on 5 folds that keep each set of structural twins (the same
  monolayer under two JVASP ids; ``split: {kind: grouped_kfold, group_by: structure}``) in one fold, seed 42:
  no test monolayer has a twin in its fold's training data, so no model can answer from a twin's label;
- ``dft2d_exfoliation``: JARVIS dft_2d exfoliation energy (meV/atom), the 748 labelled;
  ``dft2d_exfoliation_twin_grouped``: the same on folds that keep structural twins together (74 of the 748 have
  one; a twin's energy differs with its bulk parent, but mostly by a few meV/atom);
- ``2dmatpedia_gap``: 2DMatPedia PBE band gap (eV), 6,351 monolayers.

Models (metrics ``<model>.<task>.mae_mean`` / ``_std``):

- ``chgnet``: ``matgnn train`` with ``model: {name: chgnet}`` — CHGNet 0.3.0's frozen per-atom features,
  our MLP and head (the code path of users);
- ``chgnet_gbm``: gradient-boosted trees (XGBoost) on the same features pooled per structure (mean, max,
  min of the atoms' features), the issue's quick baseline;
- ``chgnet_2dm``: the ``chgnet`` model pretrained on all 2DMatPedia PBE gaps, then fine-tuned on each
  dft_2d fold (``transfer.from_model``; a new head); ``chgnet_2dm_disjoint``: pretrained only on the
  2DMatPedia monolayers whose reduced formula is in no dft_2d structure;
- ``chgnet_gbm_pbe``: ``chgnet_gbm`` with the 2DMatPedia-pretrained model's predicted PBE gap as one
  more input (``_disjoint``: from the disjoint pretraining);
- ``chgnet_delta_pbe`` (``_disjoint``): delta learning on the dft_2d gap with the 2DMatPedia-pretrained
  model as the frozen base (``delta: {base_model: ...}``): the MLP learns OptB88vdW − predicted PBE;
- ``chgnet_ref``: the 2DMatPedia reference as a model (``matgnn reference``): a dft_2d monolayer that matches a
  2DMatPedia monolayer (same reduced formula, pymatgen StructureMatcher) gets that monolayer's PBE gap as its
  prediction, any other the 2DMatPedia-pretrained model's (no dft_2d label used);
- ``chgnet_ref_delta``: delta learning with that reference model as the frozen base: the MLP learns
  OptB88vdW − (matched PBE label, else predicted PBE gap); ``chgnet_gbm_ref``: ``chgnet_gbm`` with the
  reference model's answer as one more input. All three see the labels of 2DMatPedia monolayers with dft_2d
  formulas (no ``_disjoint`` form: a formula-disjoint reference matches nothing); ``chgnet_ref_first``: the
  reference answers where it matches, and this fold's ``chgnet_delta_pbe`` model (trained on dft_2d) elsewhere
  (``matgnn reference --fallback <the delta run>``); ``chgnet_ref_first_nou``: the same with the reference
  leaving out the oxides and fluorides 2DMatPedia computed with GGA+U (``--skip-hubbard-u``; OptB88vdW has no U);
  ``data.matching_rules``: how many dft_2d monolayers that reference matches, and how far the matched PBE label is
  from the OptB88vdW one, under the reference's rule (slabs given the same vacuum, stol 0.3) and under the rule
  of older reference folders (whole cells as stored, stol 0.5);
  ``chgnet_ref_twin``: dft_2d's own labels before 2DMatPedia's — a reference of the fold's training and validation
  monolayers whose fallback is the ``_ref_first_nou`` model: JARVIS lists some monolayers twice (the same layer
  exfoliated from different bulk parents), and a test monolayer with such a twin in training gets the twin's label
  (``matgnn reference`` on the training data). ``<model>.dft2d_gap.no_twin_mae_mean``: the ``_ref_first_nou`` and
  ``_ref_twin`` models and their ensembles on the test monolayers without a training twin only (how much of a
  number the twins make); ``data.twins`` counts them per fold;
- ``chgnet_log`` (exfoliation): the ``chgnet`` MLP on log1p of the energy (``transform: log``);
  ``chgnet_gbm_geo`` (exfoliation): XGBoost on the pooled features plus the layer's geometry (area per atom,
  thickness, atom count, atoms per area, slab volume per atom), learning log(energy / area per atom), the log of
  a binding energy per area; ``chgnet_area`` (exfoliation): the MLP learning log(energy / area per atom) itself
  (``transform: log_per_area``); ``ens_log_geo``: the mean of the ``_log`` MLPs, the ``_gbm_geo`` models and PNA;
  ``ens_area_geo``: the same with the ``_area`` MLPs in place of the ``_log`` ones; ``ens_all``: every model of
  the fold;
- ``ens_delta``, ``ens_nn``, ``ens_nn_disjoint`` (variant ``ensemble``): the mean of each fold's
  network runs — the delta models of every backbone; every plain, transfer and delta run (pretraining on all
  of 2DMatPedia); the plain ones and those pretrained without any dft_2d formula. ``ens_ref``: the reference-based
  delta models of every backbone; ``ens_ref_delta``: those and the ``_delta_pbe`` ones. On the exfoliation energy
  (no pretraining there) ``ens_nn`` is the mean of the frozen backbones' MLPs and PNA.
- ``pna``: our PNA from scratch at the dft2d_bandgap budget (exfoliation; 2DMatPedia with ``--scratch``;
  the dft_2d gap's is in dft2d_bandgap.json).
- ``sevennet``, ``sevennet_gbm``, ``sevennet_2dm``, ...: the same variants on SevenNet-0's frozen features
  (``model: {name: sevennet}``; 128 per atom; ``--backbones sevennet``).

- ``cgcnn2`` and ``cgcnn`` (``--seed-task``, 2DMatPedia only): the research's own task side by side on the
  same folds and CPU: ``cgcnn2`` (PyPI "Reproduction of CGCNN") through its CLI at its defaults with early
  stopping after 30 epochs, and our CGCNN (``matgnn train``, width 64 × 3, 8 Å / 12 neighbours, its
  defaults otherwise), as ``benchmarks/cgcnn2_compare.py`` does on dft_2d.

- ``chgnet_ft`` (``--finetune-folds N``, dft_2d gap): CHGNet 0.3.0 itself fine-tuned with our MLP and head
  (``model: {name: chgnet_ft}``, embedding frozen; CHGNET_FT_TRAIN) on the first N folds; with N < 5 the
  metric is ``chgnet_ft.dft2d_gap.folds<N>.mae_mean`` beside ``chgnet_ft.dft2d_gap.folds<N>.frozen_chgnet_mae_mean``
  (the frozen backbone's ``chgnet`` on the same folds). ``--finetune-variants plain,tuned``: also
  ``chgnet_ft_tuned`` — our MLP at lr 2e-3 for 100 epochs, CHGNet's own layers at 1/20 of it
  (``backbone_lr_scale: 0.05``), its energy and moments anchored to the pretrained model's (``anchor_weight: 1``).
  ``sevennet``, ``sevennet_tuned``: the same two recipes on SevenNet-0 itself (``sevennet_ft``, no anchor),
  beside the frozen ``sevennet`` on the same folds; ``sevennet_anchored``: ``sevennet_tuned`` with SevenNet's
  energy per atom anchored to the pretrained model's (``anchor_weight: 1``).

``--merge`` keeps the committed file's other models (each says the commit that measured it).

Usage: python benchmarks/backbones_2d.py [--folds 5] [--tasks dft2d_gap,dft2d_exfoliation,2dmatpedia_gap] [--scratch]
       [--backbones chgnet,sevennet] [--no-pna] [--seed-task] [--finetune-folds N] [--finetune-first-fold F]
       [--finetune-variants plain,tuned,sevennet,sevennet_tuned,sevennet_anchored]
       [--variants ...] [--no-disjoint] [--merge]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, ROOT, SHARED_DATA, target, write_result  # noqa: E402

from matgnn.config import RunConfig  # noqa: E402
from matgnn.data.sources import make_source  # noqa: E402
from matgnn.models.reference import reduced_formula  # noqa: E402
from matgnn.training.run import train  # noqa: E402
from matgnn.training.splits import grouped_kfold_split, kfold_split  # noqa: E402

OUT = ROOT / "benchmarks" / "runs" / "backbones_2d"
JARVIS = {"kind": "jarvis", "dataset": "dft_2d", "store_dir": str(SHARED_DATA / "jarvis")}
TASKS = {"dft2d_gap": (JARVIS, "optb88vdw_bandgap"), "dft2d_exfoliation": (JARVIS, "exfoliation_energy"),
         "dft2d_gap_twin_grouped": (JARVIS, "optb88vdw_bandgap"),
         "dft2d_exfoliation_twin_grouped": (JARVIS, "exfoliation_energy")}
GAP_TASKS = ("dft2d_gap", "dft2d_gap_twin_grouped")  # the dft_2d gap: the 2DMatPedia pretraining applies
EXFOLIATION_TASKS = ("dft2d_exfoliation", "dft2d_exfoliation_twin_grouped")  # the geometry-aware variants apply
CHGNET = {"name": "chgnet", "hidden": 128, "layers": 2, "dropout": 0.1}
CHGNET_TRAIN = {"epochs": 200, "batch_size": 32, "lr": 0.002, "weight_decay": 1e-4, "scheduler": "onecycle",
                "patience": 60, "tensorboard": False}
CHGNET_FT = {"name": "chgnet_ft", "hidden": 128, "layers": 2, "dropout": 0.1, "freeze": ["embedding"]}
#: --finetune-variants: (label, model settings, training settings) over CHGNET_FT / CHGNET_FT_TRAIN — "plain";
#: "tuned": our MLP at the frozen runs' lr 2e-3 for 100 epochs, CHGNet's own layers at 1/20 of it, its energy
#: and moments anchored to the pretrained model's
#: "sevennet", "sevennet_tuned": the same two recipes on SevenNet-0 (``sevennet_ft``, no anchor; tuned for 40
#: epochs, not 100: 23–39 s an epoch on one busy CPU thread); "sevennet_anchored": sevennet_tuned with SevenNet's
#: energy per atom anchored to the pretrained model's (``anchor_weight: 1``; SevenNet has no moments)
CHGNET_FT_VARIANTS = {"plain": ("chgnet_ft", {}, {}),
                      "tuned": ("chgnet_ft_tuned", {"backbone_lr_scale": 0.05, "anchor_weight": 1.0},
                                {"epochs": 100, "lr": 0.002, "patience": 40}),
                      "sevennet": ("sevennet_ft", {"name": "sevennet_ft"}, {}),
                      "sevennet_tuned": ("sevennet_ft_tuned", {"name": "sevennet_ft", "backbone_lr_scale": 0.05},
                                         {"epochs": 40, "lr": 0.002, "patience": 40}),
                      "sevennet_anchored": ("sevennet_ft_anchored",
                                            {"name": "sevennet_ft", "backbone_lr_scale": 0.05, "anchor_weight": 1.0},
                                            {"epochs": 40, "lr": 0.002, "patience": 40})}
#: a fine-tuned variant's label -> the frozen backbone model it is compared with on the same folds
FT_FROZEN = {label: ("sevennet" if extra.get("name") == "sevennet_ft" else "chgnet")
             for label, extra, _ in CHGNET_FT_VARIANTS.values()}
CHGNET_FT_TRAIN = {"epochs": 30, "batch_size": 32, "lr": 5e-4, "weight_decay": 1e-4, "scheduler": "onecycle",
                   "patience": 30, "tensorboard": False}
PNA = {"name": "pna", "hidden": 64, "layers": 3}
PNA_TRAIN = {"epochs": 100, "batch_size": 32, "lr": 0.002, "weight_decay": 1e-4, "scheduler": "onecycle",
             "patience": 40, "tensorboard": False}


def unpack_2dmatpedia() -> Path:
    folder = OUT / "2dmatpedia"
    if not (folder / "structure_database" / "id_prop.csv").is_file():
        with zipfile.ZipFile(SHARED_DATA / "2dmatpedia" / "structure_database.zip") as z:
            z.extractall(folder)
    return folder / "structure_database"


def run_cfg(source: dict, tgt: str, model: dict, train_cfg: dict, split: dict, name: str, transform: str = "none",
            **extra) -> dict:
    cfg = RunConfig.model_validate({"source": source, "targets": [{"name": tgt, "level": "graph", "loss": "l1",
                                                                   "transform": transform}],
                                    "model": model, "train": train_cfg, "split": split,
                                    "output_dir": str(OUT / "runs"), "name": name, **extra})
    from rich.console import Console

    run = train(cfg, progress=False, console=Console(stderr=True, quiet=True))
    m = json.loads((run / "metrics.json").read_text())
    return {"mae": m.get(f"test.{tgt}.mae"), "val_mae": m.get(f"val.{tgt}.mae"), "run": str(run),
            "seconds": m["wall_seconds"]}


def ensembles(fold_runs: dict[str, str], task: str = "dft2d_gap") -> dict[str, list[str]]:
    """Ensembles of a fold's network runs: ``ens_delta`` (the delta models of every backbone), ``ens_nn``
    (every run whose pretraining saw all of 2DMatPedia, and the plain ones), ``ens_nn_disjoint`` (only
    runs whose pretraining excluded every dft_2d formula, and the plain ones), ``ens_ref`` (the delta models
    on the 2DMatPedia reference), ``ens_ref_delta`` (those and the ``_delta_pbe`` ones) and ``ens_log_geo``
    (the ``_log`` MLPs, the ``_gbm_geo`` models and PNA, where they ran), ``ens_ref_first`` (the mean of the
    ``_ref_first`` answers: the reference's label where it matches, the mean of the delta models elsewhere) and
    ``ens_ref_first_nou`` (the same for ``_ref_first_nou``), ``ens_ref_twin`` (the ``_ref_twin`` models); on the exfoliation energy ``ens_area_geo`` (the
    ``_area`` MLPs, the ``_gbm_geo`` models and PNA) and ``ens_all``: every network and GBM model of the fold;
    ``ens_delta_<backbone>_seeds``: that backbone's ``_delta_pbe`` and ``_delta_pbe_seed1`` models (two seeds of one
    backbone, against ``ens_delta``'s two backbones). An
    ensemble is
    formed only when every kind of its members ran (a partial rerun does not redefine a committed one)."""
    plain = [m for m in fold_runs if "_" not in m]
    delta = [m for m in fold_runs if m.endswith("_delta_pbe")]
    pre2dm = [m for m in fold_runs if m.endswith("_2dm")]
    disjoint = [m for m in fold_runs if m.endswith("_disjoint")]
    ref = [m for m in fold_runs if m.endswith("_ref_delta")]
    logged = [m for m in fold_runs if m.endswith(("_log", "_gbm_geo"))]
    first = [m for m in fold_runs if m.endswith("_ref_first")]
    first_nou = [m for m in fold_runs if m.endswith("_ref_first_nou")]
    twin = [m for m in fold_runs if m.endswith("_ref_twin")]
    area = [m for m in fold_runs if m.endswith("_area")]
    out = {"ens_ref_first": first, "ens_ref_first_nou": first_nou, "ens_ref_twin": twin, "ens_delta": delta, "ens_ref": ref,
           "ens_ref_delta": ref + delta if ref and delta else [],
           "ens_log_geo": [m for m in logged if not m.endswith("_area")] + [m for m in fold_runs if m == "pna"]
           if logged else [],
           "ens_area_geo": area + [m for m in fold_runs if m.endswith("_gbm_geo") or m == "pna"] if area else []}
    if plain and (pre2dm or task not in GAP_TASKS):
        out["ens_nn"] = plain + pre2dm + delta
    if plain and disjoint:
        out["ens_nn_disjoint"] = plain + disjoint
    if task in EXFOLIATION_TASKS and plain and logged:  # every model of the fold
        out["ens_all"] = list(fold_runs)
    for bb in ("chgnet", "sevennet"):  # one backbone's delta model at two training seeds
        if f"{bb}_delta_pbe" in fold_runs and f"{bb}_delta_pbe_seed1" in fold_runs:
            out[f"ens_delta_{bb}_seeds"] = [f"{bb}_delta_pbe", f"{bb}_delta_pbe_seed1"]
    return {k: v for k, v in out.items() if len(v) > 1}


def ensemble_mae(members: list, y: dict[str, float], only: set[str] | None = None) -> float:
    """Test MAE of the mean of members' test predictions (same split, so the same ids; ``only``: of those ids
    only); a member is a run folder (its ``predictions_test.csv``) or predictions by id."""
    preds: dict[str, list[float]] = {}
    for m in members:
        for i, v in predictions_of(m).items():
            preds.setdefault(i, []).append(v)
    return float(np.mean([abs(np.mean(v) - y[i]) for i, v in preds.items() if only is None or i in only]))


def predictions_of(member) -> dict[str, float]:
    """A fold member's test predictions by id: a run folder's ``predictions_test.csv``, or the predictions."""
    if isinstance(member, dict):
        return member
    rows = list(csv.DictReader(open(Path(member) / "predictions_test.csv")))
    col = next(k for k in rows[0] if k.endswith("_pred"))
    return {row["id"]: float(row[col]) for row in rows}


def nearest_labels(features: dict[str, np.ndarray], reference: list, reference_features: dict[str, np.ndarray],
                   k: int = 5) -> dict[str, np.ndarray]:
    """For each structure (its pooled backbone ``features`` by id), the labels (``target``) of its ``k`` nearest
    labelled ``reference`` structures in that feature space (standardised over the reference; their pooled
    features by id) and their distances. No label of the structures is used: the reference is the pretraining
    set (2DMatPedia)."""
    from sklearn.neighbors import NearestNeighbors

    ref = [r for r in reference if np.isfinite(r.graph_targets.get("target", np.nan))]
    a = np.stack([reference_features[r.id] for r in ref])
    mu, sd = a.mean(0), a.std(0) + 1e-6
    labels = np.array([r.graph_targets["target"] for r in ref])
    ids = list(features)
    dist, idx = NearestNeighbors(n_neighbors=k).fit((a - mu) / sd).kneighbors(
        (np.stack([features[i] for i in ids]) - mu) / sd)
    return {i: np.r_[labels[idx[j]], dist[j]] for j, i in enumerate(ids)}


def layer_geometry(s) -> np.ndarray:
    """A monolayer's in-plane area per atom (Å²), thickness (Å, the atoms' extent along the normal), atom count,
    atoms per Å² and volume per atom of the slab (area per atom × thickness). The exfoliation energy per atom is
    roughly a binding energy per area (~20 meV/Å²) times the area per atom."""
    cell, pbc = np.asarray(s.cell, float), np.asarray(s.pbc, bool)
    k = int(np.argmin(pbc)) if not pbc.all() else 2  # the vacuum axis
    a, b = (cell[i] for i in range(3) if i != k)
    area, n = float(np.linalg.norm(np.cross(a, b))), len(s.numbers)
    normal = np.cross(a, b) / area
    height = abs(cell[k] @ normal)
    z = np.sort(np.mod(np.asarray(s.positions, float) @ normal, height))
    thickness = height - np.diff(np.r_[z, z[0] + height]).max()
    return np.array([area / n, thickness, n, n / area, thickness * area / n])


def pooled_features(structures, backbone: str = "chgnet") -> dict[str, np.ndarray]:
    """Each structure's backbone features pooled: mean, max and min over its atoms (3 × the width)."""
    from matgnn.models.backbones import feature_store as backbone_features
    from matgnn.models.regressors import (
        graph_rows,  # the pooling of matgnn's own regressor models
    )

    items = [(s.id, s.numbers, np.asarray(s.positions, np.float32), np.asarray(s.cell, np.float32),
              np.asarray(s.pbc, bool)) for s in structures]
    if not items:
        return {}
    rows = graph_rows([atom for atom, _ in backbone_features(backbone).features(items)])
    return {sid: row for (sid, *_), row in zip(items, rows)}


def gbm_predict(x: dict[str, np.ndarray], y: dict[str, float], parts: dict[str, list[str]], seed: int = 42,
                per_area: dict[str, float] | None = None) -> dict[str, float]:
    """XGBoost's test predictions by id. ``per_area`` (area per atom by id): it learns log(y / area per atom),
    the log of a binding energy per area, and answers exp(that) × area per atom (exfoliation energies)."""
    import xgboost as xgb

    tr = parts["train"] + parts["val"]  # no early stopping: validation ids train too
    model = xgb.XGBRegressor(n_estimators=600, learning_rate=0.03, max_depth=6, subsample=0.8,
                             colsample_bytree=0.5, min_child_weight=2, random_state=seed, n_jobs=1)
    yt = np.array([y[i] for i in tr])
    if per_area is not None:
        yt = np.log(np.clip(yt / np.array([per_area[i] for i in tr]), 1e-3, None))
    model.fit(np.stack([x[i] for i in tr]), yt)
    pred = model.predict(np.stack([x[i] for i in parts["test"]])).astype(float)
    if per_area is not None:
        pred = np.exp(pred) * np.array([per_area[i] for i in parts["test"]])
    return dict(zip(parts["test"], pred.tolist()))


def gbm_fold(x: dict[str, np.ndarray], y: dict[str, float], parts: dict[str, list[str]], seed: int = 42) -> float:
    pred = gbm_predict(x, y, parts, seed)
    return float(np.mean([abs(pred[i] - y[i]) for i in parts["test"]]))


def predict_with(run: str, structures) -> dict[str, float]:
    """A run's (graph-head) predictions for structures, by id."""
    from matgnn.models import load_model
    from matgnn.prediction.predict import graph_settings_of, predict_structures

    model = load_model(run)
    head = model.head_specs[0]["name"]
    return {row["id"]: row[head] for row in predict_structures(model, list(structures), graph_settings_of(run))}


def matched_ids(folder: Path, structures) -> tuple[set[str], int]:
    """The ids of the structures a reference model answers from its reference (the rest: its fallback), and
    how many entries the reference holds."""
    from matgnn.models import load_model

    model = load_model(folder)
    return {s.id for s in structures if model.match(s.numbers, s.positions, s.cell) >= 0}, len(model.entries["ids"])


def reference_matches(folder: Path, structures) -> dict[str, int]:
    """How many structures a reference model answers from its reference (the rest: its fallback)."""
    hits, entries = matched_ids(folder, structures)
    return {"structures": len(structures), "matched": len(hits), "reference_entries": entries}


def matching_rules(structures, reference, tgt: str) -> dict[str, dict]:
    """The reference's rule against the rule of older reference folders: how many ``structures`` match a
    ``reference`` structure (2DMatPedia without GGA+U), and how far the closest match's label is from theirs
    (PBE against OptB88vdW gaps: mean, and how many off by more than 0.5 eV)."""
    from matgnn.data.twins import (
        SLAB_VACUUM,
        TOLERANCES,
        WHOLE_CELL_TOLERANCES,
        closest_match,
        matching_structure,
        structure_matcher,
    )
    from matgnn.models.reference import hubbard_u_applies

    by: dict[str, list] = {}
    for r in reference:
        if not hubbard_u_applies(r.numbers) and np.isfinite(r.graph_targets.get("target", np.nan)):
            by.setdefault(r.formula, []).append(r)
    out = {}
    for name, vacuum, tol in (("slabs_normalised", SLAB_VACUUM, TOLERANCES), ("whole_cells", None, WHOLE_CELL_TOLERANCES)):
        matcher = structure_matcher(tol)
        made: dict[str, object] = {}
        off = []
        def made_of(r):  # noqa: ANN001, ANN202
            if r.id not in made:
                made[r.id] = matching_structure(r.numbers, r.positions, r.cell, vacuum)
            return made[r.id]

        for s in structures:
            if s.formula not in by:
                continue
            best = closest_match(matching_structure(s.numbers, s.positions, s.cell, vacuum),
                                 ((r, made_of(r)) for r in by[s.formula]), matcher)
            if best is not None:
                off.append(abs(best[0].graph_targets["target"] - s.graph_targets[tgt]))
        out[name] = {"slab_vacuum": vacuum, "tolerances": tol, "matched": len(off),
                     "mean_abs_label_difference": float(np.mean(off)), "off_by_over_0.5": int(np.sum(np.array(off) > 0.5))}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--tasks", default="dft2d_gap,dft2d_exfoliation,2dmatpedia_gap",
                   help="also dft2d_gap_twin_grouped and dft2d_exfoliation_twin_grouped (folds that keep structural "
                        "twins together)")
    p.add_argument("--scratch", action="store_true", help="also PNA from scratch on 2DMatPedia (about 7 min a fold)")
    p.add_argument("--backbones", default="chgnet", help="chgnet, sevennet or both")
    p.add_argument("--no-pna", action="store_true", help="skip the PNA runs (exfoliation)")
    p.add_argument("--merge", action="store_true", help="keep the committed file's other models")
    p.add_argument("--seed-task", action="store_true", help="cgcnn2 and our CGCNN on the 2DMatPedia folds")
    p.add_argument("--finetune-folds", type=int, default=0, help="chgnet_ft on the first N dft_2d gap folds")
    p.add_argument("--finetune-first-fold", type=int, default=0,
                   help="fine-tune from this fold on (with --merge: the committed file's earlier folds of the same "
                        "variant complete the record)")
    p.add_argument("--finetune-variants", default="plain",
                   help="fine-tune recipes: plain (as CHGNET_FT), tuned (backbone at lr/20, anchored), sevennet, "
                        "sevennet_tuned (the same on sevennet_ft), sevennet_anchored (and SevenNet's energy anchored); "
                        "comma-separated")
    p.add_argument("--variants", default="mlp,gbm,2dm,gbm_pbe,delta_pbe",
                   help="backbone variants to run (none: only --finetune-folds): mlp, gbm, 2dm, gbm_pbe, delta_pbe, delta_pbe_seed1 "
                        "(both stages at training seed 1; with delta_pbe and ensemble: ens_delta_<backbone>_seeds), "
                        "ref, ref_delta, gbm_ref, "
                        "ref_first and ref_first_nou (with delta_pbe), ref_twin (with ref_first_nou), gbm_both (gap: one GBM over "
                        "every backbone's features, the PBE-gap models' answers and 2DMatPedia's nearest labels; "
                        "with ensemble and ref_first_nou also ens_ref_first_mix), log, area and gbm_geo (exfoliation), ensemble (means of the network "
                        "runs of each fold: ens_delta, ens_nn, ens_nn_disjoint, ens_ref, ens_ref_delta, ens_ref_first, "
                        "ens_ref_first_nou, ens_ref_twin, ens_log_geo, ens_area_geo, ens_all)")
    p.add_argument("--no-disjoint", action="store_true",
                   help="skip the formula-disjoint pretraining and its variants")
    args = p.parse_args()
    variants = set(args.variants.split(","))
    if args.seed_task:
        from _cgcnn2 import cgcnn_tr

        if cgcnn_tr() is None:
            sys.exit("--seed-task needs cgcnn2's cgcnn-tr: pip install cgcnn2")

    def want(variant: str) -> bool:
        return variant in variants
    backbones = args.backbones.split(",")
    started = time.time()
    tasks = args.tasks.split(",")
    done: list[str] = []
    metrics: dict[str, float] = {}
    per_fold: dict[str, dict[str, list[float]]] = {}
    data_notes: dict[str, object] = {}

    def record(model: str, task: str, maes: list[float]) -> None:
        per_fold.setdefault(task, {})[model] = maes
        metrics[f"{model}.{task}.mae_mean"] = float(np.mean(maes))
        metrics[f"{model}.{task}.mae_std"] = float(np.std(maes))
        print(f"{model} {task}: {np.mean(maes):.4f} ± {np.std(maes):.4f}", flush=True)

    jarvis = [s for s in make_source(RunConfig.model_validate({"source": JARVIS}).source)]
    folder = unpack_2dmatpedia()
    m2d_source = {"kind": "folder", "path": str(folder)}
    m2d = list(make_source(RunConfig.model_validate({"source": m2d_source}).source))
    jarvis_formulas = {reduced_formula(s.numbers) for s in jarvis}
    disjoint = [s for s in m2d if reduced_formula(s.numbers) not in jarvis_formulas]
    overlap_formulas = jarvis_formulas & {reduced_formula(s.numbers) for s in m2d}
    data_notes["formula_overlap"] = {"dft_2d_formulas": len(jarvis_formulas), "also_in_2dmatpedia": len(overlap_formulas),
                                     "2dmatpedia_structures": len(m2d), "2dmatpedia_disjoint_structures": len(disjoint)}
    # the disjoint pretraining set: an id_prop file listing only those monolayers
    rows = {r[0]: r[1] for r in csv.reader(open(folder / "id_prop.csv"))}
    keep = {s.id for s in disjoint}
    (folder / "id_prop_disjoint.csv").write_text("".join(f"{i},{v}\n" for i, v in rows.items() if i in keep))

    pre: dict[str, dict] = {}
    m2d_x: dict[str, dict[str, np.ndarray]] = {}  # 2DMatPedia's pooled features by backbone (gbm_both)
    refs: dict[str, Path] = {}
    if set(GAP_TASKS) & set(tasks) and variants & {"2dm", "gbm_pbe", "delta_pbe", "delta_pbe_seed1", "ref", "ref_delta", "gbm_ref"}:
        # pretraining on 2DMatPedia PBE gaps (all; formula-disjoint), random 90/10 for early stop
        keys = (("all", "id_prop.csv"),) + (() if args.no_disjoint else (("disjoint", "id_prop_disjoint.csv"),)) \
            + ((("all_seed1", "id_prop.csv"),) if want("delta_pbe_seed1") else ())
        for bb in backbones:
            for key, id_prop in keys:
                name = "chgnet-2dmatpedia-" + key if bb == "chgnet" else f"{bb}-2dmatpedia-{key}"
                seed = {"seed": 1} if key.endswith("_seed1") else {}  # the same split, another training seed
                pre[f"{bb}:{key}"] = run_cfg({**m2d_source, "id_prop": id_prop}, "target", {**CHGNET, "name": bb},
                                             {**CHGNET_TRAIN, "epochs": 100, "patience": 30, **seed},
                                             {"kind": "random", "train": 0.9, "val": 0.1}, name)
                data_notes[f"pretraining_{key}" if bb == "chgnet" else f"pretraining_{bb}_{key}"] = pre[f"{bb}:{key}"]
            if variants & {"ref", "ref_delta", "gbm_ref"}:  # 2DMatPedia as a reference, that model as the fallback
                import shutil

                from matgnn.commands.reference import build_reference

                refs[bb] = OUT / f"{bb}-2dmatpedia-reference"
                shutil.rmtree(refs[bb], ignore_errors=True)
                build_reference(m2d, "target", pre[f"{bb}:all"]["run"], refs[bb])

    for task in tasks:
        if task == "2dmatpedia_gap":
            source, tgt, structures = m2d_source, "target", m2d
        else:
            source, tgt = TASKS[task]
            structures = [s for s in jarvis if np.isfinite(s.graph_targets.get(tgt, np.nan))]
        ids = [s.id for s in structures]
        y = {s.id: float(s.graph_targets[tgt]) for s in structures}
        # the frozen features (--variants none: only the fine-tuned backbones run, which need none of them)
        xs = {bb: pooled_features(structures, bb) for bb in backbones} if variants - {"none"} else {}
        geo = {s.id: layer_geometry(s) for s in structures}
        extra_x = {k: predict_with(v["run"], structures) for k, v in pre.items()} if task in GAP_TASKS else {}
        ref_x = {bb: predict_with(str(f), structures) for bb, f in refs.items()} if task in GAP_TASKS else {}
        if ref_x:
            data_notes["reference_matches"] = {bb: reference_matches(f, structures) for bb, f in refs.items()}
        if task in GAP_TASKS and want("gbm_both"):  # 2DMatPedia's features once for both gap tasks
            for bb in backbones:
                if bb not in m2d_x:
                    m2d_x[bb] = pooled_features(m2d, bb)
            knn = {bb: nearest_labels(xs[bb], m2d, m2d_x[bb]) for bb in backbones}
        else:
            knn = {}
        if task == "dft2d_gap" and want("ref_first_nou"):
            data_notes["matching_rules"] = matching_rules(structures, m2d, tgt)
            print("matching rules:", data_notes["matching_rules"], flush=True)
        res: dict[str, list[float]] = {}
        twinned: dict[int, set[str]] = {}  # by fold: the test ids with a structural twin in training (ref_twin)
        no_twin: dict[str, list[float]] = {}  # by model: each fold's MAE on the test ids without one
        test_sizes: list[int] = []  # by fold (of those with twins counted)
        groups = None
        if task.endswith("_twin_grouped"):
            from matgnn.data.twins import twin_groups, twin_summary

            groups = twin_groups([s.formula for s in structures],
                                 lambda k: (structures[k].numbers, structures[k].positions, structures[k].cell))
            twinned_n, sets = twin_summary(groups)
            # the gap's under its first name; another task's under its own (a merge keeps both)
            data_notes["twin_groups" if task == "dft2d_gap_twin_grouped" else f"twin_groups_{task}"] = {
                "structures_with_a_twin": twinned_n, "sets": sets,
                "rule": "same reduced formula and a StructureMatcher fit at the reference's tolerances "
                        "(matgnn.data.twins); grouped_kfold_split, seed 42"}
        for fold in range(args.folds):
            fold_parts = (kfold_split(len(ids), 5, fold, 0.1, 42) if groups is None
                          else grouped_kfold_split(groups, 5, fold, 0.1, 42))
            parts = {k: [ids[i] for i in v] for k, v in fold_parts.items()}
            split_file = OUT / f"{task}-fold{fold}.json"
            split_file.parent.mkdir(parents=True, exist_ok=True)
            split_file.write_text(json.dumps(parts))
            split = {"kind": "ids", "ids_file": str(split_file)}
            fold_runs: dict[str, object] = {}  # this fold's network runs (and GBM predictions) by model

            def fit(label: str, *a, **kw) -> None:  # noqa: ANN002, ANN003
                got = run_cfg(*a, **kw)
                res.setdefault(label, []).append(got["mae"])
                fold_runs[label] = got["run"]

            for bb in backbones:
                x = xs.get(bb)
                if want("mlp"):
                    fit(bb, source, tgt, {**CHGNET, "name": bb}, CHGNET_TRAIN, split, f"{bb}-{task}-{fold}")
                if want("gbm"):
                    res.setdefault(f"{bb}_gbm", []).append(gbm_fold(x, y, parts))
                if want("log") and task in EXFOLIATION_TASKS:  # the MLP on log1p(y) (a skewed, positive target)
                    fit(f"{bb}_log", source, tgt, {**CHGNET, "name": bb}, CHGNET_TRAIN, split, f"{bb}-log-{task}-{fold}",
                        transform="log")
                if want("area") and task in EXFOLIATION_TASKS:  # the MLP on log(y / area per atom)
                    fit(f"{bb}_area", source, tgt, {**CHGNET, "name": bb}, CHGNET_TRAIN, split,
                        f"{bb}-area-{task}-{fold}", transform="log_per_area")
                if want("gbm_geo") and task in EXFOLIATION_TASKS:  # + the layer's geometry, log of energy per area
                    xg = {i: np.concatenate([x[i], geo[i]]) for i in ids}
                    got = gbm_predict(xg, y, parts, per_area={i: geo[i][0] for i in ids})
                    res.setdefault(f"{bb}_gbm_geo", []).append(float(np.mean([abs(got[i] - y[i]) for i in got])))
                    fold_runs[f"{bb}_gbm_geo"] = got
                if bb in ref_x:
                    if want("ref"):  # the reference model alone: no dft_2d label seen
                        res.setdefault(f"{bb}_ref", []).append(
                            float(np.mean([abs(ref_x[bb][i] - y[i]) for i in parts["test"]])))
                    if want("gbm_ref"):
                        xr = {i: np.concatenate([x[i], [ref_x[bb][i]]]) for i in ids}
                        res.setdefault(f"{bb}_gbm_ref", []).append(gbm_fold(xr, y, parts))
                    if want("ref_delta"):
                        fit(f"{bb}_ref_delta", source, tgt, {**CHGNET, "name": bb}, CHGNET_TRAIN, split,
                            f"{bb}-ref-delta-{task}-{fold}",
                            delta={"base_model": str(refs[bb]), "base_heads": {tgt: "target"}})
                for key in ("all", "disjoint", "all_seed1"):
                    run = pre.get(f"{bb}:{key}") if task in GAP_TASKS else None
                    if run is None:
                        continue
                    if key == "all_seed1":  # delta_pbe_seed1: both stages again at training seed 1
                        fit(f"{bb}_delta_pbe_seed1", source, tgt, {**CHGNET, "name": bb}, {**CHGNET_TRAIN, "seed": 1},
                            split, f"{bb}-delta-pbe-seed1-{task}-{fold}",
                            delta={"base_model": run["run"], "base_heads": {tgt: "target"}})
                        continue
                    suffix = "" if key == "all" else "_disjoint"
                    if want("2dm"):
                        fit(f"{bb}_2dm{suffix}", source, tgt, {**CHGNET, "name": bb}, CHGNET_TRAIN, split,
                            f"{bb}-2dm{suffix}-{task}-{fold}", transfer={"from_model": run["run"], "freeze": "none"})
                    if want("gbm_pbe"):
                        xp = {i: np.concatenate([x[i], [extra_x[f"{bb}:{key}"][i]]]) for i in ids}
                        res.setdefault(f"{bb}_gbm_pbe{suffix}", []).append(gbm_fold(xp, y, parts))
                    if want("delta_pbe"):  # delta learning: the 2DMatPedia PBE-gap model is the frozen base
                        fit(f"{bb}_delta_pbe{suffix}", source, tgt, {**CHGNET, "name": bb}, CHGNET_TRAIN, split,
                            f"{bb}-delta-pbe{suffix}-{task}-{fold}",
                            delta={"base_model": run["run"], "base_heads": {tgt: "target"}})
                    for variant, skip_u in (("ref_first", False), ("ref_first_nou", True)):
                        # the reference answers where it matches, this fold's delta model elsewhere; _nou: the
                        # reference without the structures 2DMatPedia computed with GGA+U (MP's rule)
                        if not (want(variant) and key == "all" and f"{bb}_delta_pbe" in fold_runs):
                            continue
                        import shutil

                        from matgnn.commands.reference import build_reference

                        folder_rf = OUT / variant / f"{bb}-fold{fold}"
                        shutil.rmtree(folder_rf, ignore_errors=True)
                        build_reference(m2d, "target", fold_runs[f"{bb}_delta_pbe"], folder_rf, fallback_head=tgt,
                                        skip_hubbard_u=skip_u)
                        test = [s for s in structures if s.id in set(parts["test"])]
                        got = predict_with(str(folder_rf), test)
                        res.setdefault(f"{bb}_{variant}", []).append(float(np.mean([abs(got[i] - y[i]) for i in got])))
                        fold_runs[f"{bb}_{variant}"] = got
                if want("ref_twin") and f"{bb}_ref_first_nou" in fold_runs:
                    # dft_2d's own labels first: a test monolayer matching one of this fold's training or
                    # validation monolayers (the same structure, computed twice by JARVIS) gets that label; the
                    # others the ref_first_nou model's answer
                    import shutil

                    from matgnn.commands.reference import build_reference

                    folder_tw = OUT / "ref_twin" / f"{bb}-fold{fold}"
                    shutil.rmtree(folder_tw, ignore_errors=True)
                    seen = set(parts["train"]) | set(parts["val"])
                    build_reference([s for s in structures if s.id in seen], tgt, OUT / "ref_first_nou" / f"{bb}-fold{fold}",
                                    folder_tw, fallback_head="target")
                    test = [s for s in structures if s.id in set(parts["test"])]
                    got = predict_with(str(folder_tw), test)
                    res.setdefault(f"{bb}_ref_twin", []).append(float(np.mean([abs(got[i] - y[i]) for i in got])))
                    fold_runs[f"{bb}_ref_twin"] = got
                    if fold not in twinned:
                        twinned[fold] = matched_ids(folder_tw, test)[0]
            if knn and all(f"{bb}:all" in extra_x for bb in backbones):
                # one GBM over every backbone's features, each 2DMatPedia PBE-gap model's answer and the labels of
                # the 5 nearest 2DMatPedia monolayers in each backbone's feature space (with their distances)
                xb = {i: np.concatenate([*(xs[bb][i] for bb in backbones), [extra_x[f"{bb}:all"][i] for bb in backbones],
                                         *(knn[bb][i] for bb in backbones)]) for i in ids}
                got = {i: max(v, 0.0) for i, v in gbm_predict(xb, y, parts).items()}  # a gap is not negative
                res.setdefault("gbm_both", []).append(float(np.mean([abs(got[i] - y[i]) for i in got])))
                fold_runs["gbm_both"] = got
            if not args.no_pna and (task in EXFOLIATION_TASKS or (task == "2dmatpedia_gap" and args.scratch)):
                fit("pna", source, tgt, PNA, PNA_TRAIN, split, f"pna-{task}-{fold}")  # from scratch; joins ens_nn
            lone = set(parts["test"]) - twinned[fold] if fold in twinned else set()  # test ids without a twin
            if want("ensemble"):  # the mean of this fold's network runs, across backbones and recipes
                for name, members in ensembles(fold_runs, task).items():
                    res.setdefault(name, []).append(ensemble_mae([fold_runs[m] for m in members], y))
                    data_notes.setdefault("ensemble_members", {}).setdefault(task, {})[name] = members
                    if fold in twinned and name in ("ens_ref_first_nou", "ens_ref_twin"):
                        no_twin.setdefault(name, []).append(ensemble_mae([fold_runs[m] for m in members], y,
                                                                         only=lone))
            first_nou = [f"{bb}_ref_first_nou" for bb in backbones]
            if want("ensemble") and "gbm_both" in fold_runs and all(m in fold_runs for m in first_nou):
                # ens_ref_first_mix: the reference's label where it matches (the same in every _ref_first_nou
                # model), elsewhere the mean of the delta models and gbm_both
                test = [s for s in structures if s.id in set(parts["test"])]
                hits = matched_ids(OUT / "ref_first_nou" / f"{backbones[0]}-fold{fold}", test)[0]
                members = [predictions_of(fold_runs[f"{bb}_delta_pbe"]) for bb in backbones] + [fold_runs["gbm_both"]]
                ref = fold_runs[first_nou[0]]
                mix = {i: ref[i] if i in hits else float(np.mean([m[i] for m in members])) for i in parts["test"]}
                fold_runs["ens_ref_first_mix"] = mix
                res.setdefault("ens_ref_first_mix", []).append(ensemble_mae([mix], y))
                data_notes.setdefault("ensemble_members", {}).setdefault(task, {})["ens_ref_first_mix"] = (
                    [f"{first_nou[0]} where the reference matches"] + [f"{bb}_delta_pbe" for bb in backbones]
                    + ["gbm_both"])
                if fold in twinned:
                    no_twin.setdefault("ens_ref_first_mix", []).append(ensemble_mae([mix], y, only=lone))
            if fold in twinned:  # the same models on the test monolayers without a twin in training
                test_sizes.append(len(parts["test"]))
                for name in [m for m in fold_runs if m.endswith(("_ref_first_nou", "_ref_twin"))]:
                    no_twin.setdefault(name, []).append(ensemble_mae([fold_runs[name]], y, only=lone))
            if task == "dft2d_gap" and args.finetune_first_fold <= fold < args.finetune_folds:  # the backbone itself
                for variant in args.finetune_variants.split(","):
                    label, extra, train_extra = CHGNET_FT_VARIANTS[variant]
                    res.setdefault(label, []).append(run_cfg(source, tgt, {**CHGNET_FT, **extra},
                                                             {**CHGNET_FT_TRAIN, **train_extra}, split,
                                                             f"{label}-{task}-{fold}")["mae"])
            if task == "2dmatpedia_gap" and args.seed_task:  # the research's own task: cgcnn2 beside our CGCNN
                from _cgcnn2 import train_cli, write_cifs

                cifs = OUT / "2dmatpedia_cifs"
                if not (cifs / "atom_init.json").is_file():
                    write_cifs(((s.id, s) for s in structures), cifs)
                r2 = train_cli(cifs, parts, y, OUT / "cgcnn2" / f"fold{fold}", ["-sp", "30"])
                ours = run_cfg(source, tgt, {"name": "cgcnn", "hidden": 64, "layers": 3}, {"tensorboard": False}, split,
                               f"cgcnn-{task}-{fold}", graphs={"cutoff": 8.0, "max_neighbors": 12})
                res.setdefault("cgcnn2", []).append(r2["mae"])
                res.setdefault("cgcnn", []).append(ours["mae"])
                data_notes.setdefault("seed_task_speed", []).append(
                    {"fold": fold, "cgcnn2_structures_per_s": r2["structures_per_s"], "cgcnn2_epochs": r2["epochs"],
                     "cgcnn2_wall_s": r2["wall_s"], "cgcnn_wall_s": ours["seconds"]})
            print(f"{task} fold {fold}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in res.items()), flush=True)
        if task == "dft2d_gap" and args.finetune_first_fold > 0:  # the committed earlier folds complete the record
            earlier = committed_folds(task, [CHGNET_FT_VARIANTS[v][0] for v in args.finetune_variants.split(",")],
                                      args.finetune_first_fold)
            for label, (maes, parts) in earlier.items():
                if label in res:
                    res[label] = maes + res[label]
                    data_notes.setdefault("finetune_folds_measured_at", {})[label] = {
                        **parts, fold_range(args.finetune_first_fold, args.finetune_folds - 1): "this run (git_commit)"}
        for model, maes in res.items():
            if model in FT_FROZEN and len(maes) < args.folds:  # fewer folds: beside the frozen one
                k, bb = len(maes), FT_FROZEN[model]
                metrics[f"{model}.{task}.folds{k}.mae_mean"] = float(np.mean(maes))
                per_fold.setdefault(task, {})[model] = maes
                frozen = res.get(bb)
                if frozen is None and args.merge and (RESULTS / "backbones_2d.json").is_file():  # the committed run's
                    frozen = json.loads((RESULTS / "backbones_2d.json").read_text())["data"]["per_fold"].get(
                        task, {}).get(bb)
                if frozen:
                    metrics[f"{model}.{task}.folds{k}.frozen_{bb}_mae_mean"] = float(np.mean(frozen[:k]))
                continue
            record(model, task, maes)
        if twinned and task == "dft2d_gap":
            data_notes["twins"] = {
                "rule": "a dft_2d test monolayer with a structural twin among its fold's training and validation "
                        "monolayers (same reduced formula, StructureMatcher at the reference's tolerances): JARVIS "
                        "lists some monolayers twice (exfoliated from different bulk parents)",
                "test_with_a_training_twin_by_fold": [len(twinned[f]) for f in sorted(twinned)],
                "test_by_fold": test_sizes,
                "no_twin_mae_by_fold": no_twin}
            for model, maes in no_twin.items():
                metrics[f"{model}.{task}.no_twin_mae_mean"] = float(np.mean(maes))
        done.append(task)
        _write(done, metrics, per_fold, data_notes, started, args)  # a partial file says which tasks it has


def fold_range(first: int, last: int) -> str:
    """"fold 2" or "folds 0-2"."""
    return f"fold {first}" if first == last else f"folds {first}-{last}"


def committed_folds(task: str, labels: list[str], first: int) -> dict[str, tuple[list[float], dict[str, str]]]:
    """The committed file's per-fold MAEs of folds 0..first-1 for each fine-tuned variant in ``labels``, with the
    commits that measured them by fold range (a variant lacking any of those folds is left out)."""
    from _common import RESULTS

    path = RESULTS / "backbones_2d.json"
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    data = old.get("data", {})
    out = {}
    for label in labels:
        maes = data.get("per_fold", {}).get(task, {}).get(label, [])
        if len(maes) >= first:
            parts = data.get("finetune_folds_measured_at", {}).get(label)
            if parts:  # the folds were themselves measured in parts: "this run" there is that file's commit
                parts = {r: old["git_commit"] if c == "this run (git_commit)" else c for r, c in parts.items()}
            else:
                parts = {fold_range(0, first - 1): data.get("measured_at", {}).get(f"{label}.{task}",
                                                                                   old["git_commit"])}
            out[label] = (list(maes[:first]), parts)
    return out


def _write(tasks: list[str], metrics: dict, per_fold: dict, data_notes: dict, started: float, args) -> None:
    from _common import COMMIT_AT_START, RESULTS

    from matgnn.models.backbones import feature_store as backbone_features

    backbones = args.backbones.split(",")
    data_notes = {**data_notes, **{f"{bb}_rejected": sorted(backbone_features(bb).rejected) for bb in backbones}}
    def cell(key: str) -> str:  # "<model>.<task>": what a merge replaces
        return ".".join(key.split(".")[:2])

    now = {cell(k) for k in metrics}
    measured_at = {c: COMMIT_AT_START for c in now}
    if args.merge and (RESULTS / "backbones_2d.json").is_file():  # the file's other (model, task) cells stay
        old = json.loads((RESULTS / "backbones_2d.json").read_text())
        at = old.get("data", {}).get("measured_at", {})
        kept = {k: v for k, v in old["metrics"].items() if cell(k) not in now and not k.startswith("best.")}
        measured_at = {**{cell(k): at.get(cell(k), at.get(k.split(".")[0], old["git_commit"])) for k in kept},
                       **measured_at}
        metrics = {**kept, **metrics}
        old_pf = old.get("data", {}).get("per_fold", {})
        per_fold = {t: {**{m: v for m, v in old_pf.get(t, {}).items() if f"{m}.{t}" not in now},
                        **per_fold.get(t, {})} for t in {*old_pf, *per_fold}}
        members = old.get("data", {}).get("ensemble_members", {})
        if members and all(isinstance(v, list) for v in members.values()):  # written before it was kept per task
            members = {"dft2d_gap": members}
        members = {**members, **data_notes.get("ensemble_members", {})}
        # the kept file's "this run" is its own commit: resolved now, or the next merge would credit its own
        old_parts = {label: {r: old["git_commit"] if c == "this run (git_commit)" else c for r, c in parts.items()}
                     for label, parts in old.get("data", {}).get("finetune_folds_measured_at", {}).items()}
        parts_now = {**old_parts, **data_notes.get("finetune_folds_measured_at", {})}  # per variant
        data_notes = {**{k: v for k, v in old.get("data", {}).items()
                         if k.startswith(("pretraining_", "formula_overlap", "chgnet_rejected", "reference_matches",
                                          "twins", "twin_groups", "matching_rules"))},
                      **data_notes}
        if parts_now:
            data_notes["finetune_folds_measured_at"] = parts_now
        if members:
            data_notes["ensemble_members"] = members
        tasks = sorted({*tasks, *old.get("data", {}).get("tasks", [])})
    targets = {}
    if "dft2d_gap" in tasks:
        best = min((k for k in metrics if k.endswith(".dft2d_gap.mae_mean")), key=metrics.get)
        targets["dft2d_gap.best"] = {**target(0.25, "<=", metrics[best]), "model": best.split(".")[0]}
        # the same without the models that answer from a dft_2d twin's label (how much of the best is the twins)
        best = min((k for k in metrics if k.endswith(".dft2d_gap.mae_mean") and "twin" not in k.split(".")[0]),
                   key=metrics.get)
        targets["dft2d_gap.best_without_twin_lookup"] = {**target(0.25, "<=", metrics[best]), "model": best.split(".")[0]}
        def overlapping(k: str) -> bool:  # pretrained on (or answering from) 2DMatPedia with dft_2d formulas in it
            return any(part in k.split(".")[0] for part in ("2dm", "pbe", "ens_", "ref", "gbm_both"))

        disjoint_best = min((k for k in metrics if k.endswith(".dft2d_gap.mae_mean") and not overlapping(k)
                             or k.endswith("_disjoint.dft2d_gap.mae_mean")), key=metrics.get)
        targets["dft2d_gap.best_without_overlapping_pretraining"] = {
            **target(0.40, "<=", metrics[disjoint_best]), "model": disjoint_best.split(".")[0]}
    if "cgcnn2.2dmatpedia_gap.mae_mean" in metrics:
        best = min((k for k in metrics if k.endswith(".2dmatpedia_gap.mae_mean") and not k.startswith("cgcnn2.")),
                   key=metrics.get)
        metrics["best.2dmatpedia_gap.ratio_to_cgcnn2"] = metrics[best] / metrics["cgcnn2.2dmatpedia_gap.mae_mean"]
        targets["2dmatpedia_gap.best_at_least_25pct_below_cgcnn2"] = {
            **target(0.75, "<=", metrics["best.2dmatpedia_gap.ratio_to_cgcnn2"]), "model": best.split(".")[0]}
    if "dft2d_gap_twin_grouped" in tasks:  # no twin in training: the models' own accuracy
        best = min((k for k in metrics if k.endswith(".dft2d_gap_twin_grouped.mae_mean")), key=metrics.get)
        targets["dft2d_gap_twin_grouped.best"] = {**target(0.25, "<=", metrics[best]), "model": best.split(".")[0]}
    for task in ("dft2d_exfoliation", "dft2d_exfoliation_twin_grouped"):
        if task in tasks:
            best = min((k for k in metrics if k.endswith(f".{task}.mae_mean")), key=metrics.get)
            targets[f"{task}.best"] = {**target(33.0, "<=", metrics[best]), "model": best.split(".")[0]}
    write_result(
        "backbones_2d", started,
        data={"tasks": tasks, "tasks_requested": args.tasks.split(","), "folds": args.folds, "split": "5-fold CV seed 42, validation 10 % of all from the "
              "training folds (dft_2d: the folds of dft2d_bandgap.py)",
              "backbone": "CHGNet 0.3.0 (weights in the chgnet wheel; modified BSD licence), frozen; SevenNet-0 "
                          "(sevenn wheel, MIT licence; 128 invariant features per atom, their mean per structure), "
                          "frozen", "measured_at": measured_at,
              "chgnet_model": CHGNET, "chgnet_train": CHGNET_TRAIN, "pna_model": PNA, "pna_train": PNA_TRAIN,
              "chgnet_ft_model": CHGNET_FT, "chgnet_ft_train": CHGNET_FT_TRAIN,
              "chgnet_ft_variants": {label: {"model": extra, "train": train_extra}
                                     for label, extra, train_extra in CHGNET_FT_VARIANTS.values()},
              "gbm": "XGBoost 600 trees, depth 6, lr 0.03, on mean/max/min of the backbone's atom features",
              **data_notes,
              "per_fold": per_fold,
              "not_measured": "fine-tuned backbones (chgnet_ft, sevennet_ft) on the dft_2d gap's first folds only "
                              "(--finetune-folds; 25-40 s an epoch on one CPU thread), not on the other tasks"},
        metrics=metrics,
        anchors={"ours_scratch.dft2d_gap.mae": 0.522, "ours_transfer_mp.dft2d_gap.mae": 0.512,
                 "issue_chgnet_frozen_gbm.dft2d_gap.mae": 0.496, "issue_chgnet_gbm_pbe_feature.dft2d_gap.mae": 0.330,
                 "issue_chgnet_frozen_gbm.dft2d_exfoliation.mae": 47.7, "matbench_jdft2d_modnet.mae": 33.2,
                 "matbench_jdft2d_alignn.mae": 43.4, "matbench_jdft2d_cgcnn.mae": 49.2},
        targets=targets,
    )


if __name__ == "__main__":
    main()
