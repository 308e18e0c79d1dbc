"""``matgnn data report SOURCE``: exploratory figures of a structure source.

Target histograms (graph-level targets, and per-atom targets on a log count scale), counts by
dimensionality (or, where the source has none, by number of elements), the most common elements,
atoms per structure, and each graph-level target as box plots by that group; written as PNGs with
``data_info.json`` and an ``index.html`` that embeds them all.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from matgnn.data.info import source_info
from matgnn.data.sources.base import StructureSource

_NAMES = {1: "unary", 2: "binary", 3: "ternary", 4: "quaternary"}


def _plt():
    from matgnn.evaluation.plots import pyplot

    return pyplot()


def _save(fig, path: Path) -> Path:
    from matgnn.evaluation.plots import save_figure

    return save_figure(fig, path, dpi=100)


def data_report(source: StructureSource, out: str | Path, cutoff: float = 8.0,
                top_elements: int = 30) -> tuple[Path, dict[str, Any]]:
    """Write the figures, ``data_info.json``, ``load_report.json``/``skipped.csv`` and
    ``index.html`` into ``out``; returns (index path, info)."""
    plt = _plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {}
    info, report = source_info(source, cutoff, values=values)
    report.save(out)
    (out / "data_info.json").write_text(json.dumps(info, indent=1))
    figs: list[tuple[str, Path]] = []
    empty = [k for k, v in [*values["graph_targets"].items(), *values["node_targets"].items()] if np.isnan(v).all()]
    values["graph_targets"] = {k: v for k, v in values["graph_targets"].items() if k not in empty}
    values["node_targets"] = {k: v for k, v in values["node_targets"].items() if k not in empty}

    for name, v in values["graph_targets"].items():
        lab = v[~np.isnan(v)]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.hist(lab, bins=60, color="tab:blue")
        ax.set_xlabel(name)
        ax.set_ylabel("structures")
        ax.set_title(f"{name}: {len(lab)} labelled, {len(v) - len(lab)} missing")
        figs.append((f"histogram of {name}", _save(fig, out / f"hist_{name}.png")))
    for name, v in values["node_targets"].items():
        lab = v[~np.isnan(v)]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.hist(lab, bins=80, color="tab:purple", log=True)
        ax.set_xlabel(f"{name} (per atom)")
        ax.set_ylabel("atoms (log)")
        ax.set_title(f"{name}: {len(lab):,} atoms")
        figs.append((f"histogram of {name}", _save(fig, out / f"hist_{name}.png")))

    dims = values["dimensionality"]
    if any(dims):
        groups, group_label = np.array([d or "unknown" for d in dims]), "dimensionality"
    else:
        groups = np.array([_NAMES.get(int(k), f"{int(k)} elements") for k in values["n_elements"]])
        group_label = "number of elements"
    names, counts = np.unique(groups, return_counts=True)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.bar(names, counts, color="tab:green")
    ax.set_ylabel("structures")
    ax.set_title(f"structures by {group_label}")
    figs.append((f"counts by {group_label}", _save(fig, out / "groups.png")))

    common = values["elements"].most_common(top_elements)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.bar([e for e, _ in common], [c for _, c in common], color="tab:orange")
    ax.set_ylabel("structures containing it")
    ax.set_title(f"the {len(common)} most common elements")
    ax.tick_params(axis="x", labelsize=8)
    figs.append(("most common elements", _save(fig, out / "elements.png")))

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.hist(values["n_atoms"], bins=60, color="0.4")
    ax.set_xlabel("atoms per structure")
    ax.set_ylabel("structures")
    figs.append(("atoms per structure", _save(fig, out / "atoms.png")))

    for name, v in values["graph_targets"].items():
        data, labels = [], []
        for g in names:
            sel = v[(groups == g) & ~np.isnan(v)]
            if len(sel):
                data.append(sel)
                labels.append(f"{g}\n(n={len(sel)})")
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(data)), 3.8))
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(data) + 1), labels, fontsize=8)
        ax.set_ylabel(name)
        ax.set_title(f"{name} by {group_label}")
        figs.append((f"{name} by {group_label}", _save(fig, out / f"box_{name}.png")))

    imgs = "".join(f"<figure><img alt=\"{html.escape(t)}\" src=\"data:image/png;base64,"
                   f"{base64.b64encode(p.read_bytes()).decode()}\"><figcaption>{html.escape(t)}</figcaption></figure>"
                   for t, p in figs)
    skipped = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in info["skipped_by_reason"].items())
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(info['source'])}"
            "</title><style>body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px}"
            "img{max-width:100%}figure{display:inline-block;margin:0.5em;vertical-align:top}</style></head><body>"
            f"<h1>{html.escape(info['source'])}</h1><p>{info['kept']} usable of {info['entries']} entries; "
            f"{info['skipped']} skipped (listed in skipped.csv)</p><ul>{skipped}</ul>"
            + (f"<p>fields without a single label here: {html.escape(', '.join(empty))}</p>" if empty else "")
            + f"{imgs}</body></html>")
    index = out / "index.html"
    index.write_text(page)
    return index, info
