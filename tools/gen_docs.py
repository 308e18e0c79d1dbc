"""Generate the documentation pages that must not drift from the code and the results:

- ``docs/reference/cli.md``: every command, its usage, help and options, read from the ``matgnn`` CLI itself;
- ``docs/reference/config.md``: every key of a run config with its type, default and description, read from
  the pydantic schema (``RunConfig`` and each model's own config class);
- ``docs/benchmarks/results.md``: one table per ``benchmarks/results/*.json`` (command, commit, hardware,
  wall time, each target with its goal, value and whether it is met, and every metric);
- ``docs/models/*.md``: the shipped models' cards (``src/matgnn/pretrained/*/MODEL_CARD.md``) and an index;
- the tables of the study pages (``docs/benchmarks/studies/*.md``) between ``<!-- table: NAME -->`` and
  ``<!-- end table -->``, filled from the results files as :data:`STUDY_TABLES` says.

Usage: ``python tools/gen_docs.py`` writes them; ``python tools/gen_docs.py --check`` exits 1 naming every
page that differs from what the code and results give now (``tests/test_docs.py`` runs the check).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# -- the CLI ------------------------------------------------------------------------------------------------

def cli_page() -> str:
    import typer

    from matgnn.cli.main import app

    root = typer.main.get_command(app)
    lines = ["# Command-line reference", "",
             "Generated from the `matgnn` command itself (`python tools/gen_docs.py`); `matgnn COMMAND -h` prints "
             "the same. Exit status: 0 done, 2 a user error (one line naming the file or setting), 130 "
             "interrupted.", ""]

    def walk(cmd: Any, path: list[str]) -> None:
        commands = getattr(cmd, "commands", None)
        if path:
            name = " ".join(path)
            lines.extend([f"## matgnn {name}", ""])
            ctx = type(cmd).context_class(cmd, info_name=name) if hasattr(type(cmd), "context_class") else None
            usage = " ".join(cmd.collect_usage_pieces(ctx)) if ctx is not None else ""
            lines.extend(["```text", f"matgnn {name} {usage}".rstrip(), "```", ""])
            if cmd.help:
                lines.extend([" ".join(cmd.help.split()), ""])
            rows = []
            for p in cmd.params:
                if getattr(p, "hidden", False):
                    continue
                if p.param_type_name == "argument":
                    label = getattr(p, "metavar", None) or (p.name or "").upper()
                    rows.append((label, "argument", "required" if p.required else "optional",
                                 getattr(p, "help", "") or ""))
                    continue
                names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
                default = "" if p.default in (None, (), [], False) or callable(p.default) else f"`{p.default}`"
                kind = "flag" if p.is_flag else _type_name(getattr(getattr(p, "type_descriptor", None), "annotation", ""))
                rows.append((names, kind, default, p.help or ""))
            if rows:
                lines.extend(["| option | type | default | meaning |", "|---|---|---|---|"])
                lines.extend(f"| {_cell(a)} | {_cell(b)} | {_cell(c)} | {_cell(d)} |" for a, b, c, d in rows)
                lines.append("")
        if commands:
            for sub in sorted(commands):
                walk(commands[sub], [*path, sub])

    walk(root, [])
    return "\n".join(lines).rstrip() + "\n"


# -- the config schema --------------------------------------------------------------------------------------

def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    for prefix in ("<class '", "'>"):
        text = text.replace(prefix, "")
    return text.replace("matgnn.", "").replace("NoneType", "None")


def _fields(model: Any, prefix: str, lines: list[str], seen: set) -> None:
    from pydantic import BaseModel

    nested = []
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        default = field.get_default(call_default_factory=True) if not field.is_required() else "required"
        if isinstance(default, BaseModel):
            default = "see below"
        kind = _type_name(field.annotation)
        if len(kind) > 70:  # a union of config classes: each has its own table
            kind = "one of the sections below" if key != "model" else "a model's settings (see Models)"
        rows.append((f"`{key}`", kind, f"`{default}`" if default != "see below" else default,
                     field.description or ""))
        inner = [a for a in (typing.get_args(field.annotation) or (field.annotation,))
                 if isinstance(a, type) and issubclass(a, BaseModel)] if key != "model" else []
        nested.extend((key, a) for a in inner)
    lines.extend(["| key | type | default | meaning |", "|---|---|---|---|"])
    lines.extend(f"| {_cell(a)} | {_cell(b)} | {_cell(c)} | {_cell(d)} |" for a, b, c, d in rows)
    lines.append("")
    for key, cls in nested:
        if (key, cls) in seen:
            continue
        seen.add((key, cls))
        title = cls.__name__
        lines.extend([f"### `{key}` ({title})", ""])
        if cls.__doc__:
            lines.extend([" ".join(cls.__doc__.split()), ""])
        _fields(cls, f"{key}.", lines, seen)


def config_page() -> str:
    from matgnn.config import RunConfig
    from matgnn.models import MODELS

    lines = ["# Configuration reference", "",
             "Generated from the pydantic schema (`python tools/gen_docs.py`). `matgnn train --print-config` prints "
             "the defaults as YAML; `--set key=value` overrides one key. A key a model does not read is an error "
             "naming it.", "", "## Run config (`RunConfig`)", ""]
    _fields(RunConfig, "", lines, set())
    lines.extend(["## Models (`model:`)", "",
                  "Each model has its own settings; `model: {name: NAME, ...}` accepts exactly these. The defaults "
                  "below are the ones `model: {name: NAME}` and the Python class build alike.", ""])
    for name in sorted(MODELS):
        cfg = MODELS[name].config_class
        lines.extend([f"### `{name}` ({cfg.__name__})", ""])
        if cfg.__doc__:
            lines.extend([" ".join(cfg.__doc__.split()), ""])
        _fields(cfg, "model.", lines, set())
    return "\n".join(lines).rstrip() + "\n"


# -- benchmark results --------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _family_task_table(d: dict) -> list[str]:
    """A task suite's normalised errors (``data.normalised_error_table``: family -> task -> MAE/MAD), family by
    task, with each family's mean over the tasks it ran and the best family of each task in bold."""
    table = (d.get("data") or {}).get("normalised_error_table") or {}
    if not table:
        return []
    tasks = list((d.get("data") or {}).get("tasks") or sorted({t for row in table.values() for t in row}))
    best = {t: min((row[t] for row in table.values() if t in row), default=None) for t in tasks}
    lines = ["Test MAE / MAD (1.0 = predicting the mean; lower is better; the best family of each task in bold):", "",
             "| family | " + " | ".join(_cell(t) for t in tasks) + " | mean |",
             "|---|" + "---|" * (len(tasks) + 1)]
    for fam, row in table.items():
        cells = []
        for t in tasks:
            v = row.get(t)
            cells.append("-" if v is None else (f"**{v:.3f}**" if v == best[t] else f"{v:.3f}"))
        mean = sum(row.values()) / len(row) if row else float("nan")
        lines.append(f"| {_cell(fam)} | " + " | ".join(cells) + f" | {mean:.3f} |")
    missing = (d.get("data") or {}).get("runs_missing")
    if missing:
        lines.append("")
        lines.append(f"{missing} runs of the suite are missing from this file (a partial run).")
    return lines + [""]


def results_page() -> str:
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    lines = ["# Benchmark results", "",
             "Generated from `benchmarks/results/*.json` (`python tools/gen_docs.py`; a test fails when this page "
             "and the files disagree). Each file is written by the script its command names, from a clean commit; "
             "the studies behind them are in [Benchmark studies](studies/index.md).", "",
             "## Targets", "", "| benchmark | target | goal | value | met |", "|---|---|---|---|---|"]
    details = []
    for f in files:
        d = json.loads(f.read_text())
        name = d.get("benchmark", f.stem)
        for key, t in sorted((d.get("targets") or {}).items()):
            if not isinstance(t, dict):
                continue
            goal = f"{t.get('direction', '')} {_fmt(t.get('goal', ''))}".strip()
            lines.append(f"| [{_cell(f.stem)}](#{f.stem}) | {_cell(key)} | {_cell(goal)} | "
                         f"{_cell(_fmt(t.get('value', '')))} | {_cell(_fmt(t.get('met', '')))} |")
        details.extend([f"## {f.stem}", "",
                        f"- command: `{_cell(d.get('command', 'unknown'))}`",
                        f"- commit: `{_cell(str(d.get('git_commit', 'unknown'))[:12])}`",
                        f"- hardware: {_cell(d.get('hardware', 'unknown'))}",
                        f"- wall time: {_cell(_fmt(d.get('wall_seconds', 'unknown')))} s",
                        f"- created: {_cell(d.get('created', 'unknown'))}", ""])
        if name != f.stem:
            details.insert(-1, f"- benchmark: {_cell(name)}")
        details.extend(_family_task_table(d))
        metrics = d.get("metrics") or {}
        anchors = d.get("anchors") or {}
        for title, table in (("metric", metrics), ("anchor", anchors)):
            rows = [(k, v) for k, v in table.items() if isinstance(v, (int, float, str, bool))]
            if rows:
                details.extend([f"| {title} | value |", "|---|---|"])
                details.extend(f"| {_cell(k)} | {_cell(_fmt(v))} |" for k, v in rows)
                details.append("")
    return "\n".join(lines + [""] + details).rstrip() + "\n"


# -- model cards --------------------------------------------------------------------------------------------

def model_pages() -> dict[str, str]:
    from matgnn.artifacts import SHIPPED_DIR, card_summary, required_packages

    pages = {}
    index = ["# Shipped models", "",
             "Every model shipped inside the package, by name (`matgnn predict NAME ...`, `load_model(NAME)`). "
             "Rendered from each model's `MODEL_CARD.md` (`python tools/gen_docs.py`).", "",
             "| model | needs | summary |", "|---|---|---|"]
    for folder in sorted(p for p in SHIPPED_DIR.iterdir() if (p / "MODEL_CARD.md").is_file()):
        needs = ", ".join(f"`{p}`" for p in required_packages(folder)) or "-"
        index.append(f"| [{folder.name}]({folder.name}.md) | {needs} | {_cell(card_summary(folder))} |")
        card = (folder / "MODEL_CARD.md").read_text()
        pages[f"models/{folder.name}.md"] = card.rstrip() + "\n"
    pages["models/index.md"] = "\n".join(index) + "\n"
    return pages


#: the README's headline results: (results file, template, metric keys); numbers are read, never typed
HEADLINES = [
    ("graph_build", "Graph building on JARVIS dft_2d: {0:,.0f} structures/s in one process, {1:.0f}× ASE's "
                    "neighbour list", ["dft_2d.matgnn_single.structures_per_s", "dft_2d.speedup_vs_ase"]),
    ("dft2d_bandgap", "dft_2d band gap from scratch (1,076 monolayers, 5-fold CV): PNA {0:.3f} ± {1:.3f} eV MAE",
     ["pna.cv5.mae_mean", "pna.cv5.mae_std"]),
    ("alignn_compare_megnet_10k_equal_time", "MEGNet-MP formation energy, 10k structures, given ALIGNN's training time "
                                             "on CPU: {0:.3f} eV/atom against ALIGNN's {1:.3f}",
     ["ours_equal_time.megnet_e_form.mae", "alignn.megnet_e_form.mae"]),
]
README_START, README_END = "<!-- results: generated by tools/gen_docs.py -->", "<!-- results end -->"


def readme_results() -> str:
    lines = [README_START]
    for name, template, keys in HEADLINES:
        d = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        values = [d["metrics"][k] for k in keys]
        lines.append(f"- {template.format(*values)} "
                     f"([`{name}.json`](docs/benchmarks/results.md#{name}), "
                     f"commit `{str(d.get('git_commit', 'unknown'))[:7]}`, {d.get('hardware', 'unknown')})")
    lines.append(README_END)
    return "\n".join(lines)


def readme_text() -> str:
    """The README with its generated results block renewed."""
    text = (ROOT / "README.md").read_text()
    a, b = text.index(README_START), text.index(README_END) + len(README_END)
    return text[:a] + readme_results() + text[b:]


# -- the study pages' tables ---------------------------------------------------------------------------------

#: NAME -> (results file, header cells, rows of cells). In a cell, ``{KEY}`` or ``{KEY:SPEC}`` is the metric KEY of
#: the file formatted with SPEC (default ``.3g``), ``{@a/b/0/c:SPEC}`` a value at that path of the whole file,
#: ``{?KEY}`` a metric that may be missing (the cell is then empty); anything else is text. Under each table: the file, its commit and hardware.
STUDY_TABLES: dict[str, tuple[str, list[str], list[list[str]]]] = {
    "alignn_megnet_3_epochs": (
        "alignn_compare_megnet",
        ["task", "", "test MAE after 3 epochs", "in ALIGNN's training time", "training structures/s",
         "inference structures/s", "peak memory"],
        [[f"{t} ({u})", "ALIGNN's release", f"{{alignn.{t}.mae:.3f}}", f"{{alignn.{t}.mae:.3f}} (3 epochs)", f"{{alignn.{t}.train_structures_per_s:.1f}}",
          f"{{alignn.{t}.inference_structures_per_s:.1f}}", f"{{alignn.{t}.peak_rss_gb:.2f}} GB"]
         if k == 0 else
         ["", "ours, width 48", f"{{ours.{t}.mae:.3f}}",
          f"{{ours_equal_time.{t}.mae:.3f}} ({{ours_equal_time.{t}.epochs:.0f}} epochs)",
          f"{{ours.{t}.train_structures_per_s:.0f}} ({{ours.{t}.train_speedup_vs_alignn:.1f}}×)",
          f"{{ours.{t}.inference_structures_per_s:.0f}} ({{ours.{t}.inference_speedup_vs_alignn:.1f}}×)",
          f"{{ours.{t}.peak_rss_gb:.2f}} GB ({{ours.{t}.peak_memory_ratio_vs_alignn:.2f}}×)"]
         for t, u in (("megnet_e_form", "eV/atom"), ("megnet_gappbe", "eV")) for k in (0, 1)]),
    "alignn_megnet_lr": (
        "alignn_compare_megnet_lr",
        ["task", "tool", "lr 1e-3", "lr 2e-3", "lr 4e-3", "its chosen rate", "test MAE there"],
        [[f"{t} ({u})" if side == "alignn" else "", "ALIGNN's release" if side == "alignn" else "ours, width 48",
          *(f"{{{side}.{t}.lr{lr}.mae:.3f}} ({{{side}.{t}.lr{lr}.val_mae:.3f}})" for lr in ("0.001", "0.002", "0.004")),
          f"{{{side}.{t}.lr:g}}", f"{{{side}.{t}.mae:.3f}}"]
         for t, u in (("megnet_e_form", "eV/atom"), ("megnet_gappbe", "eV")) for side in ("alignn", "ours")]),
    "alignn_dihedrals": (
        "alignn_dihedrals",
        ["dft_2d gap, test MAE (eV)", "fold 0", "fold 1", "mean", "s / epoch"],
        [["`alignn`", "{@data/per_run/0/mae:.3f}", "{@data/per_run/2/mae:.3f}", "{alignn.dft2d_gap.folds2.mae_mean:.3f}",
          "{alignn.seconds_per_epoch:.1f}"],
         ["`alignn` + `dihedrals: true`", "{@data/per_run/1/mae:.3f}", "{@data/per_run/3/mae:.3f}",
          "{alignn+dihedrals.dft2d_gap.folds2.mae_mean:.3f}",
          "{alignn+dihedrals.seconds_per_epoch:.1f} ({dihedrals.cost_ratio_per_epoch:.1f}×)"]]),
}
_SHIPPED = ["magmom-mp", "magmom-mp-ensemble", "magmom-mp-chgnet", "bandgap-2d", "bandgap-2d-ensemble",
            "bandgap-2d-chgnet", "bandgap-2d-sevennet"]
STUDY_TABLES.update({
    "throughput_vs_cgcnn2": (
        "throughput",
        ["", "training structures/s", "vs cgcnn2", "test MAE after 4 epochs (μB/atom)", "inference, model alone",
         "end to end from the CIF files"],
        [["cgcnn2 0.6.0 (CLI)", "{cgcnn2.train_structures_per_s:.0f}", "1×", "{cgcnn2.test_mae:.3f}", "",
          "{cgcnn2.predict_structures_per_s_end_to_end:.0f}/s"],
         ["matgnn cgcnn (fused CPU kernel)", "{cgcnn.train_structures_per_s:.0f}",
          "{cgcnn.train_speedup_vs_cgcnn2:.2f}×", "{cgcnn.test_mae:.3f}", "{cgcnn.model_only_structures_per_s:,.0f}/s",
          "{cgcnn.predict_structures_per_s_end_to_end:.0f}/s ({cgcnn.predict_speedup_vs_cgcnn2:.2f}×)"],
         ["matgnn cgcnn, streamed from LMDB", "{cgcnn_streamed.train_structures_per_s:.0f}",
          "{cgcnn_streamed.train_speedup_vs_cgcnn2:.2f}×", "{cgcnn_streamed.test_mae:.3f}", "", ""],
         *([f"matgnn {m}", f"{{{m}.train_structures_per_s:.0f}}", f"{{{m}.train_speedup_vs_cgcnn2:.2f}}×",
            f"{{{m}.test_mae:.3f}}", f"{{{m}.model_only_structures_per_s:,.0f}}/s", ""] for m in ("schnet", "pna"))]),
    "throughput_kernel_ab": (
        "throughput",
        ["our CGCNN, same split", "training structures/s", "test MAE after 4 epochs (μB/atom)"],
        [["PyTorch path (`MATGNN_KERNELS=off`)", "{kernel_ab.pytorch_path.train_structures_per_s:.0f}",
          "{kernel_ab.pytorch_path.test_mae:.5f}"],
         ["fused CPU kernel", "{kernel_ab.fused.train_structures_per_s:.0f} ({kernel_ab.speedup:.2f}×)",
          "{kernel_ab.fused.test_mae:.5f}"]]),
    "predict_screening": (
        "predict_throughput",
        ["input", "structures", "structures/s end to end", "peak RSS"],
        [["the JSON Lines file as shipped", "{jsonl.structures:,.0f}", "{jsonl.structures_per_s:.0f}",
          "{jsonl.peak_rss_gb:.2f} GB"],
         ["the same structures as one extxyz file (read frame by frame)", "{extxyz.structures:,.0f}",
          "{extxyz.structures_per_s:.0f}", "{extxyz.peak_rss_gb:.2f} GB"]]),
    "predict_shipped_models": (
        "predict_throughput",
        ["shipped model", "parameters", "load in a fresh process", "load (warm)", "graph of a 64-atom cell",
         "backbone features of a new 64-atom cell", "64-atom latency single / batched (64)"],
        [[f"`{m}`", f"{{{m}.parameters:,.0f}}", f"{{{m}.cold_load_s:.3f}} s", f"{{{m}.load_s:.3f}} s",
          f"{{{m}.graph_build_ms:.2f}} ms", f"{{?{m}.batch_fields_ms:.0f}} ms",
          f"{{{m}.cpu.single_ms:.2f}} / {{{m}.cpu.batched_ms_per_structure:.2f}} ms"]
         for m in _SHIPPED]),
})
_DFT2D = [("cgcnn", "cgcnn (as published)"), ("cgconv_net", "cgconv_net (seed research's improved CGCNN)"),
          ("schnet", "schnet"), ("pna", "pna"), ("dimenet++", "dimenet++ (periodic)"),
          ("zoo:transformerconv", "zoo: transformerconv"), ("alignn", "alignn (line graph, 4 + 2 layers, width 64; the defaults of that commit)")]
STUDY_TABLES.update({
    "cgcnn2_dft2d": (
        "cgcnn2_compare",
        ["", "test MAE (5-fold mean ± std)", "training structures/s", "speed-up", "wall time per fold"],
        [["cgcnn2", "{cgcnn2.mae_mean:.3f} ± {cgcnn2.mae_std:.3f} eV", "{cgcnn2.structures_per_s_mean:,.0f}", "1×",
          "{cgcnn2.wall_s_mean:.1f} s"],
         *([label, f"{{{k}.mae_mean:.3f}} ± {{{k}.mae_std:.3f}} eV", f"{{{k}.structures_per_s_mean:,.0f}}",
            f"{{{k}.speedup_vs_cgcnn2:.2f}}×", f"{{{k}.wall_s_mean:.1f}} s"]
           for k, label in (("matgnn", "matgnn cgcnn, batch 64"), ("matgnn_bs256", "matgnn cgcnn, batch 256")))]),
    "ensemble_uq": (
        "ensemble_uq",
        ["task", "members' test MAE", "best member", "ensemble mean", "Spearman(σ, |error|) raw → recalibrated",
         "miscalibration area raw → one pair → per bin"],
        [[label, f"{{{k}.members_mae_mean:.3f}} ± {{{k}.members_mae_std:.3f}}", f"{{{k}.best_member_mae:.3f}}",
          f"{{{k}.ensemble_mae:.3f}}",
          f"{{{k}.spearman_sigma_abs_error:.2f}} → {{{k}.recalibrated_spearman_sigma_abs_error:.2f}}",
          f"{{{k}.miscalibration_area:.3f}} → {{{k}.recalibrated_global_miscalibration_area:.3f}} → "
          f"{{{k}.recalibrated_miscalibration_area:.3f}} ({{{k}.recalibration_bins:.0f}} bins)"]
         for k, label in (("dft2d", "dft_2d band gap (eV)"), ("magmom", "mp_magmoms |m| (μB)"))]),
    "graph_build": (
        "graph_build",
        ["data", "structures (skipped)", "mean atoms", "matgnn, 1 process", "matgnn, all cores", "ASE, 1 process",
         "speed-up vs ASE"],
        [[label, f"{{{k}.n_structures:,.0f}} ({{{k}.n_skipped:.0f}})", f"{{{k}.mean_atoms:.1f}}",
          f"{{{k}.matgnn_single.structures_per_s:,.0f}}/s", f"{{{k}.matgnn_all_cores.structures_per_s:,.0f}}/s",
          f"{{{k}.ase_single.structures_per_s:,.1f}}/s", f"{{{k}.speedup_vs_ase:.1f}}×"]
         for k, label in (("dft_2d", "dft_2d"), ("mp_magmoms", "mp_magmoms (first 10,000)"))]),
    "mp_megnet": (
        "mp_megnet",
        ["task", "matgnn CGCNN test MAE", "ALIGNN (full 60k train) on the same ids", "ratio", "budget"],
        [[label, f"{{cgcnn.{k}.test_mae:.4f}}", f"{{@anchors/alignn_full60k.{k}.test_mae:.4f}}",
          f"{{cgcnn.{k}.ratio_to_alignn:.2f}}×",
          f"{{cgcnn.{k}.core_hours:.1f}} core-h ({{cgcnn.{k}.structures_per_s:.0f}} structures/s)"]
         for k, label in (("megnet_e_form", "formation energy (eV/atom)"), ("megnet_gappbe", "band gap (eV)"))]),
    "dft2d_bandgap": (
        "dft2d_bandgap",
        ["model", "70/30 random MAE", "5-fold CV MAE (mean ± std)", "slowest fold", "measured at"],
        [*([label, f"{{{k}.random70_30.mae:.3f}}", f"{{{k}.cv5.mae_mean:.3f}} ± {{{k}.cv5.mae_std:.3f}}",
            f"{{{k}.cv5.fold_seconds_max:.0f}} s", f"`{{@data/measured_at/{k}:.7}}`"] for k, label in _DFT2D),
         ["predict the train mean (same folds)", "", "{predict_mean.cv.mae:.3f}", "", ""]]),
})
_EXF = [("pna", "PNA"), ("zoo:transformerconv", "TransformerConv (zoo)"), ("cgconv_net", "CGConv net"),
        ("alignn", "ALIGNN-style (ours, the defaults of its commit)"), ("cgcnn", "CGCNN"), ("schnet", "SchNet"),
        ("dimenet++", "DimeNet++ (30 epochs)"), ("pna+area", "PNA, `transform: log_per_area`"),
        ("cgcnn+area", "CGCNN, `transform: log_per_area`")]
_MTL = [("emt", "mixing_energy", "EMT, mixing energy (graph, eV/atom)"),
        ("emt", "atom_energy", "EMT, per-atom energy (node, eV)"),
        ("dft_3d", "formation_energy_peratom", "dft_3d subset, formation energy (eV/atom)"),
        ("dft_3d", "bulk_modulus_kv", "dft_3d subset, bulk modulus (GPa)"),
        ("dft_3d", "optb88vdw_bandgap", "dft_3d subset, band gap (eV)"),
        ("dft_3d", "magmom_oszicar", "dft_3d subset, magmom_oszicar (μB)"),
        ("mp_cgcnn", "formation_energy_per_atom", "MP (5k), formation energy (eV/atom)"),
        ("mp_cgcnn", "band_gap", "MP (5k), band gap (eV)"), ("mp_cgcnn", "efermi", "MP (5k), Fermi energy (eV)"),
        ("mp_cgcnn", "total_magnetization", "MP (5k), total magnetisation (μB per cell)")]
_POLICIES = [("full", "fine-tune all layers"), ("all_but_embedding_conv0", "freeze all but embedding + conv_0"),
             ("all_but_embedding", "freeze all but embedding"),
             ("two_phase", "two-phase (embedding frozen, then all at lr/10)")]
STUDY_TABLES.update({
    "dft2d_exfoliation": (
        "dft2d_exfoliation",
        ["family", "MAE, 5-fold (meV/atom)", "slowest fold"],
        [["predict the training mean", "{predict_mean.dft2d_exfoliation.mae_mean:.1f}", ""],
         *([label, f"{{{k}.dft2d_exfoliation.mae_mean:.1f}} ± {{{k}.dft2d_exfoliation.mae_std:.1f}}",
            f"{{{k}.dft2d_exfoliation.fold_seconds_max:.0f}} s"] for k, label in _EXF)]),
    "mtl_vs_stl": (
        "mtl_vs_stl",
        ["data, task", "multi-task MAE", "single-task MAE", "MTL / STL"],
        [[label, f"{{{d}.{t}.mtl_mae_mean:#.3g}} ± {{{d}.{t}.mtl_mae_std:#.2g}}",
          f"{{{d}.{t}.stl_mae_mean:#.3g}} ± {{{d}.{t}.stl_mae_std:#.2g}}", f"{{{d}.{t}.mtl_over_stl:.2f}}"]
         for d, t, label in _MTL]),
    "transfer_2d": (
        "transfer_2d",
        ["source", "policy", "test MAE (eV)", "folds", "weight shift: embedding / conv_0 / conv_1 / conv_2 / head"],
        [["—", "from scratch", "{scratch.mae_mean:.3f} ± {scratch.mae_std:.3f}", "{scratch.folds:.0f}", ""],
         *([source, label, f"{{{k}.{p}.mae_mean:.3f}} ± {{{k}.{p}.mae_std:.3f}}", f"{{{k}.{p}.folds:.0f}}",
            " / ".join(f"{{{k}.{p}.weight_shift.{g}:.2f}}" for g in ("embedding", "conv_0", "conv_1", "conv_2",
                                                                      "head"))]
           for k, source in (("mp_gap", "MP bulk band gaps (36k)"), ("magmom", "CGCNN per-atom |m| model (47k)*"))
           for p, label in _POLICIES)]),
})
_SLICES = [("3d", "3d metals (Sc–Zn)"), ("4d", "4d metals"), ("5d", "5d metals (La, Hf–Hg)"),
           ("lanthanides", "lanthanides (Ce–Lu)"), ("actinides", "actinides"), ("other", "other elements")]
_MOMENT_MODELS = ["backbone_prior", "backbone", "mean_backbone_magmom_mp", "magmom_mp", "magmom_mp_ensemble",
                  "chgnet_zero_shot"]
STUDY_TABLES.update({
    "mp_magmom": (
        "mp_magmom",
        ["method", "test MAE", "without V, Cr, Mn", "on the CHGNet sample ({@data/chgnet_sample:s})"],
        [["matgnn `magmom-mp-ensemble` (mean of a PNA 64 × 3 and a CGCNN 64 × 3; stages in its model card)",
          "{ours.test_mae:.4f}", "{ours.test_mae_without_V-Cr-Mn:.3f}", "{ours.sample_mae:.3f}"],
         *([label, f"{{{k}.test_mae:.3f}}", f"{{{k}.test_mae_without_V-Cr-Mn:.3f}}", f"{{{k}.sample_mae:.3f}}"]
           for k, label in (("xgboost", "XGBoost on per-atom descriptors"), ("element_mean", "per-element mean"),
                            ("linear", "ridge regression on the descriptors"))),
         ["CHGNet 0.3.0 zero-shot", "", "", "{chgnet_zero_shot.sample_mae:.3f}"],
         ["CHGNet fine-tuned ({@data/chgnet_finetune:s}; {chgnet_finetuned.finetune_seconds:.0f} s)", "", "",
          "{chgnet_finetuned.sample_mae:.3f}"],
         ["inference structures/s (atoms to moments)", "ours {ours.inference_structures_per_s:.0f}, CHGNet "
          "{chgnet_zero_shot.inference_structures_per_s:.1f} ({ours.speedup_vs_chgnet:.0f}×)", "", ""]]),
    "magmom_backbone_slices": (
        "magmom_backbone",
        ["test sites by element", "sites", "`chgnet` + prior (shipped `magmom-mp-chgnet`)", "`chgnet`, element mean",
         "mean of that and `magmom-mp`", "`magmom-mp`", "`magmom-mp-ensemble`", "CHGNet 0.3.0 zero-shot"],
        [["all", "{common.sites:,.0f}", *(f"{{{m}.common_mae:.4f}}" for m in _MOMENT_MODELS)],
         *([label, f"{{slice.{k}.sites:,.0f}}", *(f"{{slice.{k}.{m}.mae:.3f}}" for m in _MOMENT_MODELS)]
           for k, label in _SLICES)]),
    "magmom_backbone_ood": (
        "magmom_backbone",
        ["lanthanides held out ({ood.test_structures:.0f} test structures with one, {ood.sites:,.0f} sites)",
         "MAE"],
        [["CHGNet 0.3.0 zero-shot", "{ood.chgnet_zero_shot.mae:.3f}"],
         ["`magmom-mp` (trained with them)", "{ood.magmom_mp_trained_with.mae:.3f}"],
         ["`chgnet` + prior, {ood.train_structures_without:,.0f} training structures with lanthanides / without",
          "{ood.backbone_prior_trained_with.mae:.3f} / {ood.backbone_prior_trained_without.mae:.3f}"],
         ["`chgnet`, element mean, the same with / without", "{ood.backbone_trained_with.mae:.3f} / "
          "{ood.backbone_trained_without.mae:.3f}"],
         ["CGCNN 128 × 3, the same with / without", "{ood.cgcnn_trained_with.mae:.3f} / "
          "{ood.cgcnn_trained_without.mae:.3f}"]]),
})
def _maes(models: str, task: str, spread: str = "last", extra: str = "") -> str:
    """A cell of the 2D backbone table: the 5-fold MAE of each model of ``models`` (``a / b``), with the spread
    (± std) of the last one, of every one (``all``) or of none (``none``)."""
    names = models.split()
    digits = ".1f" if "exfoliation" in task else ".3f"
    parts = [f"{{{m}.{task}.mae_mean:{digits}}}" + (f" ± {{{m}.{task}.mae_std:{digits}}}" if spread == "all" or (
        spread == "last" and k == len(names) - 1) else "") for k, m in enumerate(names)]
    return " / ".join(parts) + extra


_NO_TWIN = " ({{{}.dft2d_gap.no_twin_mae_mean:.3f}} on the test entries without a twin)"
_B2D_GAP = [
    ("`chgnet` (frozen backbone + our MLP) / `sevennet`", "chgnet sevennet", "all"),
    ("`chgnet_gbm` / `sevennet_gbm` (XGBoost on the features)", "chgnet_gbm sevennet_gbm", "none"),
    ("`chgnet_2dm` / `sevennet_2dm` (2DMatPedia → dft_2d transfer)", "chgnet_2dm sevennet_2dm", "none"),
    ("`chgnet_gbm_pbe` / `sevennet_gbm_pbe`", "chgnet_gbm_pbe sevennet_gbm_pbe", "none"),
    ("`chgnet_delta_pbe` / `sevennet_delta_pbe` (delta on the PBE-gap model)", "chgnet_delta_pbe sevennet_delta_pbe",
     "last"),
    ("`ens_delta` (mean of both delta models)", "ens_delta", "last"),
    ("`_delta_pbe_seed1` (both stages at training seed 1: chgnet / sevennet)",
     "chgnet_delta_pbe_seed1 sevennet_delta_pbe_seed1", "none"),
    ("`ens_delta_chgnet_seeds` / `ens_delta_sevennet_seeds` (one backbone, two seeds)",
     "ens_delta_chgnet_seeds ens_delta_sevennet_seeds", "all"),
    ("`ens_nn` (mean of 6 network runs)", "ens_nn", "last"),
    ("`_2dm_disjoint` (chgnet / sevennet)", "chgnet_2dm_disjoint sevennet_2dm_disjoint", "none"),
    ("`_gbm_pbe_disjoint`", "chgnet_gbm_pbe_disjoint sevennet_gbm_pbe_disjoint", "none"),
    ("`_delta_pbe_disjoint` (chgnet / sevennet)", "chgnet_delta_pbe_disjoint sevennet_delta_pbe_disjoint", "none"),
    ("`ens_nn_disjoint` (mean of the 2 plain and 4 disjoint runs)", "ens_nn_disjoint", "last"),
    ("`chgnet_ref` / `sevennet_ref` (2DMatPedia reference; no dft_2d label)", "chgnet_ref sevennet_ref", "last"),
    ("`chgnet_gbm_ref` / `sevennet_gbm_ref`", "chgnet_gbm_ref sevennet_gbm_ref", "none"),
    ("`chgnet_ref_delta` / `sevennet_ref_delta` (delta on the reference)", "chgnet_ref_delta sevennet_ref_delta",
     "none"),
    ("`ens_ref` (mean of both `_ref_delta`)", "ens_ref", "last"),
    ("`chgnet_ref_first` / `sevennet_ref_first` (reference, else the delta model)",
     "chgnet_ref_first sevennet_ref_first", "none"),
    ("`ens_ref_first`", "ens_ref_first", "last"),
    ("`chgnet_ref_first_nou` / `sevennet_ref_first_nou` (… without GGA+U entries)",
     "chgnet_ref_first_nou sevennet_ref_first_nou", "none"),
    ("`ens_ref_first_nou`", "ens_ref_first_nou", "last"),
    ("`chgnet_ref_twin` / `sevennet_ref_twin` (dft_2d's own training labels first)",
     "chgnet_ref_twin sevennet_ref_twin", "last"),
    ("`ens_ref_twin`", "ens_ref_twin", "last"),
    ("`gbm_both` (one XGBoost over both backbones' features, both PBE-gap models' answers and the labels of the 5 "
     "nearest 2DMatPedia monolayers in each feature space)", "gbm_both", "last"),
    ("`ens_ref_first_mix` (the reference where it matches, else the mean of both delta models and `gbm_both`)",
     "ens_ref_first_mix", "last"),
]
_B2D_EXF = [
    ("`chgnet` / `sevennet` (MLP)", "chgnet sevennet"), ("`chgnet_gbm` / `sevennet_gbm`", "chgnet_gbm sevennet_gbm"),
    ("`chgnet_log` / `sevennet_log` (MLP on log1p)", "chgnet_log sevennet_log"),
    ("`chgnet_gbm_geo` / `sevennet_gbm_geo` (+ layer geometry, log energy per area)",
     "chgnet_gbm_geo sevennet_gbm_geo"),
    ("`chgnet_area` / `sevennet_area` (MLP, `transform: log_per_area`)", "chgnet_area sevennet_area"),
    ("PNA from scratch (this run)", "pna"), ("`ens_nn` (chgnet, sevennet, PNA)", "ens_nn"),
    ("`ens_log_geo` (2 `_log`, 2 `_gbm_geo`, PNA)", "ens_log_geo"),
    ("`ens_area_geo` (2 `_area`, 2 `_gbm_geo`, PNA)", "ens_area_geo"), ("`ens_all` (all 9 models of the fold)", "ens_all"),
]
STUDY_TABLES.update({
    "backbones_2d_gap": (
        "backbones_2d",
        ["model", "dft_2d OptB88vdW gap (eV)", "the same on twin-grouped folds"],
        [[label, _maes(models, "dft2d_gap", spread) + (
            _NO_TWIN.format(models) if models in ("ens_ref_first_nou", "ens_ref_twin", "ens_ref_first_mix") else ""),
          f"{{?{models.split()[-1]}.dft2d_gap_twin_grouped.mae_mean:.3f}}" if len(models.split()) == 1 else
          " / ".join(f"{{?{m}.dft2d_gap_twin_grouped.mae_mean:.3f}}" for m in models.split())]
         for label, models, spread in _B2D_GAP]),
    "backbones_2d_exfoliation": (
        "backbones_2d",
        ["model", "dft_2d exfoliation (meV/atom)", "the same on twin-grouped folds"],
        [[label, _maes(models, "dft2d_exfoliation", "all"),
          " / ".join(f"{{?{m}.dft2d_exfoliation_twin_grouped.mae_mean:.1f}}" for m in models.split())]
         for label, models in _B2D_EXF]),
    "backbones_2d_2dmatpedia": (
        "backbones_2d",
        ["model", "2DMatPedia PBE gap (eV)"],
        [["`chgnet` (frozen backbone + our MLP)", _maes("chgnet", "2dmatpedia_gap")],
         ["`chgnet_gbm`", _maes("chgnet_gbm", "2dmatpedia_gap")],
         ["`cgcnn2` (PyPI reproduction of CGCNN, its defaults)", _maes("cgcnn2", "2dmatpedia_gap")],
         ["`cgcnn` (ours, width 64 × 3, `matgnn train` defaults)", _maes("cgcnn", "2dmatpedia_gap")]]),
})
_MP = (("megnet_e_form", "formation energy (eV/atom)"), ("megnet_gappbe", "PBE gap (eV)"))
STUDY_TABLES.update({
    "alignn_megnet_10k": (
        "alignn_compare_megnet_10k",
        ["task", "ALIGNN's release, 1 epoch (quoted)", "ours, width 48, 1 epoch", "at or below ALIGNN's"],
        [[label, f"{{alignn.{t}.mae:.4f}}", f"{{ours.{t}.mae:.4f}}", f"{{@targets/{t}.mae_at_or_below_alignn/met}}"]
         for t, label in _MP]),
    "alignn_megnet_10k_equal_time": (
        "alignn_compare_megnet_10k_equal_time",
        ["formation energy (eV/atom)", "test MAE", "epochs", "peak memory"],
        [["ALIGNN's release", "{alignn.megnet_e_form.mae:.4f}", "1", "{alignn.megnet_e_form.peak_rss_gb:.1f} GB"],
         ["ours, width 48 (the defaults of that commit), the same epoch", "{ours.megnet_e_form.mae:.4f}", "1",
          "{ours.megnet_e_form.peak_rss_gb:.1f} GB"],
         ["ours, as many epochs as fit in ALIGNN's training time", "{ours_equal_time.megnet_e_form.mae:.4f}",
          "{ours_equal_time.megnet_e_form.epochs:.0f}", "{ours_equal_time.megnet_e_form.peak_rss_gb:.1f} GB"]]),
})
STUDY_TABLES["time_to_accuracy"] = (
    "time_to_accuracy",
    ["formation energy (eV/atom)", "training structures/s", "epochs", "validation MAE after 300 / 600 / 1,200 s",
     "seconds to ALIGNN's one-epoch validation MAE", "test MAE at the end"],
    [*([label, f"{{{k}.megnet_e_form.train_structures_per_s:.0f}}", f"{{{k}.megnet_e_form.epochs:.0f}}",
        " / ".join(f"{{?{k}.megnet_e_form.val_mae_by_{t}s:.3f}}" for t in (300, 600, 1200)),
        f"{{{k}.megnet_e_form.seconds_to_alignn_epoch1_val_mae:.0f}} s "
        f"({{{k}.megnet_e_form.time_to_accuracy_speedup_vs_alignn:.1f}}× sooner)", f"{{{k}.megnet_e_form.test_mae:.3f}}"]
       for k, label in (
           ("default", "the default model of that commit ({@data/runs/default/model:s}, width "
                       "{@data/runs/default/model_settings/hidden:d} × {@data/runs/default/model_settings/layers:d})"),
           ("alignn", "the ALIGNN-style model (width {@data/runs/alignn/model_settings/hidden:d}, "
                      "{@data/runs/alignn/model_settings/layers:d} + {@data/runs/alignn/model_settings/gcn_layers:d} "
                      "layers: its defaults at that commit)"))),
     ["ALIGNN's release, one epoch (quoted; validation MAE {@data/alignn_release/curve_seconds_val_mae/0/1:.3f})", "",
      "1", "", "{@data/alignn_release/curve_seconds_val_mae/0/0:.0f} s (its epoch's training pass)",
      "{@data/alignn_release/test_mae:.3f}"]])
_SUITE_TASKS = (("dft2d_gap", "dft_2d gap"), ("dft2d_exfoliation", "dft_2d exfoliation"), ("m2d_gap", "2DMatPedia gap"),
                ("mp_eform", "MP formation energy"), ("mp_gap", "MP gap"), ("mp_magmom", "MP moments per atom"),
                ("dft3d_eform", "dft_3d formation energy"), ("dft3d_bulk", "dft_3d bulk modulus"))
_SUITE_FAMILIES = (("cgcnn", "CGCNN"), ("pna", "PNA"), ("schnet", "SchNet"), ("dimenet++", "DimeNet++"),
                   ("alignn", "ALIGNN-style"), ("chgnet", "CHGNet features + MLP ¹"),
                   ("sevennet", "SevenNet-0 features + MLP ¹"), ("xgboost", "XGBoost, descriptors ²"),
                   ("xgboost_chgnet", "XGBoost, CHGNet features ¹ ²"), ("xgboost_sevennet", "XGBoost, SevenNet-0 features ¹ ²"))
#: the one-change sweep of a family's defaults (task_suite.py's SWEEP): suffix -> row label
_SWEEP = (("h128", "width 128"), ("l2", "2 layers"), ("l4", "4 layers"), ("lr2e-3", "lr 2e-3"),
          ("patience40", "patience 40"))
#: the row label of the defaults of PNA, CGCNN, SchNet and DimeNet++ (the same values for the four)
_DEFAULTS = "defaults: width 64, 3 layers, lr 1e-3, patience 20"
_PNA_SWEEP = (("pna", _DEFAULTS), ("pna_seed", "the defaults, training seed 1042"),
              *((f"pna_{s}", label) for s, label in _SWEEP))
_CGCNN_SWEEP = (("cgcnn", _DEFAULTS),
                *((f"cgcnn_{s}", label) for s, label in _SWEEP))
#: the ALIGNN-style model's part of the sweep (task_suite.py's SWEPT["alignn"]; its layers are ALIGNN + bond-graph)
_ALIGNN_SWEEP = (("alignn", "defaults: width 64, 4 + 4 layers, lr 1e-3, patience 20"), ("alignn_h128", "width 128"),
                 ("alignn_l2", "2 + 4 layers"), ("alignn_lr2e-3", "lr 2e-3"))
#: SchNet's sweep (task_suite.py's SWEPT["schnet"]: all of SWEEP) and DimeNet++'s (its learning rate)
_SCHNET_DIMENET_SWEEP = (("schnet", f"SchNet, {_DEFAULTS}"),
                         *((f"schnet_{s}", f"SchNet, {label}") for s, label in _SWEEP),
                         ("dimenet++", f"DimeNet++, {_DEFAULTS}"),
                         ("dimenet++_lr2e-3", "DimeNet++, lr 2e-3"))
#: the suite's small tasks (the ones run on five folds) and the digits of their MAEs
_SMALL_TASKS = {"dft2d_gap": ".3f", "dft2d_exfoliation": ".1f", "dft3d_eform": ".3f", "dft3d_bulk": ".1f"}
#: the suite's large tasks, the rest (fold 0 in most files; the MP tasks' folds change only the training seed)
_LARGE_TASKS = tuple(t for t, _ in _SUITE_TASKS if t not in _SMALL_TASKS)
#: the large tasks and the digits of their MAEs (for the files that run them on several folds)
_LARGE_DIGITS = {t: ".3f" for t in _LARGE_TASKS}
#: the families a plain install trains from scratch (each swept at lr 2e-3 on every task)
_PLAIN_TRAINED = ("pna", "cgcnn", "alignn", "schnet", "dimenet++")
#: the families run on the small tasks' five folds (task_suite_small_folds.json)
_SMALL_FOLD_FAMILIES = ("cgcnn", "pna", "alignn", "chgnet", "sevennet")


def _fold_table(stem: str, title: str, families: list[tuple[str, str]], extra: tuple = (), rate: str = "",
                paired: bool = False, tasks: dict[str, str] | None = None) -> tuple[str, list[str], list[list[str]]]:
    """A table of a file run on several folds (``tasks``, the small tasks unless given: task -> digits of its MAE):
    each family's test MAE (mean ± std over the folds) and mean MAE / MAD (``rate``, a task: and its training structures/s
    there, mean over folds; ``paired``: and each variant against its family's defaults task by task and
    fold by fold: the pairs it wins, the mean difference in MAE / MAD and its t statistic), then the rows ``extra``."""
    tasks = tasks or _SMALL_TASKS
    header = [title, *(f"{dict(_SUITE_TASKS)[t]} ({{@data/tasks/{t}/unit:s}})" for t in tasks), "mean MAE / MAD",
              *([f"training structures/s, {dict(_SUITE_TASKS)[rate]}"] if rate else []),
              *(["pairs won against the defaults", "mean paired difference in MAE / MAD (t)"] if paired else [])]
    rows = [[label, *(f"{{?{f}.{t}.mae:{d}}} ± {{?{f}.{t}.mae_std:{d}}}" for t, d in tasks.items()),
             f"{{?{f}.mean_mae_over_mad:.3f}}", *([f"{{?{f}.{rate}.train_structures_per_s:,.0f}}"] if rate else []),
             *([f"{{?{f}.paired_wins:d}} of {{?{f}.paired_pairs:d}}",
                f"{{?{f}.paired_mean_diff:+.3f}} (t {{?{f}.paired_t:+.1f}})"] if paired else [])]
            for f, label in families]
    return stem, header, [*rows, *extra]


def _large_table(stem: str, title: str, families: list[tuple[str, str]], diff: bool = False
                 ) -> tuple[str, list[str], list[list[str]]]:
    """A table of a file of the large tasks (one fold each): each family's MAE / MAD per task and its mean, its
    training structures/s on MEGNet-MP formation energy, and for a variant the pairs it wins against its family's
    defaults (``diff``: and the mean paired difference); a family's defaults leave those cells empty."""
    header = [title, *(label for t, label in _SUITE_TASKS if t in _LARGE_TASKS), "mean",
              "training structures/s, MP formation energy", "pairs won against the defaults",
              *(["mean paired difference in MAE / MAD"] if diff else [])]
    rows = [[label, *(f"{{?{f}.{t}.mae_over_mad:.3f}}" for t in _LARGE_TASKS), f"{{?{f}.mean_mae_over_mad:.3f}}",
             f"{{?{f}.mp_eform.train_structures_per_s:,.0f}}", f"{{?{f}.paired_wins:d}} of {{?{f}.paired_pairs:d}}",
             *([f"{{?{f}.paired_mean_diff:+.4f}}"] if diff else [])]
            for f, label in families]
    return stem, header, rows


STUDY_TABLES.update({
    "task_suite_errors": (
        "task_suite",
        ["MAE / MAD", *(label for _, label in _SUITE_TASKS), "mean"],
        [*([label, *(f"{{?{f}.{t}.mae_over_mad:.3f}}" for t, _ in _SUITE_TASKS), f"{{?{f}.mean_mae_over_mad:.3f}}"]
           for f, label in _SUITE_FAMILIES),
         ["best family", *(f"{{?best.{t}.mae_over_mad:.3f}}" for t, _ in _SUITE_TASKS), ""],
         ["the run's default ({@data/default_family:s}) ÷ the best",
          *(f"{{?default_vs_best.{t}:.2f}}" for t, _ in _SUITE_TASKS), ""],
         ["the run's default ÷ the best a plain install has",
          *(f"{{?default_vs_best_plain.{t}:.2f}}" for t, _ in _SUITE_TASKS),
          "{?default_vs_best_plain.mean:.3f}"]]),
    "task_suite_recipe": (
        "task_suite_recipe",
        ["MAE / MAD", *(label for _, label in _SUITE_TASKS), "mean"],
        [[f"{label}, one-cycle recipe", *(f"{{?{f}_onecycle.{t}.mae_over_mad:.3f}}" for t, _ in _SUITE_TASKS),
          f"{{?{f}_onecycle.mean_mae_over_mad:.3f}}"] for f, label in _SUITE_FAMILIES if f in ("cgcnn", "pna", "alignn")]),
    "task_suite_pna_sweep": (
        "task_suite_pna_sweep",
        ["PNA, MAE / MAD", *(label for _, label in _SUITE_TASKS), "mean", "training structures/s, MP formation energy"],
        [[label, *(f"{{?{f}.{t}.mae_over_mad:.3f}}" for t, _ in _SUITE_TASKS), f"{{?{f}.mean_mae_over_mad:.3f}}",
          f"{{?{f}.mp_eform.train_structures_per_s:,.0f}}"] for f, label in _PNA_SWEEP]),
    "task_suite_pna_folds": _fold_table(
        "task_suite_pna_folds", "PNA, test MAE over 5 folds (mean ± std)",
        [(f, label) for f, label in _PNA_SWEEP if f in ("pna", "pna_patience40", "pna_lr2e-3")]),
    "task_suite_small_folds": _fold_table(
        "task_suite_small_folds", "test MAE over 5 folds (mean ± std)",
        [(f, label) for f, label in _SUITE_FAMILIES if f in _SMALL_FOLD_FAMILIES],
        (["the run's default ({@data/default_family:s}) ÷ the best of these families, MAE / MAD",
          *(f"{{?default_vs_best.{t}:.2f}}" for t in _SMALL_TASKS), ""],
         ["the run's default ÷ the best of these a plain install has (no ¹)",
          *(f"{{?default_vs_best_plain.{t}:.2f}}" for t in _SMALL_TASKS), "{?default_vs_best_plain.mean:.3f}"])),
    "task_suite_small_folds_more": _fold_table(
        "task_suite_small_folds_more", "test MAE over 5 folds (mean ± std)",
        [(f, label) for f, label in _SUITE_FAMILIES if f in ("schnet", "dimenet++", "xgboost")]),
    "task_suite_cgcnn_folds": _fold_table(
        "task_suite_cgcnn_folds", "CGCNN, test MAE over 5 folds (mean ± std)", list(_CGCNN_SWEEP)),
    "task_suite_alignn_folds": _fold_table(
        "task_suite_alignn_folds", "ALIGNN-style, test MAE over 5 folds (mean ± std)", list(_ALIGNN_SWEEP), rate="dft2d_gap"),
    "task_suite_schnet_dimenet_folds": _fold_table(
        "task_suite_schnet_dimenet_folds", "test MAE over 5 folds (mean ± std)", list(_SCHNET_DIMENET_SWEEP),
        rate="dft2d_gap", paired=True),
    "task_suite_schnet_large": _large_table(
        "task_suite_schnet_large", "SchNet, MAE / MAD (fold 0)",
        [(f, label) for f, label in _SCHNET_DIMENET_SWEEP if f in ("schnet", "schnet_h128")]),
    "task_suite_lr_small": _fold_table(
        "task_suite_lr_small", "test MAE over 5 folds (mean ± std)",
        [(f, f"{label}, {lr}") for base, label in _SUITE_FAMILIES if base in ("pna", "cgcnn")
         for f, lr in ((base, "lr 1e-3 (its default)"), (f"{base}_lr2e-3", "lr 2e-3"))], paired=True),
    "task_suite_lr_large": _large_table(
        "task_suite_lr_large", "MAE / MAD (fold 0)",
        [(f, f"{label}, {lr}") for base, label in _SUITE_FAMILIES if base in _PLAIN_TRAINED
         for f, lr in ((base, "lr 1e-3 (its default at that commit)"), (f"{base}_lr2e-3", "lr 2e-3"))], diff=True),
    "task_suite_large_folds": _fold_table(
        "task_suite_large_folds", "test MAE over folds 0-2 (mean ± std)",
        [(f, label) for f, label in _SUITE_FAMILIES if f in _PLAIN_TRAINED],
        (["the run's default ({@data/default_family:s}) ÷ the best of these families, MAE / MAD",
          *(f"{{?default_vs_best.{t}:.2f}}" for t in _LARGE_TASKS), "{?default_vs_best_plain.mean:.3f}", ""],),
        rate="mp_eform", tasks=_LARGE_DIGITS),
    "task_suite_xgb_backbone_folds": _fold_table(
        "task_suite_xgb_backbone_folds", "test MAE over 5 folds (mean ± std)",
        [(f, label) for f, label in _SUITE_FAMILIES if f in ("xgboost_chgnet", "xgboost_sevennet")]),
    "task_suite_cgcnn_mp": (
        "task_suite_cgcnn_mp",
        ["CGCNN, MP formation energy", "test MAE ({@data/tasks/mp_eform/unit:s})", "MAE / MAD",
         "training structures/s"],
        [[label, f"{{?{f}.mp_eform.mae:.4f}}", f"{{?{f}.mp_eform.mae_over_mad:.3f}}",
          f"{{?{f}.mp_eform.train_structures_per_s:,.0f}}"] for f, label in _CGCNN_SWEEP]),
    "task_suite_cost": (
        "task_suite",
        ["family", "training structures/s, dft_2d gap / MP formation energy",
         "inference structures/s, dft_2d gap / MP formation energy", "peak memory, MP formation energy"],
        [[label, f"{{?{f}.dft2d_gap.train_structures_per_s:,.0f}} / {{?{f}.mp_eform.train_structures_per_s:,.0f}}",
          f"{{?{f}.dft2d_gap.predict_structures_per_s:,.0f}} / {{?{f}.mp_eform.predict_structures_per_s:,.0f}}",
          f"{{?{f}.mp_eform.peak_rss_gb:.2f}} GB"] for f, label in _SUITE_FAMILIES]),
})
TABLE_START, TABLE_END = "<!-- table: {} -->", "<!-- end table -->"
#: a generated table with its markers; group 1: its name
TABLE_PATTERN = re.compile(re.escape(TABLE_START).replace(r"\{\}", "(.+?)") + r".*?" + re.escape(TABLE_END), re.DOTALL)


def _value(d: dict, key: str) -> Any:
    if key.startswith("@"):
        v: Any = d
        for part in key[1:].split("/"):
            v = v[int(part)] if isinstance(v, list) else v[part]
        return v
    return d["metrics"][key]


def study_table(name: str) -> str:
    """The study table NAME (see :data:`STUDY_TABLES`), with its markers."""
    stem, header, rows = STUDY_TABLES[name]
    d = json.loads((ROOT / "benchmarks" / "results" / f"{stem}.json").read_text())

    class Missing(Exception):
        pass

    def fill(cell: str) -> str:
        def one(m: re.Match) -> str:
            key, spec = m.group(1), ""
            tail = re.search(r":([<>=^]?[+ -]?#?0?\d*[,_]?(?:\.\d+)?[a-zA-Z%]?)$", key)  # a key may hold ":"
            if tail:
                key, spec = key[:tail.start()], tail.group(1)
            if key.startswith("?"):
                key = key[1:]
                if key not in d["metrics"]:
                    raise Missing
            try:
                value = _value(d, key)
                if isinstance(value, bool):
                    return "met" if value else "not met"
                return format(value, spec or ".3g")
            except (KeyError, IndexError) as e:
                raise SystemExit(f"study table {name}: {stem}.json has no {key!r} ({e})") from None
        try:
            return _cell(re.sub(r"\{([^{}]+)\}", one, cell))
        except Missing:
            return ""

    lines = [TABLE_START.format(name), "", "| " + " | ".join(fill(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fill(c) for c in row) + " |" for row in rows]
    lines += ["", f"From [`{stem}.json`](../results.md#{stem}), commit `{str(d.get('git_commit', 'unknown'))[:7]}`, "
                  f"{d.get('hardware', 'unknown')}.", "", TABLE_END]
    return "\n".join(lines)


def study_pages() -> dict[str, str]:
    """Every study page that holds a table of :data:`STUDY_TABLES`, with its tables renewed; a marker naming no
    table fails (a typo must not leave a stale table behind)."""
    out = {}
    for path in sorted((DOCS / "benchmarks" / "studies").glob("*.md")):
        text = path.read_text()
        names = TABLE_PATTERN.findall(text)
        if not names:
            continue
        unknown = [n for n in names if n not in STUDY_TABLES]
        if unknown:
            raise SystemExit(f"{path}: no study table named {', '.join(unknown)} in tools/gen_docs.py STUDY_TABLES")
        out[str(path.relative_to(DOCS))] = TABLE_PATTERN.sub(lambda m: study_table(m.group(1)), text)
    return out


def changelog_page() -> str:
    return (ROOT / "CHANGELOG.md").read_text()


def pages() -> dict[str, str]:
    out = {"reference/cli.md": cli_page(), "reference/config.md": config_page(),
           "benchmarks/results.md": results_page(), "changelog.md": changelog_page(), "../README.md": readme_text()}
    out.update(model_pages())
    out.update(study_pages())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="say which pages are stale; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in pages().items():
        path = DOCS / rel
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote docs/{rel}")
    if stale:
        print("stale generated pages (run python tools/gen_docs.py): " + ", ".join(f"docs/{s}" for s in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
