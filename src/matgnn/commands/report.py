"""``matgnn report RUN``: one self-contained HTML page of a run folder.

Config, metrics, learning curves (losses and each head's validation MAE), parity plots,
per-element error as a periodic-table heatmap, error by |label| bin, the calibration plot
when the predictions carry a spread (``<head>_std`` columns: ensembles), and the list of
skipped structures. Figures are embedded as base64 PNG, so the file can be mailed or
archived alone.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from matgnn.artifacts import read_yaml
from matgnn.evaluation.plots import (
    calibration_plot,
    metric_curves,
    periodic_table_heatmap,
)

SECTIONS = ("summary", "config", "learning-curves", "parity", "per-element", "calibration", "skipped")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict[str, Any]], limit: int | None = None) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows[:limit])
    more = f"<p>… and {len(rows) - limit} more (full list in the run folder)</p>" if limit and len(rows) > limit else ""
    return f"<table><tr>{''.join(f'<th>{html.escape(c)}</th>' for c in cols)}</tr>{body}</table>{more}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    try:
        f = float(v)
        return f"{f:.4g}" if "." in str(v) or "e" in str(v) else str(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path))) if path.is_file() else []


def build_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Write ``<run>/report.html`` (or ``out``) and return its path."""
    from ase.data import atomic_numbers

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a run folder (no config.yaml)")
    cfg = read_yaml(run / "config.yaml")
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    history = _csv(run / "history.csv")
    figs = run / "report_figures"
    figs.mkdir(exist_ok=True)
    heads = cfg["targets"]
    parts: dict[str, str] = {}

    rows = []
    for h in heads:
        for split in ("val", "test"):
            if f"{split}.{h['name']}.mae" in metrics:
                rows.append({"head": h["name"], "level": h["level"], "split": split,
                             **{k: metrics.get(f"{split}.{h['name']}.{k}") for k in ("mae", "rmse", "r2", "count")}})
    facts = {k: metrics.get(k) for k in ("n_parameters", "n_train", "n_val", "n_test", "n_skipped", "epochs_run",
                                         "best_epoch", "train_seconds", "world_size", "device")}
    parts["summary"] = (f"<p>model <b>{html.escape(str(cfg['model']['name']))}</b>, source "
                        f"<b>{html.escape(str(cfg['source'].get('kind')))}</b>, split <b>{html.escape(cfg['split']['kind'])}</b>"
                        f"</p>{_table([{k: v for k, v in facts.items() if v is not None}])}{_table(rows)}"
                        if metrics else "<p>the run has not finished: no metrics.json yet</p>")
    parts["config"] = (f"<details><summary>resolved config (config.yaml)</summary>"
                       f"<pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False))}</pre></details>")

    curves = []
    if (run / "learning_curve.png").is_file():
        curves.append(_img(run / "learning_curve.png", "learning curve"))
    mae_keys = [k for k in (history[0] if history else {}) if k.startswith("val_mae.")]
    if mae_keys:
        curves.append(_img(metric_curves(history, mae_keys, figs / "val_mae.png", "validation MAE (target units)"),
                           "validation MAE per head"))
    parts["learning-curves"] = "".join(curves) or "<p>no history yet</p>"

    parity = [_img(p, p.stem) for p in sorted(run.glob("parity_*.png"))]
    parts["parity"] = "".join(parity) or "<p>no test predictions</p>"

    pe = []
    for h in heads:
        table = _csv(run / f"per_element_{h['name']}.csv")
        if not table:
            continue
        mae = {atomic_numbers[r["element"]]: float(r["mae"]) for r in table}
        png = periodic_table_heatmap(mae, figs / f"periodic_{h['name']}.png",
                                     f"{h['name']}: test MAE per element ({'per atom' if h['level'] == 'node' else 'structures containing it'})",
                                     "MAE")
        pe.append(f"<h3>{html.escape(h['name'])}</h3>" + _img(png, f"per-element MAE {h['name']}")
                  + "<details><summary>table</summary>" + _table(table) + "</details>")
        bins = _csv(run / f"errors_by_bin_{h['name']}.csv")
        if bins:
            pe.append("<h4>error by |label| bin</h4>" + _table(bins))
    parts["per-element"] = "".join(pe) or "<p>no per-element table</p>"

    cal = []
    for split_file in (run / "predictions_test.csv", run / "predictions_test_atoms.csv"):
        rows_p = _csv(split_file)
        for h in heads:
            for key, label in ((f"{h['name']}_std", "raw σ"), (f"{h['name']}_std_recalibrated", "recalibrated σ")):
                if rows_p and key in rows_p[0]:
                    err = np.array([float(r[f"{h['name']}_pred"]) - float(r[f"{h['name']}_true"]) for r in rows_p])
                    sig = np.array([float(r[key]) for r in rows_p])
                    png, area = calibration_plot(err, sig, figs / f"calibration_{key}.png", f"{h['name']} (test, {label})")
                    cal.append(_img(png, f"calibration {h['name']} {label}")
                               + f"<p>{label}: miscalibration area {area:.3f}</p>")
    parts["calibration"] = "".join(cal) or (
        "<p>This run predicts without a spread (one model), so there is no calibration to show; "
        "ensemble predictions with σ get a calibration plot here.</p>")

    skipped = _csv(run / "skipped.csv")
    unlabelled = (run / "unlabelled.txt").read_text().split() if (run / "unlabelled.txt").is_file() else []
    parts["skipped"] = (f"<p>{len(skipped)} structures skipped by the loader's checks"
                        f"{f', {len(unlabelled)} without any of the targets' if unlabelled else ''}.</p>"
                        + _table(skipped, limit=200))

    titles = {"summary": "Summary", "config": "Config", "learning-curves": "Learning curves", "parity": "Parity plots",
              "per-element": "Error per element", "calibration": "Calibration", "skipped": "Skipped structures"}
    body = "".join(f'<section id="{k}"><h2>{titles[k]}</h2>{parts[k]}</section>' for k in SECTIONS)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>matgnn run {html.escape(run.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }}
img {{ max-width: 100%; display: block; margin: 0.6em 0; }}
table {{ border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
th {{ background: #f2f2f2; }}
pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }}
section {{ border-top: 1px solid #ddd; margin-top: 1.5em; }}
</style></head>
<body><h1>matgnn run <code>{html.escape(run.name)}</code></h1>
<nav>{' · '.join(f'<a href="#{k}">{titles[k]}</a>' for k in SECTIONS)}</nav>
{body}
<script>
// for headless checks: every figure decoded
window.addEventListener("load", () => {{
  const imgs = [...document.images];
  document.body.dataset.images = imgs.length;
  document.body.dataset.imagesOk = imgs.every(i => i.complete && i.naturalWidth > 0);
}});
</script>
</body></html>
"""
    out = Path(out) if out else run / "report.html"
    out.write_text(page)
    return out
