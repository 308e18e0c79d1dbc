"""The ``matgnn`` command."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from matgnn.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR
from matgnn.graphs.neighbors import GraphSettings
from matgnn.packages import BACKBONES

#: the one default of graph settings (the run config's, `graphs build`'s and `data info`'s)
DEFAULT_GRAPHS = GraphSettings()

#: -h as well as --help, on every command
HELP_NAMES = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(rich_markup_mode=None, context_settings=HELP_NAMES, help="Graph neural networks for materials properties from crystal structures.",
                  no_args_is_help=True, add_completion=True, pretty_exceptions_show_locals=False)
data_app = typer.Typer(rich_markup_mode=None, context_settings=HELP_NAMES, help="Inspect structure sources.", no_args_is_help=True)
graphs_app = typer.Typer(rich_markup_mode=None, context_settings=HELP_NAMES, help="Build and reuse graph caches.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(graphs_app, name="graphs")
bench_app = typer.Typer(rich_markup_mode=None, context_settings=HELP_NAMES, help="Measure costs of saved models.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
leaderboard_app = typer.Typer(rich_markup_mode=None, context_settings=HELP_NAMES, help="JARVIS-Leaderboard: contributions from runs, benchmark definitions.",
                              no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")
#: every message prints literally (a path or an install hint in brackets is text, not markup)
console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
#: errors, warnings and notes: never silenced by -q
alerts = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    if not value:
        return
    import platform

    import torch

    from matgnn.version import __version__, source_commit

    commit = source_commit()
    print(f"matgnn {__version__}" + (f" (git {commit})" if commit else "")
          + f"; Python {platform.python_version()}, torch {torch.__version__}"
          + (" with CUDA " + str(torch.version.cuda) if torch.version.cuda else " (CPU build)"))
    raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print matgnn's version (and torch's) and exit"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="print only results, warnings and errors"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="more detail: progress every 2 s in a log, and "
                                                                "the warnings of the packages matgnn uses"),
) -> None:
    """Graph neural networks for materials properties from crystal structures."""
    import warnings

    from matgnn import progress

    if quiet and verbose:
        raise typer.BadParameter("give -q or -v, not both", param_hint="-q/-v")
    console.quiet = quiet
    progress.set_level("quiet" if quiet else "verbose" if verbose else "normal")
    if verbose:
        warnings.simplefilter("default")

_STYLES = {"error": "red", "invalid config": "red", "warning": "yellow", "interrupted": "yellow"}


def plain(text: object) -> str:
    """``text`` as one printable string: terminal control characters (escape sequences from a model card or
    a file name someone made) removed, so nothing printed can move the cursor or recolour the terminal."""
    import re

    return re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07?|[\x00-\x08\x0b-\x1f\x7f\x9b]", "", str(text))


def validation_message(e: object) -> str:
    """A pydantic ValidationError as one line: each bad setting's dotted name and what is wrong (no URLs)."""
    try:
        errs = e.errors()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return str(e).splitlines()[0]
    parts = []
    for err in errs:
        loc = ".".join(str(x) for x in err.get("loc", ()) if not str(x).startswith("function-"))
        got = err.get("input")
        shown = f" (got {got!r})" if isinstance(got, (str, int, float, bool)) or got is None else ""
        parts.append(f"{loc or 'config'}: {err.get('msg', '')}{shown}")
    return "; ".join(parts)


def _say(label: str, message: object) -> None:
    """``label: message`` on stderr, the label coloured and the message printed literally (brackets in a path
    or an install command are text, not markup)."""
    from rich.text import Text

    alerts.print(Text.assemble((f"{label}:", _STYLES.get(label, "")), " ", plain(message)), soft_wrap=True)


def _out_dir(new: Optional[Path], old: Optional[Path], old_name: str = "--out",
             required: bool = False) -> Optional[Path]:
    """The output folder of a command: ``--out-dir`` (the one rule: ``--out`` names a file, ``--out-dir`` a
    folder); the command's old spelling still works and says the new name once."""
    if old is not None:
        if new is not None and new != old:
            raise typer.BadParameter(f"give --out-dir or {old_name}, not both", param_hint="--out-dir")
        _say("note", f"{old_name} is now --out-dir (a folder; --out names a file); the old name still works")
        new = old
    if required and new is None:
        raise typer.BadParameter("the output folder is required", param_hint="--out-dir")
    return new


OLD_OUT_HELP = "old name of --out-dir"

DEVICE_HELP = "auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N"

SOURCE_HELP = ("emt[:N] (embedded demo set), jarvis:NAME (dft_2d, dft_3d, ...), a folder with id_prop.csv, "
               "an .extxyz/.xyz/.traj/.db file, or a .jsonl(.gz) magnetic-moment file")


def _source(spec: str, store_dir: Optional[str], limit: Optional[int]):
    from matgnn.data.sources import make_source, parse_source

    try:
        return make_source(parse_source(spec, store_dir=store_dir, limit=limit))
    except (ValueError, FileNotFoundError) as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None


@data_app.command("info")
def data_info(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    store_dir: Optional[str] = typer.Option(None, help="JARVIS: folder holding (or receiving) the dataset zip"),
    limit: Optional[int] = typer.Option(None, help="read at most this many entries"),
    cutoff: float = typer.Option(DEFAULT_GRAPHS.cutoff, help="cutoff (Å) for the isolated-atom check"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="folder for data_info.json, load_report.json, "
                                                                   "skipped.csv (default ./matgnn-data-info/<source>)"),
    out: Optional[Path] = typer.Option(None, "--out", hidden=True, help=OLD_OUT_HELP),
    twins: bool = typer.Option(False, "--twins", help=(
        "also find structural twins (the same structure under two ids: same reduced formula and a pymatgen "
        "StructureMatcher fit) and how far their labels differ; lists them in twins.csv")),
) -> None:
    """Counts, target fields, missing values per target, skipped structures and why."""
    from matgnn.commands.info import source_info

    out = _out_dir(out_dir, out)
    src = _source(source, store_dir, limit)
    values: dict = {}
    info, report = source_info(src, cutoff, values=values, twins=twins, progress=console.print)
    table = Table(title=f"{info['source']}: {info['kept']} usable of {info['entries']} entries")
    for col in ("target", "level", "labelled", "missing", "mean", "std", "min", "max"):
        table.add_column(col, justify="left" if col in ("target", "level") else "right", no_wrap=col == "target")
    for level in ("graph", "node"):
        for name, st in info[f"{level}_targets"].items():
            table.add_row(name, level, str(st["labelled"]), str(st["missing"]),
                          *(f"{st[k]:.4g}" if k in st else "-" for k in ("mean", "std", "min", "max")))
    Console().print(table)
    a = info["atoms_per_structure"]
    Console().print(f"atoms per structure: {a['min']}..{a['max']} (mean {a['mean']:.1f}); "
                    f"{len(info['elements'])} elements; most common: "
                    + ", ".join(f"{k} {v}" for k, v in list(info['elements'].items())[:10]))
    if info["dimensionality"]:
        Console().print(f"dimensionality: {info['dimensionality']}")
    report.print(console)
    if twins:
        tw = info["twins"]
        console.print(f"structural twins: {tw['structures_with_a_twin']} of {info['kept']} structures in {tw['sets']} "
                      "sets (the same structure under two ids; listed in twins.csv)")
        if tw["label_spread"]:
            spread = Table(title="labels within a set of twins")
            for col in ("target", "sets labelled twice", "mean spread", "max spread", "sets over 10 % of std"):
                spread.add_column(col, justify="left" if col == "target" else "right", no_wrap=col == "target")
            for name, sp in tw["label_spread"].items():
                spread.add_row(name, str(sp["sets_with_two_labels"]), f"{sp['mean']:.4g}", f"{sp['max']:.4g}",
                               str(sp["sets_differing_by_over_10pct_of_std"]))
            Console().print(spread)
    folder = out or Path("matgnn-data-info") / src.name
    report.save(folder)
    (folder / "data_info.json").write_text(json.dumps(info, indent=1))
    written = [folder / "data_info.json", folder / "skipped.csv"]
    if twins:
        import csv

        with open(folder / "twins.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["set", "id", "formula", *info["graph_targets"]])
            w.writeheader()
            w.writerows(values["twin_rows"])
        written.append(folder / "twins.csv")
    console.print("saved " + ", ".join(map(str, written)))


@data_app.command("report")
def data_report_cmd(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    store_dir: Optional[str] = typer.Option(None, help="JARVIS: folder holding (or receiving) the dataset zip"),
    limit: Optional[int] = typer.Option(None, help="read at most this many entries"),
    cutoff: float = typer.Option(DEFAULT_GRAPHS.cutoff, help="cutoff (Å) for the isolated-atom check"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="folder for the figures and index.html "
                                                                   "(default ./matgnn-data-report/<source>)"),
    out: Optional[Path] = typer.Option(None, "--out", hidden=True, help=OLD_OUT_HELP),
    compare: list[str] = typer.Option([], "--compare", help="A:B — check two labels of one quantity against "
                                                            "each other (e.g. optb88vdw_bandgap:mbj_bandgap) and "
                                                            "list the structures far off their robust line; "
                                                            "repeatable"),
    z_max: float = typer.Option(3.5, min=0.5, help="--compare: robust σ beyond which a pair is listed as doubtful"),
) -> None:
    """EDA figures: target histograms, counts by dimensionality, most common elements, box plots by group;
    with --compare, labels that disagree with a related label."""
    from matgnn.commands.eda import data_report, parse_pair

    out = _out_dir(out_dir, out)
    pairs = [parse_pair(c) for c in compare]
    src = _source(source, store_dir, limit)
    folder = out or Path("matgnn-data-report") / src.name
    index, info = data_report(src, folder, cutoff, compare=pairs, z_max=z_max)
    console.print(f"{info['kept']} usable of {info['entries']} entries; figures and {index}")
    for a, b in pairs:
        summary = info["label_pairs"][f"{a}:{b}"]
        if "file" not in summary:
            console.print(f"{b} against {a}: {summary['note']}", highlight=False, soft_wrap=True)
            continue
        console.print(f"{b} against {a}: {summary['both']} structures with both, {b} ≈ {summary['intercept']:.3g} + "
                      f"{summary['slope']:.3g} × {a}; {summary['doubtful']} beyond {summary['z_max']:g} robust σ "
                      f"→ {folder / summary['file']}", highlight=False, soft_wrap=True)


@app.command("report")
def report_cmd(run: Path = typer.Argument(..., help="a run folder"),
               out: Optional[Path] = typer.Option(None, help="HTML file (default RUN/report.html)")) -> None:
    """One self-contained HTML page of a run: config, curves, parity, per-element heatmap, calibration, skipped."""
    from matgnn.commands.report import build_report

    try:
        path = build_report(run, out)
    except FileNotFoundError as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    console.print(f"report → {path}")


@graphs_app.command("build")
def graphs_build(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    cutoff: float = typer.Option(DEFAULT_GRAPHS.cutoff, help="neighbour cutoff in Å (the run config's default)"),
    max_neighbors: Optional[int] = typer.Option(DEFAULT_GRAPHS.max_neighbors,
                                                help="nearest neighbours per atom (ties kept); 0 keeps all"),
    workers: Optional[int] = typer.Option(None, help="processes (default: all CPU cores)"),
    cache_dir: Optional[Path] = typer.Option(None, help="cache folder (default $MATGNN_CACHE_DIR or ~/.cache/matgnn)"),
    on_invalid: str = typer.Option("skip", help="skip (and report) or error on bad structures"),
    store_dir: Optional[str] = typer.Option(None, help="JARVIS: folder holding the dataset zip"),
    limit: Optional[int] = typer.Option(None, help="use at most this many entries"),
) -> None:
    """Build the graph cache of SOURCE, or reuse it if it exists with the same settings."""
    from matgnn.artifacts import default_cache_root
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.graphs.neighbors import GraphSettings

    src = _source(source, store_dir, limit)
    settings = GraphSettings(cutoff=cutoff, max_neighbors=max_neighbors or None)
    t0 = time.perf_counter()
    try:
        cache = build_graph_cache(src, settings, cache_root=(cache_dir or default_cache_root()) / "graphs",
                                  workers=workers, on_invalid=on_invalid)
    except ValueError as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    wall = time.perf_counter() - t0
    st = cache.build_stats
    if st is not None and st.built == 0:
        console.print(f"reused complete cache {cache.path} ({len(cache)} graphs) in {wall:.2f} s")
    else:
        console.print(f"built {st.built} entries in {st.seconds:.1f} s ({st.rate:,.0f} structures/s incl. reading "
                      f"and writing), {len(cache)} graphs → {cache.path}")
    cache.report.print(console)
    console.print(f"load report: {cache.path / 'load_report.json'}, skipped list: {cache.path / 'skipped.csv'}")


def _is_config_file(spec: object) -> bool:
    return str(spec).lower().endswith((".yaml", ".yml"))


def _source_config(spec: str, targets: list[str]):  # noqa: ANN202 - a RunConfig
    """The default run config on SOURCE ``spec`` (a folder with id_prop.csv, emt:N, jarvis:NAME, an
    extxyz/traj/db or JSON Lines file) with ``targets`` (``NAME`` or ``NAME:node``); without ``targets`` a
    source with exactly one label is trained on it, otherwise its labels are listed."""
    from matgnn.config import RunConfig
    from matgnn.data.sources import make_source, parse_source
    from matgnn.errors import UserError

    base = RunConfig()
    try:
        source = parse_source(spec)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(f"{spec}: {e}") from None
    if source.kind == "emt" and not targets:  # the demo: its own targets
        return RunConfig.model_validate({**base.model_dump(mode="json"), "source": source.model_dump(mode="json")})
    if not targets:
        first = next((s for s in make_source(source) if not isinstance(s, Exception)), None)
        labels = ([*first.graph_targets] + [f"{n}:node" for n in first.node_targets]) if first is not None else []
        if len(labels) != 1:
            raise UserError(f"{spec}: name the target to train on with --target NAME (NAME:node for a per-atom "
                            f"target); the source's labels: {', '.join(labels) or 'none found'}")
        targets = labels
    heads = []
    for t in targets:
        name, _, level = t.partition(":")
        if level not in ("", "graph", "node"):
            raise UserError(f"--target {t!r}: NAME or NAME:node")
        heads.append({"name": name, "level": level or "graph"})
    return RunConfig.model_validate({**base.model_dump(mode="json"), "source": source.model_dump(mode="json"),
                                     "targets": heads})


def _run_config(config: Optional[Path | str], overrides: list[str], targets: list[str] | None = None):
    """The run config of ``config`` — a YAML file, or a SOURCE trained with the default settings on
    ``targets`` (default: the embedded demo) — with ``key=value`` overrides; an invalid one is reported
    (pydantic names the key) and exits with 2."""
    from matgnn.config import RunConfig
    from matgnn.errors import UserError

    try:
        if config is None:
            cfg = RunConfig()
        elif _is_config_file(config):
            cfg = RunConfig.from_yaml(config)
        else:
            cfg = _source_config(str(config), list(targets or []))
        return cfg.with_overrides(list(overrides))
    except UserError as e:
        _say("invalid config" if config is not None and _is_config_file(config) else "error", e)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except Exception as e:  # pydantic errors say which key is wrong
        _say("invalid config", validation_message(e) if hasattr(e, "errors") else e)
        raise typer.Exit(EXIT_USER_ERROR) from None


@app.command("train")
def train_cmd(
    config: Optional[str] = typer.Argument(None, help="a run config (YAML), or a SOURCE to train on with the "
                                                      "default settings (" + SOURCE_HELP + "; with --target); "
                                                      "default: the embedded EMT demo"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set train.epochs=50"),
    target: list[str] = typer.Option([], "--target", help="with a SOURCE: the label to train on (repeat for "
                                                          "several heads; NAME:node for a per-atom label)"),
    epochs: Optional[int] = typer.Option(None, help="shortcut for --set train.epochs=N"),
    out_dir: Optional[str] = typer.Option(None, "--out-dir", help="folder receiving the run folder (shortcut for "
                                                                  "--set output_dir=DIR)"),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", hidden=True, help=OLD_OUT_HELP),
    print_config: bool = typer.Option(False, help="print the resolved config and exit"),
    resume: Optional[Path] = typer.Option(None, help="continue an interrupted run folder exactly where it stopped "
                                                     "(on the same data: checked against the run's fingerprint)"),
    allow_changed_data: bool = typer.Option(False, "--allow-changed-data", help=(
        "with --resume: go on although the data changed since the run started (recorded in the run folder's "
        "data_changes.json)")),
) -> None:
    """Train a model; writes a self-describing run folder."""
    import yaml

    from matgnn.errors import StructureError

    overrides = list(set_)
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    output_dir = _out_dir(out_dir, output_dir, "--output-dir")
    if output_dir is not None:
        overrides.append(f"output_dir={output_dir}")
    if resume is not None:
        if config is not None or overrides:
            _say("error", "--resume continues a run with its saved config; give no CONFIG or overrides")
            raise typer.Exit(EXIT_USER_ERROR) from None
        if not (resume / "checkpoint_last.pt").is_file():
            _say("error", f"{resume} has no checkpoint_last.pt to resume from (not a run folder, or "
                 "the run stopped before its first epoch ended)")
            raise typer.Exit(EXIT_USER_ERROR)
        config = resume / "config.yaml"
    elif target and config is not None and _is_config_file(config):
        _say("error", "--target goes with a SOURCE; a config file names its targets")
        raise typer.Exit(EXIT_USER_ERROR)
    cfg = _run_config(config, overrides, target)
    if print_config:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return
    from matgnn.training.run import train

    try:
        train(cfg, console=console, resume=resume, allow_changed_data=allow_changed_data)
    except (StructureError, ValueError, FileNotFoundError) as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None


@app.command("finetune")
def finetune_cmd(
    source: str = typer.Argument(..., help="the pretrained model: a run folder, model folder or shipped name"),
    config: Optional[Path] = typer.Argument(None, help="run config (YAML) of the new data and targets"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set train.epochs=50"),
    freeze: str = typer.Option("none", help="none | all_but_embedding_conv0 | all_but_embedding | trunk, or "
                                            "comma-separated layer groups (embedding, conv_0, ..., readout, head)"),
    keep_heads: bool = typer.Option(False, help="reuse the source's heads for targets it also predicted"),
    two_phase: bool = typer.Option(False, help="phase 1 embedding frozen, phase 2 all layers at a lower LR"),
    phase1_epochs: Optional[int] = typer.Option(None, help="two-phase: epochs of phase 1 (default half)"),
    phase2_lr_factor: float = typer.Option(0.1, help="two-phase: phase 2 LR = train.lr × this"),
) -> None:
    """Fine-tune a pretrained model on new data (transfer learning); writes run folders with transfer.json
    (loaded/new tensors, frozen groups, relative weight shift per layer group)."""
    from matgnn.training.finetune import finetune
    from matgnn.training.transfer import FREEZE_POLICIES

    cfg = _run_config(config, set_)
    policy: str | list[str] = freeze if freeze in FREEZE_POLICIES else [g.strip() for g in freeze.split(",") if g.strip()]
    try:
        runs = finetune(cfg, source, policy, keep_heads, two_phase, phase1_epochs, phase2_lr_factor, console=console)
    except (ValueError, FileNotFoundError) as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    import json as _json

    for r in runs:
        shift = _json.loads((r / "transfer.json").read_text())["weight_shift"]
        console.print(f"{r}: weight shift " + ", ".join(f"{g} {v:.3f}" for g, v in shift.items()))


@app.command("ensemble")
def ensemble_cmd(
    config: Optional[Path] = typer.Argument(None, help="run config (YAML); default: the embedded EMT demo"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set train.epochs=50"),
    members: int = typer.Option(5, help="number of members (seeds train.seed, train.seed + 1, ...)"),
    bootstrap: bool = typer.Option(False, help="each member also trains on a bootstrap resample of the training split"),
    combine: list[Path] = typer.Option([], "--combine", help="no training: an ensemble of these finished runs "
                                                             "(repeat; same split and heads, any architectures)"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="with --combine: the ensemble folder to write"),
    out: Optional[Path] = typer.Option(None, "--out", hidden=True, help=OLD_OUT_HELP),
) -> None:
    """Train an ensemble of one config; writes mean ± std of the members' metrics, the ensemble's
    predictions with σ, and σ's calibration (before and after recalibration on the validation set).
    With --combine, the same for runs trained already (e.g. a CGCNN and a PNA on one split)."""
    from matgnn.config import RunConfig
    from matgnn.training.ensemble import combine_runs, train_ensemble

    out = _out_dir(out_dir, out)
    try:
        if combine:
            if out is None:
                raise ValueError("--combine needs --out-dir, the ensemble folder to write")
            folder = combine_runs(combine, out)
            cfg = RunConfig.from_yaml(folder / "config.yaml")
        else:
            cfg = _run_config(config, set_)
            folder = train_ensemble(cfg, members, bootstrap, console=console)
    except (ValueError, FileNotFoundError) as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    import json as _json

    m = _json.loads((folder / "metrics.json").read_text())
    for h in cfg.targets:
        k = f"test.{h.name}"
        if f"{k}.mae" in m:
            console.print(f"{h.name}: ensemble test MAE {m[f'{k}.mae']:.4g} (members {m[f'members.{k}.mae.mean']:.4g} ± "
                          f"{m[f'members.{k}.mae.std']:.4g}, best {m[f'{k}.best_member_mae']:.4g}); σ: miscalibration area "
                          f"{m.get(f'{k}.recalibrated.miscalibration_area', float('nan')):.3f} after recalibration, "
                          f"Spearman(σ, |error|) {m[f'{k}.spearman_sigma_abs_error']:.2f}")
    console.print(f"ensemble → {folder}")


@app.command("sweep")
def sweep_cmd(
    config: Optional[Path] = typer.Argument(None, help="base run config (YAML); default: the embedded EMT demo"),
    set_: list[str] = typer.Option([], "--set", help="override a config key of every point"),
    grid: list[str] = typer.Option([], "--grid", help="KEY=v1,v2,... (repeat: the cartesian product), "
                                                      "e.g. graphs.cutoff=3,4,6,8"),
    space: list[str] = typer.Option([], "--space", help="Optuna search space: KEY=loguniform:LO:HI | uniform:LO:HI | "
                                                        "int:LO:HI | choice:a,b,c"),
    trials: int = typer.Option(0, help="Optuna TPE trials over --space"),
    metric: Optional[str] = typer.Option(None, help="validation metric to rank by (default val.<first head>.mae)"),
    resume: Optional[Path] = typer.Option(None, help="the folder of an interrupted grid sweep: finished points are "
                                                     "kept, the others run"),
) -> None:
    """Grid or Optuna sweep over config keys; every point a run; one ranking table (CSV and Markdown)."""
    from matgnn.commands.sweep import parse_grid, parse_space, run_sweep

    cfg = _run_config(config, set_)
    try:
        folder = run_sweep(cfg, parse_grid(grid), parse_space(space), trials, metric, out=resume,
                           resume=resume is not None, console=console, progress=False)
    except (ValueError, FileNotFoundError) as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    print((folder / "ranking.md").read_text())
    console.print(f"ranking → {folder / 'ranking.csv'}, {folder / 'ranking.md'}")


@app.command("baseline")
def baseline_cmd(
    kind: str = typer.Argument(..., help="element_mean, linear, xgboost, chgnet (zero-shot magnetic moments) or "
                                         "chgnet_finetuned"),
    config: Optional[Path] = typer.Argument(None, help="run config (YAML): its source, graphs, targets and split"),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set split.kind=grouped"),
    max_train_rows: Optional[int] = typer.Option(None, help="fit on a seeded sample of this many training rows "
                                                            "(atoms or graphs; structures for chgnet_finetuned)"),
    finetune_epochs: int = typer.Option(3, help="chgnet_finetuned: epochs"),
    features: str = typer.Option("descriptors", help="linear, xgboost: fit on hand-built descriptors, or on a "
                                                     "pretrained backbone's frozen features: "
                                                     f"{', '.join(BACKBONES)} (pip install 'matgnn[foundation]')"),
) -> None:
    """Fit and score a baseline on a config's split; writes a run folder like `train`.
    linear and xgboost on a backbone's features (--features chgnet|sevennet) also save a model there, which
    `predict`, `evaluate`, `ensemble --combine` and `reference --fallback` use like any model."""
    from matgnn.baselines import BASELINES, run_baseline
    from matgnn.errors import StructureError

    if kind not in BASELINES:
        _say("error", f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
        raise typer.Exit(EXIT_USER_ERROR)
    cfg = _run_config(config, set_)
    try:
        run_dir = run_baseline(cfg, kind, console=console, max_train_rows=max_train_rows,
                               finetune_epochs=finetune_epochs, features=features)
        if (run_dir / "model").is_dir():
            console.print(f"model → {run_dir / 'model'} (matgnn predict {run_dir} STRUCTURES)")
    except (StructureError, ValueError, FileNotFoundError, ImportError) as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="a run folder"),
    split: str = typer.Option("test", help="val or test"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Re-evaluate a saved run on its own split (metrics, predictions, per-element table, parity plot)."""
    from matgnn.config import RunConfig, batch_targets
    from matgnn.data.sources import make_source
    from matgnn.evaluation.scoring import evaluate_split
    from matgnn.graphs.batching import make_loader
    from matgnn.graphs.cache import build_graph_cache
    from matgnn.graphs.packed import PackedGraphs
    from matgnn.models.base import batch_fields_of
    from matgnn.models.loading import load_model
    from matgnn.training.splits import ids_split

    if split not in ("val", "test"):
        _say("error", f"--split must be val or test, not {split!r}")
        raise typer.Exit(EXIT_USER_ERROR)
    from matgnn.runtime import resolve_device

    where = resolve_device(device)
    cfg = RunConfig.from_yaml(run / "config.yaml")
    saved = json.loads((run / "split.json").read_text())
    model = load_model(run).to(where)
    if not saved.get(split):
        _say("error", f"the {split} split of {run / 'split.json'} is empty: nothing to evaluate")
        raise typer.Exit(EXIT_USER_ERROR)
    cache = build_graph_cache(make_source(cfg.source), cfg.graphs, workers=cfg.workers, cache_root=cfg.cache_dir)
    cache.check_unique_ids()
    positions, missing = ids_split(cache.ids, {split: saved[split]})
    if missing[split]:
        _say("error", f"{missing[split]} {split} ids of {run / 'split.json'} are not in the graph "
                      "cache (did the source change?)")
        raise typer.Exit(EXIT_USER_ERROR)
    graphs = PackedGraphs(cache, positions[split], *batch_targets(cfg.targets), extras=batch_fields_of(model))
    out = run / "evaluation"
    out.mkdir(exist_ok=True)
    metrics = evaluate_split(model, make_loader(graphs, cfg.train.batch_size), cfg.targets, out, split,
                             evaluation=cfg.evaluation)
    (out / f"metrics_{split}.json").write_text(json.dumps(metrics, indent=1))
    for k, v in metrics.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    console.print(f"written to {out}")


@app.command("predict")
def predict_cmd(
    model: str = typer.Argument(..., help="a run folder, a saved model folder, a shipped model's name "
                                          "(see `matgnn models`), or several joined by commas: an ensemble"),
    structures: list[str] = typer.Argument(..., help="structure files (CIF, POSCAR, extxyz, traj), ASE databases "
                                                     "(.db), .jsonl[.gz] structure files, folders or globs"),
    out: Path = typer.Option(Path("predictions.csv"), help="CSV or JSON (by suffix); per-atom heads of a CSV also "
                                                           "go to <stem>_atoms.csv"),
    batch_size: int = typer.Option(64, min=1, help="structures per batch"),
    where: list[str] = typer.Option([], "--where", help="keep structures passing KEY OP VALUE, e.g. "
                                                        "'optb88vdw_bandgap>=1' (repeat: all must hold)"),
    sort_by: Optional[str] = typer.Option(None, help="sort by a column, '-' first for descending, e.g. -band_gap_std"),
    top: Optional[int] = typer.Option(None, help="keep the first N (after sorting)"),
    atoms_extxyz: Optional[Path] = typer.Option(None, help="also write the structures as extxyz with the per-atom "
                                                           "predictions as arrays (graph heads in the info line)"),
    magmom_export: Optional[Path] = typer.Option(None, help="folder for DFT warm starts of the per-atom moment head: "
                                                            "<id>.MAGMOM (INCAR line), <id>.extxyz, <id>_gpaw.py"),
    magmom_head: Optional[str] = typer.Option(None, help="the moment head (default: the model's only per-atom head)"),
    limit: Optional[int] = typer.Option(None, help="read at most N structures from the inputs"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Predict every head of a saved or shipped model (or an ensemble, with σ) for new structures."""
    from matgnn.prediction.predict import predict_files

    models = [m for m in model.split(",") if m]
    try:
        path, report, filtered = predict_files(models, structures, out, batch_size, magmom_export, magmom_head,
                                               where=where, sort_by=sort_by, top=top, atoms_extxyz=atoms_extxyz,
                                               limit=limit, device=device)
    except (FileNotFoundError, ValueError) as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    report.print(console)
    if report.skipped:
        console.print(f"skipped structures listed in {path.with_name(path.stem + '_skipped.csv')}")
    if report.renamed:
        console.print(f"{report.renamed} structures had an id used before (same file name in another folder) "
                      "and were renamed <folder>-<id>")
    for head, n in report.at_bound.items():
        _say("warning", f"{n} structure(s) answered {head} at the bound of its training "
                      "range (a factor 2 beyond the labels it learned from: an extrapolation that was cut); they are "
                      "named in the answers_at_bound column")
    if where:
        console.print(f"{filtered} structures failed {' and '.join(where)}")
    rate = f" ({report.kept / report.seconds:.3g} structures/s)" if report.seconds > 0 else ""
    console.print(f"{report.kept - filtered if top is None else min(top, report.kept - filtered)} predictions → "
                  f"{path}{rate}")


@app.command("reference")
def reference_cmd(
    source: str = typer.Argument(..., help="the reference structures with labels: " + SOURCE_HELP),
    target: str = typer.Option(..., help="the reference's label to answer with (e.g. 'target' of an id_prop.csv)"),
    fallback: str = typer.Option(..., help="the model for structures without a match: a run folder, model folder "
                                           "or shipped name"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="the model folder to write (must not hold a "
                                                                    "model; required)"),
    out: Optional[Path] = typer.Option(None, "--out", hidden=True, help=OLD_OUT_HELP),
    fallback_head: Optional[str] = typer.Option(None, help="the fallback's head for TARGET (default: the same name)"),
    ltol: float = typer.Option(0.3, help="StructureMatcher fractional lattice tolerance"),
    stol: Optional[float] = typer.Option(None, help="StructureMatcher site tolerance (× (V/n)^(1/3)); default 0.3, "
                                                    "0.5 with --whole-cells"),
    angle_tol: float = typer.Option(10.0, help="StructureMatcher angle tolerance (degrees)"),
    slab_vacuum: float = typer.Option(4.0, min=0.0, help="Å of vacuum each slab (monolayer) gets above its layer "
                                                         "before matching, so the vacuum of a file does not decide"),
    whole_cells: bool = typer.Option(False, help="match cells as stored (slab vacuum included; the rule of older "
                                                 "reference folders: a 1T and a 1H monolayer then match)"),
    skip_hubbard_u: bool = typer.Option(False, help="leave out the oxides and fluorides of Co, Cr, Fe, Mn, Mo, Ni, V "
                                                    "and W (GGA+U under Materials Project's settings, e.g. in "
                                                    "2DMatPedia): when the reference has +U and your target not"),
    store_dir: Optional[str] = typer.Option(None, help="JARVIS: folder holding the dataset zip"),
    limit: Optional[int] = typer.Option(None, help="read at most this many entries"),
) -> None:
    """A model answering from a reference set: a structure matching a reference structure (same reduced
    formula, pymatgen StructureMatcher) gets its label, any other the fallback's prediction. Use it with
    `predict`, or as the base of delta learning (delta.base_model) to learn the difference to the reference."""
    from matgnn.commands.reference import build_reference
    from matgnn.data.twins import TOLERANCES, WHOLE_CELL_TOLERANCES

    out = _out_dir(out_dir, out, required=True)
    src = _source(source, store_dir, limit)
    rule = WHOLE_CELL_TOLERANCES if whole_cells else TOLERANCES
    try:
        folder, info = build_reference(src, target, fallback, out, fallback_head,
                                       {"ltol": ltol, "stol": stol if stol is not None else rule["stol"],
                                        "angle_tol": angle_tol}, skip_hubbard_u,
                                       None if whole_cells else slab_vacuum)
    except (FileNotFoundError, ValueError) as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    left_out = info["left_out"]
    if left_out:
        console.print(f"{len(left_out)} structures left out (listed in {folder / 'reference_left_out.csv'}), e.g. "
                      f"{left_out[0][0]}: {left_out[0][1]}", highlight=False, soft_wrap=True)
    console.print(f"reference of {info['entries']} structures ('{target}'), fallback {info['fallback']} → {folder}",
                  highlight=False, soft_wrap=True)


@app.command("matbench")
def matbench_cmd(
    task: str = typer.Argument(..., help="a Matbench v0.1 structure regression task, e.g. matbench_jdft2d"),
    config: Path = typer.Argument(..., help="run config (YAML): model, graphs, train, split.val/seed; its source "
                                            "and split are replaced by the task's data and folds"),
    data: Optional[Path] = typer.Option(None, help="the task's data file matbench_<task>.json.gz (default "
                                                   "$MATMINER_DATA/<task>.json.gz)"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="output folder (default matbench-<task>)"),
    out: Optional[Path] = typer.Option(None, "--out", hidden=True, help=OLD_OUT_HELP),
    set_: list[str] = typer.Option([], "--set", help="override a config key: --set train.epochs=50"),
    folds: Optional[str] = typer.Option(None, help="run only these folds, e.g. 0,1 (default all five); folds "
                                                   "finished before in --out with the same config and data are "
                                                   "kept and skipped"),
    authors: str = typer.Option("", help="info.json: the submission's authors, e.g. 'A. Author, B. Author'"),
    bibtex_refs: str = typer.Option("", help="info.json: BibTeX of the method (the text, or a .bib file)"),
    notes: str = typer.Option("", help="info.json: notes (default: the folds and the reproduction script)"),
) -> None:
    """Run TASK on its five official folds (one run folder each) and write results.json.gz (Matbench's own
    format, written by the matbench package) and info.json once all five are done. Split the work with
    --folds; an interrupted run keeps the folds it finished."""
    from matgnn.commands.matbench import run_matbench

    out = _out_dir(out_dir, out)
    cfg = _run_config(config, list(set_))
    refs = Path(bibtex_refs) if bibtex_refs and "\n" not in bibtex_refs and len(bibtex_refs) < 4096 else None
    if refs is not None and refs.suffix.lower() == ".bib":
        if not refs.is_file():
            raise typer.BadParameter(f"{refs}: no such file", param_hint="--bibtex-refs")
        bibtex_refs = refs.read_text(encoding="utf-8")
    run_matbench(task, cfg, data, out or Path(f"matbench-{task}"), console=console, folds=folds,
                 about={"authors": authors, "bibtex_refs": bibtex_refs, "notes": notes})


@leaderboard_app.command("export")
def leaderboard_export_cmd(
    run: Path = typer.Argument(..., help="a run folder trained on a leaderboard split (split: {kind: ids})"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="folder receiving <name>/ (the contribution; "
                                                                    "default ./leaderboard)"),
    out: Optional[Path] = typer.Option(None, "--out", hidden=True, help=OLD_OUT_HELP),
    name: Optional[str] = typer.Option(None, help="model name (default matgnn_<model>)"),
    team: Optional[str] = typer.Option(None, help="team name (default the model name)"),
    email: str = typer.Option("", help="author e-mail for metadata.json (required)"),
    project_url: str = typer.Option("", help="metadata.json project_url: the paper or code of the contribution "
                                             "(required)"),
    git_url: Optional[str] = typer.Option(None, help="where run.sh installs matgnn's source from (default "
                                                     "--project-url)"),
    partial: bool = typer.Option(False, help="write the file even if some test ids have no prediction"),
) -> None:
    """Write the JARVIS-Leaderboard contribution of RUN (or add a property to it): the test predictions as
    AI-SinglePropertyPrediction-<property>-<dataset>-test-mae.csv.zip, metadata.json, configs/, run.sh."""
    from matgnn.commands.leaderboard import export

    out = _out_dir(out_dir, out) or Path("leaderboard")
    folder, info = export(run, out, name, team, email, project_url, partial=partial, git_url=git_url)
    console.print(f"{info['n_predicted']} of {info['n_test']} test ids predicted; MAE against the benchmark file "
                  f"{info['mae']:.4g} (the run's own test MAE {info['run_test_mae']:.4g})")
    console.print(f"contribution → {folder} ({Path(info['file']).name}, metadata.json, configs/, run.sh)")


@leaderboard_app.command("define")
def leaderboard_define_cmd(
    source: str = typer.Argument(..., help="a source spec, e.g. jarvis:dft_2d"),
    target: str = typer.Argument(..., help="the graph-level target, e.g. optb88vdw_bandgap"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="folder receiving the benchmark files (default "
                                                                    "./leaderboard_benchmarks)"),
    out: Optional[Path] = typer.Option(None, "--out", hidden=True, help=OLD_OUT_HELP),
    folds: int = typer.Option(5, min=2), seed: int = typer.Option(42), val: float = typer.Option(0.1),
    store_dir: Optional[str] = typer.Option(None, help="JARVIS: folder holding the dataset zip"),
) -> None:
    """Benchmark files in the leaderboard's layout for SOURCE's TARGET, one per fold (fold k the test set,
    VAL of all entries from the others validation): <dataset>_<target>_fold<k>.json.zip."""
    import math

    from matgnn.commands.leaderboard import define

    out = _out_dir(out_dir, out) or Path("leaderboard_benchmarks")
    src = _source(source, store_dir, None)
    rows = [(s.id, float(s.graph_targets[target])) for s in src
            if target in s.graph_targets and not math.isnan(float(s.graph_targets[target]))]
    if not rows:
        _say("error", f"{source} has no structure labelled with {target!r}")
        raise typer.Exit(EXIT_USER_ERROR)
    dataset = source.split(":", 1)[-1] if ":" in source else Path(source).stem
    files = define([i for i, _ in rows], [v for _, v in rows], folds, seed, val, dataset, target, out)
    console.print(f"{len(rows)} labelled structures → {len(files)} benchmark files in {out} "
                  f"({files[0].name} … {files[-1].name})")


@app.command("models")
def models_cmd(name: Optional[str] = typer.Argument(None, help="print this model's card")) -> None:
    """List the models that can be named (shipped with matgnn, then the folders of $MATGNN_MODELS) with
    their card's one-line summary, or print one's model card."""
    from matgnn import artifacts

    if name:
        try:
            folder = artifacts.resolve(name).path
        except ValueError as e:
            _say("error", f"{e}")
            raise typer.Exit(EXIT_USER_ERROR) from None
        card = folder / "MODEL_CARD.md"
        if not card.is_file():
            _say("error", f"{folder} has no MODEL_CARD.md")
            raise typer.Exit(EXIT_USER_ERROR)
        print(plain(card.read_text()))
        return
    from matgnn.packages import EXTRAS, package_installed

    shadowed: list = []
    for n, (folder, origin) in artifacts.named_models(shadowed).items():
        needs = artifacts.required_packages(folder)
        extras = ", ".join(f"{p} ({'installed' if package_installed(p) else 'missing: pip install ' + repr(f'matgnn[{EXTRAS[p]}]')})"
                           for p in needs) or "-"
        print(plain(f"{n}\t{origin}\tneeds: {extras}\t{artifacts.card_summary(folder)}"))
    for n, folder in shadowed:
        _say("warning", f"{folder} is not used: the name {n!r} is taken by an earlier model (shipped names come "
                        f"first, then ${artifacts.MODELS_PATH_VARIABLE} in order)")
    for problem in artifacts.search_path_problems():
        _say("warning", problem)


@bench_app.command("deploy")
def bench_deploy_cmd(
    model: Path = typer.Argument(..., help="a run folder or a saved model folder"),
    atoms: int = typer.Option(64, help="atoms in the example cell"),
    batch: int = typer.Option(64, help="structures per batch for the batched latency"),
    repeats: int = typer.Option(20, help="timed repetitions"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Parameters, load time, graph-building time and per-structure latency (single, batched)."""
    from matgnn.prediction.deploy import deploy_cost

    try:
        res = deploy_cost(model, atoms, batch, repeats)
    except (FileNotFoundError, ValueError) as e:
        _say("error", f"{e}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    if as_json:
        print(json.dumps(res, indent=1))
        return
    from rich.table import Table

    table = Table(title=f"deployment cost: {res['class']} ({res['parameters']:,} parameters), {atoms}-atom cell")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("load time", f"{res['load_s'] * 1e3:.1f} ms")
    table.add_row("graph build (neighbour list)", f"{res['graph_build_ms']:.2f} ms")
    for key, value in res.items():
        if key.endswith("_ms") or key.endswith("_per_structure"):
            if key != "graph_build_ms":
                table.add_row(key.replace("_", " ").replace(".", ": "), f"{value:.2f} ms")
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    """The ``matgnn`` executable: every command, with one way of reporting failures.

    A user error (bad input, config, model folder, path, a full or read-only disk) is one line
    naming the file or setting, exit status 2; Ctrl-C / SIGTERM exits with 130 after saying
    what was kept; an internal bug keeps Python's traceback (status 1)."""
    import sys

    from pydantic import ValidationError

    # click's exception classes through typer's public names (typer >= 0.2x carries its own click, under a
    # private module): BadParameter is a ClickException, Abort is click's
    ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    Abort = typer.Abort

    import warnings

    from matgnn.errors import Interrupted, MatgnnError
    from matgnn.runtime import busy_machine_threading, keep_freed_memory

    # the packages matgnn uses warn about their own internals (torch.jit.script, ...): not the user's concern
    # (-v shows them)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    busy_machine_threading()
    keep_freed_memory()
    cmd = typer.main.get_command(app)
    try:
        rc = cmd.main(args=argv, prog_name="matgnn", standalone_mode=False)
    except ClickException as e:  # usage errors: click's own message
        e.show()
        sys.exit(e.exit_code)
    except (Abort, KeyboardInterrupt):
        console.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Interrupted as e:
        _say("interrupted", f"{e}")
        sys.exit(EXIT_INTERRUPTED)
    except ValidationError as e:
        _say("invalid config", validation_message(e))
        sys.exit(EXIT_USER_ERROR)
    except MatgnnError as e:
        _say("error", f"{e}")
        sys.exit(EXIT_USER_ERROR)
    except OSError as e:  # permission denied, read-only file system, no space left, missing file
        where = " → ".join(str(f) for f in (e.filename, e.filename2) if f) or "?"
        _say("error", f"{where}: {e.strerror or e}")
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:
        if type(e).__module__.split(".")[0] == "lmdb":  # the graph cache's storage (full disk, read-only)
            _say("error", f"graph cache: {e}")
            sys.exit(EXIT_USER_ERROR)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
