"""``matgnn data report SOURCE``: exploratory figures of a structure source.

Target histograms (graph-level targets, and per-atom targets on a log count scale), counts by
dimensionality (or, where the source has none, by number of elements), the most common elements,
atoms per structure, and each graph-level target as box plots by that group; written as PNGs with
``data_info.json`` and an ``index.html`` that embeds them all.

Label checks (``--compare A:B``): two labels of the same quantity at two levels of theory (JARVIS's
OptB88vdW and MBJ band gaps, say) follow a line between them; structures far off it carry a label to
doubt. The line is fitted robustly (Theil–Sen, so the doubtful labels do not pull it), the residuals are
scaled by their median absolute deviation, and every structure beyond ``--z-max`` robust σ is listed in
``label_pairs_<A>_vs_<B>.csv`` (all structures with both labels, most doubtful first) and drawn in red.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from matgnn.artifacts import safe_file_part
from matgnn.commands.info import source_info
from matgnn.data.sources.base import StructureSource
from matgnn.errors import UserError

_NAMES = {1: "unary", 2: "binary", 3: "ternary", 4: "quaternary"}


def _plt():
    from matgnn.evaluation.plots import pyplot

    return pyplot()


def _save(fig, path: Path) -> Path:
    from matgnn.evaluation.plots import save_figure

    return save_figure(fig, path, dpi=100)


#: robust z beyond which a pair of labels is listed as doubtful (Iglewicz and Hoaglin's outlier rule)
DEFAULT_Z_MAX = 3.5
#: structures with both labels below which no line is fitted
MIN_PAIRS = 5


def parse_pair(text: str) -> tuple[str, str]:
    """``"A:B"`` → ``("A", "B")``: two graph-level targets to check against each other."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts) or parts[0].strip() == parts[1].strip():
        raise UserError(f"--compare {text!r}: give two different targets as A:B, e.g. optb88vdw_bandgap:mbj_bandgap")
    return parts[0].strip(), parts[1].strip()


def label_pair(ids: list[str], a: np.ndarray, b: np.ndarray, z_max: float = DEFAULT_Z_MAX
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check label ``b`` against label ``a`` over the structures with both: the Theil–Sen line ``b ≈ intercept
    + slope · a``, each residual's robust z (over 1.4826 × the residuals' median absolute deviation) and
    whether it exceeds ``z_max``. Returns the summary and one row per structure, largest |z| first."""
    from scipy.stats import theilslopes

    both = ~np.isnan(a) & ~np.isnan(b)
    x, y = a[both], b[both]
    pair_ids = [i for i, keep in zip(ids, both) if keep]
    if len(x) < MIN_PAIRS:
        return {"both": int(len(x)), "note": f"fewer than {MIN_PAIRS} structures with both labels: not checked"}, []
    if np.ptp(x) > 0:
        slope, intercept = (float(v) for v in theilslopes(y, x)[:2])
    else:
        slope, intercept = 0.0, float(np.median(y))
    resid = y - (intercept + slope * x)
    centre = float(np.median(resid))
    scale = 1.4826 * float(np.median(np.abs(resid - centre)))
    if scale <= 0:  # over half the pairs on the line exactly: the mean deviation instead
        scale = float(np.mean(np.abs(resid - centre))) or 1.0
    z = (resid - centre) / scale
    rows = [{"id": i, "a": float(u), "b": float(v), "b_expected": float(intercept + slope * u),
             "residual": float(r), "robust_z": float(q), "doubtful": bool(abs(q) > z_max)}
            for i, u, v, r, q in zip(pair_ids, x, y, resid, z)]
    rows.sort(key=lambda r: -abs(r["robust_z"]))
    summary = {"both": int(len(x)), "slope": slope, "intercept": intercept, "residual_scale": scale,
               "z_max": z_max, "doubtful": int(sum(r["doubtful"] for r in rows)),
               "doubtful_ids": [r["id"] for r in rows if r["doubtful"]]}
    return summary, rows


def _pair_file_name(a: str, b: str) -> str:
    return re.sub(r"[^\w.-]", "_", f"label_pairs_{a}_vs_{b}") + ".csv"


def data_report(source: StructureSource, out: str | Path, cutoff: float = 8.0,
                top_elements: int = 30, compare: list[tuple[str, str]] | None = None,
                z_max: float = DEFAULT_Z_MAX) -> tuple[Path, dict[str, Any]]:
    """Write the figures, ``data_info.json``, ``load_report.json``/``skipped.csv`` and
    ``index.html`` into ``out``; returns (index path, info). ``compare``: pairs of graph-level targets
    checked against each other (:func:`label_pair`; ``info["label_pairs"]``)."""
    plt = _plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {}
    info, report = source_info(source, cutoff, values=values)
    known = sorted(values["graph_targets"])
    for pair in compare or []:
        unknown = [t for t in pair if t not in values["graph_targets"]]
        if unknown:
            raise UserError(f"--compare {':'.join(pair)}: {', '.join(unknown)} is not a graph-level target of "
                            f"{info['source']} (its targets: {', '.join(known) or 'none'})")
    pair_figs: list[tuple[str, Path]] = []
    for a, b in compare or []:
        summary, rows = label_pair(values["ids"], values["graph_targets"][a], values["graph_targets"][b], z_max)
        if rows:
            summary["file"] = _pair_file_name(a, b)
            with open(out / summary["file"], "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", a, b, f"{b}_expected", "residual", "robust_z", "doubtful"])
                for r in rows:
                    w.writerow([r["id"], f"{r['a']:.6g}", f"{r['b']:.6g}", f"{r['b_expected']:.6g}",
                                f"{r['residual']:.6g}", f"{r['robust_z']:.3f}", int(r["doubtful"])])
            fig, ax = plt.subplots(figsize=(5, 4.2))
            bad = np.array([r["doubtful"] for r in rows])
            xs, ys = np.array([r["a"] for r in rows]), np.array([r["b"] for r in rows])
            ax.scatter(xs[~bad], ys[~bad], s=8, color="tab:blue", label="consistent")
            ax.scatter(xs[bad], ys[bad], s=14, color="tab:red", label=f"beyond {z_max:g} robust σ")
            line = np.array([xs.min(), xs.max()])
            ax.plot(line, summary["intercept"] + summary["slope"] * line, color="0.3", lw=1)
            ax.set_xlabel(a)
            ax.set_ylabel(b)
            ax.set_title(f"{b} vs {a}: {summary['doubtful']} of {summary['both']} doubtful")
            ax.legend(fontsize=8)
            pair_figs.append((f"{b} against {a}", _save(fig, out / (summary["file"][:-4] + ".png"))))
        info.setdefault("label_pairs", {})[f"{a}:{b}"] = summary
    report.save(out)
    (out / "data_info.json").write_text(json.dumps(info, indent=1))
    figs: list[tuple[str, Path]] = list(pair_figs)
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
        figs.append((f"histogram of {name}", _save(fig, out / f"hist_{safe_file_part(name)}.png")))
    for name, v in values["node_targets"].items():
        lab = v[~np.isnan(v)]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.hist(lab, bins=80, color="tab:purple", log=True)
        ax.set_xlabel(f"{name} (per atom)")
        ax.set_ylabel("atoms (log)")
        ax.set_title(f"{name}: {len(lab):,} atoms")
        figs.append((f"histogram of {name}", _save(fig, out / f"hist_{safe_file_part(name)}.png")))

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
        figs.append((f"{name} by {group_label}", _save(fig, out / f"box_{safe_file_part(name)}.png")))

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
