"""Target statistics of a run: each graph's labels per head, the per-element baseline, the
standardisation (mean/std in the space the model learns) and, for delta learning, the residuals'
statistics; the elements of the training split (recorded in the model so predictions can flag
elements it never saw)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from matgnn import keys
from matgnn.config import HeadConfig
from matgnn.data.structure import MAX_Z
from matgnn.graphs.cache import GraphCache
from matgnn.models import MatgnnModel


def check_targets(cache: GraphCache, heads: list[HeadConfig]) -> None:
    available = {"graph": cache.meta["graph_targets"], "node": cache.meta["node_targets"]}
    for h in heads:
        missing = [c for c in h.components if c not in available["graph"]] if h.components else []
        if missing:
            raise ValueError(f"vector head {h.name!r}: components {missing} are not graph-level targets of source "
                             f"{cache.meta['source']}; graph-level targets: {available['graph'] or 'none'}")
        if h.components:
            continue
        if h.name not in available[h.level]:
            raise ValueError(
                f"target {h.name!r} ({h.level}-level) is not in source {cache.meta['source']}; "
                f"graph-level targets: {available['graph'] or 'none'}; node-level: {available['node'] or 'none'}")


def head_labels(rec: dict[str, Any], head: HeadConfig) -> np.ndarray:
    """A graph record's labels for ``head``: one value (graph heads) or one per atom (node
    heads; a vector head: one per component), float64, NaN where the label is missing."""
    if head.components:
        return np.array([rec["graph_targets"].get(c, math.nan) for c in head.components], float)
    if head.level == "graph":
        return np.array([rec["graph_targets"].get(head.name, math.nan)], float)
    return np.asarray(rec["node_targets"].get(head.name, np.full(len(rec["z"]), np.nan)), float)


def target_labels(cache: GraphCache, heads: list[HeadConfig]) -> list[dict[str, np.ndarray]]:
    """Every graph's labels for the heads (one pass over the cache); ``"z"`` holds its
    atoms' Z when a head needs per-element statistics."""
    need_z = any(h.baseline != "none" for h in heads)
    need_area = any(h.transform == "log_per_area" for h in heads)
    out = []
    for rec in cache.records():
        d = {h.name: head_labels(rec, h) for h in heads}
        if need_z:
            d["z"] = np.asarray(rec["z"], np.int64)
        if need_area:  # transform log_per_area: the in-plane area per atom; every label must be > 0
            from matgnn.graphs.geometry import area_per_atom

            for h in heads:
                if h.transform == "log_per_area" and (d[h.name] <= 0).any():
                    raise ValueError(f"structure {rec['id']!r}: target {h.name!r} = {float(d[h.name][0]):g}; "
                                     "transform 'log_per_area' needs y > 0")

            d["area"] = area_per_atom(torch.tensor(np.array(rec["cell"], float)),
                                      torch.tensor(np.array(rec["pbc"], bool)),
                                      torch.tensor([len(rec["z"])])).numpy()
        out.append(d)
    return out


def _labelled_atoms(labels: list[dict[str, np.ndarray]], idx: list[int], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Z and label of every labelled atom of graphs ``idx`` for head ``name``."""
    z = np.concatenate([labels[i]["z"] for i in idx])
    y = np.concatenate([labels[i][name] for i in idx])
    ok = ~np.isnan(y)
    return z[ok], y[ok]


def element_means(labels: list[dict[str, np.ndarray]], idx: list[int], name: str) -> np.ndarray:
    """Mean label of each element over the labelled atoms of graphs ``idx``; elements
    without a labelled atom get the overall mean."""
    z, y = _labelled_atoms(labels, idx, name)
    out = np.full(MAX_Z + 1, float(y.mean()) if len(y) else 0.0)
    counts = np.bincount(z, minlength=MAX_Z + 1)
    sums = np.bincount(z, weights=y, minlength=MAX_Z + 1)
    out[counts > 0] = sums[counts > 0] / counts[counts > 0]
    return out


def seen_elements(labels: list[dict[str, np.ndarray]], idx: list[int], name: str) -> np.ndarray:
    """1.0 for each element with a labelled atom in graphs ``idx``, else 0.0 (``baseline: backbone``: the
    learned residual applies to these elements only)."""
    z, _ = _labelled_atoms(labels, idx, name)
    return (np.bincount(z, minlength=MAX_Z + 1) > 0).astype(float)


def standardisation(vals: np.ndarray, head: HeadConfig) -> tuple[float, float]:
    """Mean and std a head's labelled training values are standardised with (0 and 1 when the
    head is not normalised or has fewer than two values)."""
    if not head.normalize or len(vals) < 2:
        return 0.0, 1.0
    return float(vals.mean()), float(vals.std()) or 1.0


def normalization(labels: list[dict[str, np.ndarray]], idx: list[int], heads: list[HeadConfig]):
    """Mean and std of the training labels in the space the model learns (after ``transform``
    or minus the element baseline): one entry per scalar head and one per component of a vector
    head, in head order (the layout of the model's ``target_mean``); the element baselines (for
    ``baseline: backbone`` heads: which elements the training set labels); and the labels' lowest and
    highest value in that space for heads with a log ``transform`` (±inf for the others)."""
    mean, std, low, high = [], [], [], []
    baseline = np.zeros((len(heads), MAX_Z + 1))
    for k, h in enumerate(heads):
        if h.components:  # each component on its own
            table = np.stack([labels[i][h.name] for i in idx]) if idx else np.zeros((0, h.dim))
            columns = [(f"{h.name}.{c}", table[:, j]) for j, c in enumerate(h.components)]
        else:
            vals = np.concatenate([labels[i][h.name] for i in idx])
            if h.transform == "log_per_area":  # every label > 0: checked by target_labels
                vals = np.log(vals / np.concatenate([labels[i]["area"] for i in idx]))
            if h.baseline == "element_mean":
                baseline[k] = element_means(labels, idx, h.name)
                vals = vals - baseline[k][np.concatenate([labels[i]["z"] for i in idx])]
            elif h.baseline == "backbone":
                baseline[k] = seen_elements(labels, idx, h.name)
            columns = [(h.name, vals)]
        for name, vals in columns:
            vals = vals[~np.isnan(vals)]
            if h.transform == "log":
                if (vals <= -1).any():
                    raise ValueError(f"target {name!r} has values <= -1; transform 'log' (log1p) needs y > -1")
                vals = np.log1p(vals)
            mu, sd = standardisation(vals, h)
            if h.baseline == "backbone":  # the residual to the backbone's answer: centred on it, at the labels' scale
                mu = 0.0
            mean.append(mu)
            std.append(sd)
            bounded = h.transform != "none" and len(vals)  # log heads: their answers stay near this range
            low.append(float(vals.min()) if bounded else -np.inf)
            high.append(float(vals.max()) if bounded else np.inf)
    return (torch.tensor(mean), torch.tensor(std), torch.tensor(baseline, dtype=torch.float32),
            (torch.tensor(low), torch.tensor(high)))


@torch.no_grad()
def residual_normalization(base: MatgnnModel, loader, heads: list[HeadConfig]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of ``label − base prediction`` over the training graphs, per head (per
    component of a vector head)."""
    base.eval()
    res: dict[str, list[np.ndarray]] = {h.name: [] for h in heads}
    for batch in loader:
        out = base(batch)
        for h in heads:
            res[h.name].append((batch[keys.target(h.name)] - out[h.name].float()).numpy().reshape(-1, h.dim))
    stats = []
    for h in heads:
        table = np.concatenate(res[h.name]) if res[h.name] else np.zeros((0, h.dim))
        for j in range(h.dim):
            col = table[:, j]
            stats.append(standardisation(col[~np.isnan(col)], h))
    return torch.tensor([m for m, _ in stats]), torch.tensor([sd for _, sd in stats])


def train_elements(cache: GraphCache, idx: list[int]) -> list[int]:
    """Atomic numbers present in the graphs ``idx`` (the training split)."""
    seen = np.zeros(MAX_Z + 1, bool)
    for k in set(idx):
        seen[np.asarray(cache.record(k)["z"], np.int64)] = True
    return np.flatnonzero(seen).tolist()
