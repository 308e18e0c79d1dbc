"""Copy a finished run's model into the package as a shipped model, with its model card.

Usage: python tools/ship_model.py RUN NAME   (NAME one of the entries of CARDS below; RUN may be an
ensemble folder, shipped with its members)

The card is written from the run folder itself (config.yaml, metrics.json, split.json,
load_report.json), so every number on it is the run's own.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "src" / "matgnn" / "pretrained"
#: where run folders are searched for by hash (a stage's parent, a delta model's base)
RUN_ROOTS = [ROOT / "runs", ROOT / "benchmarks" / "runs"]

CARDS = {
    "magmom-mp": {
        "summary": "Per-atom magnetic moment |m| (μB) of bulk crystals, PNA 64 × 3 trained on 47k Materials Project structures.",
        "use": "Initial magnetic moments for spin-polarised DFT (`matgnn predict magmom-mp DIR --magmom-export OUT`), "
               "screening for magnetic sites. Predicts |m| (no sign): ferromagnetic starts; flip sublattices yourself "
               "for antiferromagnetic starts.",
        "data": "`mp_magmoms.jsonl.gz`: 47,628 Materials Project magnetic ground states (ferro-, ferri- and "
                "antiferromagnetic; 1–404 atoms; 80 elements), per-site moments from PBE(+U) calculations, as decoded "
                "by Sanspeur & Kitchin from their repository yurisanspeur/circumventing_data_imbalance_magmom_predictions.",
        "licence": "Data: Materials Project, CC BY 4.0. Model weights: same terms as matgnn.",
        "citation": "A. Jain et al., APL Materials 1, 011002 (2013) (Materials Project); R. Sanspeur and J. Kitchin (2023), "
                    "the data set of github.com/yurisanspeur/circumventing_data_imbalance_magmom_predictions.",
        "limits": "Labels are DFT moments of one magnetic ordering per structure; the same local environment can carry "
                  "different moments in different orderings (irreducible noise). Errors are largest for V, Cr, Mn "
                  "(see the metrics without them). Not trained on molecules, surfaces or 2D materials.",
    },
    "magmom-mp-ensemble": {
        "summary": "Per-atom magnetic moment |m| (μB) of bulk crystals with an uncertainty: the mean of two models "
                   "(CGCNN 64 × 3 and PNA 64 × 3) trained on 47k Materials Project structures, σ recalibrated.",
        "use": "As magmom-mp, with σ per atom (`matgnn predict magmom-mp-ensemble DIR`: columns magmom and magmom_std), "
               "e.g. to flag sites whose starting moment is uncertain (two spin states) before a spin-polarised run.",
        "data": "As magmom-mp: `mp_magmoms.jsonl.gz`, 47,628 Materials Project magnetic ground states, per-site moments "
                "from PBE(+U) calculations (Sanspeur & Kitchin's decoding).",
        "licence": "Data: Materials Project, CC BY 4.0. Model weights: same terms as matgnn.",
        "citation": "A. Jain et al., APL Materials 1, 011002 (2013) (Materials Project); R. Sanspeur and J. Kitchin (2023), "
                    "the data set of github.com/yurisanspeur/circumventing_data_imbalance_magmom_predictions.",
        "limits": "As magmom-mp. σ is calibrated on the validation split (per bin of the predicted value) of the same "
                  "distribution; two members agree on many of their errors, so σ is an estimate, not a guarantee.",
    },
    "bandgap-2d": {
        "summary": "OptB88vdW band gap (eV) of 2D monolayers, PNA 64 × 3 trained on JARVIS-DFT dft_2d.",
        "use": "Screening monolayers by band gap (`matgnn predict bandgap-2d DIR --where 'optb88vdw_bandgap>=1'`). "
               "Structures should be monolayers with vacuum along c, as in JARVIS (periodic in-plane only).",
        "data": "JARVIS-DFT `dft_2d` (the `d2-12-12-2022` file in the layout jarvis-tools caches it; 1,076 monolayers in "
                "the copy used here), target `optb88vdw_bandgap` (OptB88vdW functional, eV).",
        "licence": "Data: JARVIS-DFT, NIST, public domain (see jarvis.nist.gov). Model weights: same terms as matgnn.",
        "citation": "K. Choudhary et al., \"The joint automated repository for various integrated simulations (JARVIS) "
                    "for data-driven materials design\", npj Comput. Mater. 6, 173 (2020).",
        "limits": "~860 training monolayers: errors of ~0.5 eV are typical (see metrics); semi-local gaps "
                  "underestimate experiment. Bulk crystals are outside its training data.",
    },
    "bandgap-2d-chgnet": {
        "summary": "OptB88vdW band gap (eV) of 2D monolayers: CHGNet 0.3.0's frozen features with our MLP, pretrained "
                   "on 6,351 2DMatPedia PBE gaps, fine-tuned on JARVIS-DFT dft_2d.",
        "use": "Screening monolayers by band gap (`matgnn predict bandgap-2d-chgnet DIR --where 'optb88vdw_bandgap>=1'`); "
               "more accurate than bandgap-2d (see the metrics and benchmarks/results/backbones_2d.json). Needs the "
               "`chgnet` package (`pip install 'matgnn[foundation]'`): the backbone's weights come from its wheel.",
        "data": "Pretraining: 2DMatPedia (Zhou et al., Sci. Data 6, 86, 2019), 6,351 monolayers with PBE band gaps, in "
                "the CGCNN-style folder of the research on CGCNN for 2D materials; 702 of the 857 dft_2d reduced "
                "formulas also occur there (a PBE gap of the same composition, often another structure). Fine-tuning: "
                "JARVIS-DFT `dft_2d` (the `d2-12-12-2022` file; 1,076 monolayers), target `optb88vdw_bandgap`.",
        "licence": "Data: JARVIS-DFT (NIST, public domain) and 2DMatPedia (CC BY 4.0). Backbone: CHGNet 0.3.0 (modified "
                   "BSD licence), not redistributed here: loaded from the installed chgnet wheel. Our weights (the MLP "
                   "and head): same terms as matgnn.",
        "citation": "B. Deng et al., Nat. Mach. Intell. 5, 1031 (2023) (CHGNet); J. Zhou et al., Sci. Data 6, 86 (2019) "
                    "(2DMatPedia); K. Choudhary et al., npj Comput. Mater. 6, 173 (2020) (JARVIS).",
        "limits": "~860 training monolayers after pretraining on PBE gaps; semi-local gaps underestimate experiment. "
                  "CHGNet 0.3.0's frozen features barely tell a monolayer's polytypes apart (benchmarks/results/"
                  "backbone_polytypes.json): polytypes of one formula get similar gaps, e.g. 1H MoS2 is predicted far "
                  "below its 1.66 eV; bandgap-2d-sevennet and bandgap-2d-ensemble (σ) do better there. "
                  "Structures CHGNet refuses (an atom with no neighbour within 6 Å) get zero backbone features and a "
                  "warning naming them. Bulk crystals are outside its training data.",
    },
    "bandgap-2d-sevennet": {
        "summary": "OptB88vdW band gap (eV) of 2D monolayers: delta learning on SevenNet-0's frozen features — a "
                   "2DMatPedia PBE-gap model as the frozen base, our MLP trained on JARVIS-DFT dft_2d for the "
                   "OptB88vdW − PBE correction.",
        "use": "Screening monolayers by band gap (`matgnn predict bandgap-2d-sevennet DIR --where "
               "'optb88vdw_bandgap>=1'`); the most accurate shipped single 2D gap model (5-fold: "
               "`sevennet_delta_pbe` in benchmarks/results/backbones_2d.json; bandgap-2d-ensemble, its mean with a CHGNet "
               "model, is more accurate and gives σ). Needs the `sevenn` package "
               "(`pip install 'matgnn[foundation]'`): the backbone's weights come from its wheel, and a model "
               "trained on one sevenn version is refused under another (both versions named).",
        "data": "Base: 2DMatPedia (Zhou et al., Sci. Data 6, 86, 2019), 6,351 monolayers with PBE band gaps, in the "
                "CGCNN-style folder of the research on CGCNN for 2D materials (random 90/10 split for early stopping). "
                "Correction: JARVIS-DFT `dft_2d` (the `d2-12-12-2022` file; 1,076 monolayers), target "
                "`optb88vdw_bandgap`. 702 of the 857 dft_2d reduced formulas also occur in 2DMatPedia (a PBE gap of the "
                "same composition, often another structure), so the base has seen compositions of the test split.",
        "licence": "Data: JARVIS-DFT (NIST, public domain) and 2DMatPedia (CC BY 4.0). Backbone: SevenNet-0 (`sevenn`, "
                   "MIT licence; trained on MPtrj), not redistributed here: loaded from the installed sevenn wheel. "
                   "Our weights (both MLPs and heads): same terms as matgnn.",
        "citation": "Y. Park et al., J. Chem. Theory Comput. 20, 4857 (2024) (SevenNet); J. Zhou et al., Sci. Data 6, 86 "
                    "(2019) (2DMatPedia); K. Choudhary et al., npj Comput. Mater. 6, 173 (2020) (JARVIS).",
        "limits": "~860 training monolayers for the correction; semi-local gaps underestimate experiment. Structures "
                  "SevenNet refuses get zero backbone features and a warning naming them. Bulk crystals are outside "
                  "its training data.",
    },
    "bandgap-2d-ensemble": {
        "summary": "OptB88vdW band gap (eV) of 2D monolayers with an uncertainty: the mean of two delta models, one on "
                   "SevenNet-0's and one on CHGNet 0.3.0's frozen features (each a 2DMatPedia PBE-gap base and a "
                   "JARVIS-DFT dft_2d correction), σ recalibrated.",
        "use": "Screening monolayers by band gap with σ (`matgnn predict bandgap-2d-ensemble DIR --where "
               "'optb88vdw_bandgap>=1' --sort-by -optb88vdw_bandgap_std`); the most accurate shipped 2D gap model "
               "(test MAE below bandgap-2d-sevennet's on the same split; 5-fold: `ens_delta` against "
               "`sevennet_delta_pbe` in benchmarks/results/backbones_2d.json). Needs the `[foundation]` extra (`chgnet` "
               "and `sevenn`): both backbones' weights come from their wheels; a model trained on one backbone "
               "version is refused under another.",
        "data": "Bases: 2DMatPedia (Zhou et al., Sci. Data 6, 86, 2019), 6,351 monolayers with PBE band gaps, in the "
                "CGCNN-style folder of the research on CGCNN for 2D materials (random 90/10 split for early stopping). "
                "Corrections: JARVIS-DFT `dft_2d` (the `d2-12-12-2022` file; 1,076 monolayers), target "
                "`optb88vdw_bandgap`. 702 of the 857 dft_2d reduced formulas also occur in 2DMatPedia (a PBE gap of the "
                "same composition, often another structure), so the bases have seen compositions of the test split.",
        "licence": "Data: JARVIS-DFT (NIST, public domain) and 2DMatPedia (CC BY 4.0). Backbones: SevenNet-0 (`sevenn`, "
                   "MIT licence) and CHGNet 0.3.0 (`chgnet`, modified BSD licence), both trained on MPtrj, not "
                   "redistributed here: loaded from the installed wheels. Our weights (four MLPs and heads): same terms "
                   "as matgnn.",
        "citation": "Y. Park et al., J. Chem. Theory Comput. 20, 4857 (2024) (SevenNet); B. Deng et al., Nat. Mach. "
                    "Intell. 5, 1031 (2023) (CHGNet); J. Zhou et al., Sci. Data 6, 86 (2019) (2DMatPedia); "
                    "K. Choudhary et al., npj Comput. Mater. 6, 173 (2020) (JARVIS).",
        "limits": "~860 training monolayers for the corrections; semi-local gaps underestimate experiment. The "
                  "members disagree where one backbone's features do not tell structures apart: CHGNet 0.3.0's barely "
                  "separate the 1H and 1T polytypes of MoS2 (its member answers 0.58 and 0.44 eV for JARVIS's 1H "
                  "JVASP-664, labelled 1.66, and 1T JVASP-730, labelled 0, both in its training split; SevenNet's 1.70 "
                  "and 0.85), so the mean for 1H MoS2 is ~1.1 eV with σ ~0.8: a large σ marks such cases. σ is "
                  "calibrated on 108 validation monolayers (per bin of the predicted gap): an estimate from two "
                  "members that share their training data, not a guarantee. Structures a backbone refuses get zero "
                  "features from it and a warning naming them. Bulk crystals are outside its training data. Runs "
                  "both backbones on every new structure (features cached per structure).",
    },
    "magmom-mp-chgnet": {
        "summary": "Per-atom magnetic moment |m| (μB) of bulk crystals: CHGNet 0.3.0's frozen per-atom features with "
                   "our MLP and node head, which learns the residual to CHGNet's own zero-shot moment of each atom "
                   "(baseline: backbone), trained on 38k Materials Project structures — the split of magmom-mp.",
        "use": "Initial magnetic moments for spin-polarised DFT (`matgnn predict magmom-mp-chgnet DIR --magmom-export "
               "OUT`), as magmom-mp, more accurately on the shared test split (benchmarks/results/magmom_backbone.json, "
               "which also compares both by element family and on a held-out family). Atoms of an element absent "
               "from its training data get CHGNet's zero-shot moment unchanged, so on structures unlike the training "
               "set it falls back to the pretrained model instead of extrapolating (measured with the lanthanides held "
               "out). Needs the `chgnet` package (`pip install 'matgnn[foundation]'`): the backbone's weights come from "
               "its wheel. Predicts |m| (no sign).",
        "data": "`mp_magmoms.jsonl.gz`: 47,628 Materials Project magnetic ground states (ferro-, ferri- and "
                "antiferromagnetic; 1–404 atoms; 80 elements), per-site moments from PBE(+U) calculations, as decoded "
                "by Sanspeur & Kitchin. CHGNet itself was trained on MPtrj, which contains Materials Project "
                "structures, these test structures among them: the test metrics below are not a clean held-out result.",
        "licence": "Data: Materials Project, CC BY 4.0. Backbone: CHGNet 0.3.0 (modified BSD licence), not "
                   "redistributed here: loaded from the installed chgnet wheel. Our weights (the MLP and head): same "
                   "terms as matgnn.",
        "citation": "B. Deng et al., Nat. Mach. Intell. 5, 1031 (2023) (CHGNet); A. Jain et al., APL Materials 1, 011002 "
                    "(2013) (Materials Project); R. Sanspeur and J. Kitchin (2023), the data set of "
                    "github.com/yurisanspeur/circumventing_data_imbalance_magmom_predictions.",
        "limits": "As magmom-mp: one magnetic ordering per structure, so the same environment can carry different "
                  "moments (largest errors on V, Cr, Mn). Structures CHGNet refuses (an atom with no neighbour within "
                  "6 Å) get zero backbone features and a warning naming them. Slower than magmom-mp: CHGNet runs on "
                  "every new structure (features are cached per structure).",
    },
}


def where(m: dict) -> str:
    """The hardware a stage trained on (runs before metrics recorded it trained on our 2-core CPU machine)."""
    if "device" not in m:
        return "2 CPU cores"
    return m["device"].replace("cpu (", "CPU (").replace("cuda:0 (", "one GPU (")


def lineage(run: Path) -> list[tuple[Path, dict, dict]]:
    """(run folder, config, metrics) of the run and of every run it was fine-tuned from, oldest
    first (:func:`matgnn.artifacts.lineage`: parents found by hash)."""
    from matgnn.artifacts import lineage as run_lineage

    return run_lineage(run, RUN_ROOTS)


def _stages_text(stages: list[tuple[Path, dict, dict]]) -> str:
    def tests(c: dict, m: dict) -> str:  # test MAE; a stage without a test split (pretraining) gives validation's
        return ", ".join("{} {} MAE {:.4g}".format(h["name"], split, m[f"{split}.{h['name']}.mae"])
                         for h in c["targets"] for split in (["test"] if f"test.{h['name']}.mae" in m else ["val"]))

    return "; ".join(f"stage {k}: {m['epochs_run']} epochs, lr {c['train']['lr']:g}, {m['train_seconds'] / 60:.0f} min on "
                     f"{where(m)}, {tests(c, m)}" for k, (_, c, m) in enumerate(stages, 1))


def _source_text(cfg: dict) -> str:
    """A stage's data in a few words: the source and its targets."""
    src = cfg["source"]
    what = src.get("dataset") or Path(str(src.get("path", src.get("kind")))).name
    return f"{src['kind']} {what} ({', '.join(h['name'] for h in cfg['targets'])})"


def _copy_training_configs(run: Path, stages: list[tuple[Path, dict, dict]], dest: Path) -> None:
    """The run's config and those of its earlier stages, to reproduce the chain."""
    shutil.copy(run / "config.yaml", dest / "training_config.yaml")
    for k, (r, _, _) in enumerate(stages[:-1], 1):
        shutil.copy(r / "config.yaml", dest / f"training_config_stage{k}.yaml")


def _metric_row(key: str, value: float) -> str:
    return f"| {key} | {int(value):,} |" if key.endswith(".count") else f"| {key} | {value:.4g} |"


def _write_card(dest: Path, name: str, model: str, metrics_title: str, rows: list[str], cfg: dict,
                split: dict, report: dict, date: str) -> None:
    """MODEL_CARD.md: the card's fixed sections around the model description and metric rows."""
    info = CARDS[name]
    card = f"""# {name}

{info['summary']}

## Intended use
{info['use']}

## Model
{model}

## Data
{info['data']}
{report['kept']:,} structures used, {report['skipped']} skipped by the loader's checks ({', '.join(f'{k}: {v}' for k, v in report['skipped_by_reason'].items()) or 'none'}).

## Split
{cfg['split']['kind']} (seed {cfg['split']['seed']}{', by reduced formula' if cfg['split']['kind'] == 'grouped' else ''}): {len(split['train']):,} train / {len(split['val']):,} validation / {len(split['test']):,} test structures.

## Metrics ({metrics_title})
| metric | value |
|---|---|
{chr(10).join(rows)}

## Date
{date}

## Licence
{info['licence']}

## Citation
{info['citation']}

## Limitations
{info['limits']}
"""
    (dest / "MODEL_CARD.md").write_text(card)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"shipped {name} → {dest} ({size / 1e6:.2f} MB)")


def _delta_base_text(run: Path, cfg: dict, dest: Path) -> str:
    """For a delta run: its frozen base's training in words (its config copied to ``dest`` as
    ``training_config_base.yaml``); else nothing."""
    from matgnn.artifacts import parent_of, parent_run

    parent = parent_of(run)
    if parent is None or parent.relation != "delta":
        return ""
    base = parent_run(run, RUN_ROOTS)
    if base is None:
        raise SystemExit(f"{run}: its delta base {parent.spec} was not found as a run folder (by hash)")
    bc = yaml.safe_load((base / "config.yaml").read_text())
    shutil.copy(base / "config.yaml", dest / "training_config_base.yaml")
    base_heads = list((cfg["delta"].get("base_heads") or {}).values())
    via = f" (the base head {', '.join(map(repr, base_heads))})" if base_heads else ""
    return (f"Delta learning: prediction = frozen base + this model's correction{via}; both sets of weights are in "
            f"its `state.pt`. The base: `{bc['model']['name']}`, width {bc['model']['hidden']}, {bc['model']['layers']} "
            f"layers, trained on {_source_text(bc)} — {_stages_text(lineage(base))}; its config is "
            "`training_config_base.yaml`.")


def ship_ensemble(folder: Path, name: str) -> None:
    """An ensemble folder (``matgnn ensemble``, ``--combine``) into the package: each member's model
    and training configs under ``members/``, ``ensemble.json`` with the σ recalibration, the card."""
    from matgnn.artifacts import ENSEMBLE_FILE, ensemble_members

    members, _ = ensemble_members(folder)
    source = json.loads((folder / ENSEMBLE_FILE).read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    dest = DEST / name
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "members").mkdir(parents=True)
    names, lines = [], []
    for k, run in enumerate(members):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        sub = f"m{k}-{cfg['model']['name']}"
        names.append(f"members/{sub}")
        shutil.copytree(run / "model", dest / "members" / sub)
        stages = lineage(run)
        _copy_training_configs(run, stages, dest / "members" / sub)
        m = stages[-1][2]
        lines.append(f"- `{sub}`: `{cfg['model']['name']}` ({m['n_parameters']:,} parameters), width {cfg['model']['hidden']}, "
                     f"{cfg['model']['layers']} layers; {_stages_text(stages)}"
                     + (" — " + base if (base := _delta_base_text(run, cfg, dest / "members" / sub)) else ""))
    (dest / ENSEMBLE_FILE).write_text(json.dumps({**source, "members": names}, indent=1))
    cfg = yaml.safe_load((members[0] / "config.yaml").read_text())
    keys = [k for k in metrics if k.startswith(("val.", "test.")) and isinstance(metrics[k], (int, float))
            and k.endswith((".mae", ".rmse", ".r2", ".count", ".best_member_mae", ".miscalibration_area",
                            ".spearman_sigma_abs_error"))]
    model = (f"The mean of {len(members)} models trained on the same split (graphs: cutoff {cfg['graphs']['cutoff']} Å, "
             f"{cfg['graphs']['max_neighbors']} nearest neighbours); σ = their spread, recalibrated on the validation split "
             "(a scale and a floor per bin of the predicted value, in `ensemble.json`). Members, each with its training "
             "stages (the configs are beside each member's `model.json`):\n" + "\n".join(lines))
    _write_card(dest, name, model, "the ensemble mean, held-out splits; miscalibration area of σ raw and recalibrated",
                [_metric_row(k, metrics[k]) for k in keys], cfg, json.loads((members[0] / "split.json").read_text()),
                json.loads((members[0] / "load_report.json").read_text()),
                f"Combined {time.strftime('%Y-%m-%d', time.localtime((folder / 'metrics.json').stat().st_mtime))}.")


def main() -> None:
    run, name = Path(sys.argv[1]), sys.argv[2]
    if (run / "ensemble.json").is_file():
        return ship_ensemble(run, name)
    stages = lineage(run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    dest = DEST / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(run / "model", dest)
    _copy_training_configs(run, stages, dest)
    total_epochs = sum(m["epochs_run"] for _, _, m in stages)
    total_min = sum(m["train_seconds"] for _, _, m in stages) / 60
    trained = (f"Trained {metrics['epochs_run']} epochs (best epoch {metrics['best_epoch']}), "
               f"{metrics['train_seconds'] / 60:.0f} min on {where(metrics)}")
    if len(stages) > 1:
        steps = _stages_text(stages)
        sources = {_source_text(c) for _, c, _ in stages}
        where_ = "on the same data and split" if len(sources) == 1 else "on " + "; then ".join(
            _source_text(c) for _, c, _ in stages)
        trained = (f"Trained in {len(stages)} stages, each starting from the previous one's weights (transfer; every "
                   f"parent found by the SHA-256 its child recorded) {where_} — {steps}; {total_epochs} epochs, "
                   f"{total_min:.0f} min in all. Configs: `training_config_stage1.yaml` … and `training_config.yaml` "
                   "(the last)")
    base_text = _delta_base_text(run, cfg, dest)  # the frozen base inside a delta model: its own training
    base_text = "\n" + base_text if base_text else ""
    heads = cfg["targets"]
    rows = []
    for h in heads:
        for part in ("val", "test"):
            keys = [k for k in metrics if k.startswith(f"{part}.{h['name']}.") and k.endswith((".mae", ".rmse", ".r2", ".count"))]
            rows += [_metric_row(k, metrics[k]) for k in sorted(keys)]
    heads_text = ', '.join(f"{h['name']} ({h['level']}, {h['loss']}{', residual to the per-element mean' if h.get('baseline') == 'element_mean' else ''})" for h in heads)
    model = (f"`{cfg['model']['name']}` ({metrics['n_parameters']:,} parameters), width {cfg['model']['hidden']}, "
             f"{cfg['model']['layers']} layers;\ngraphs: cutoff {cfg['graphs']['cutoff']} Å, {cfg['graphs']['max_neighbors']} "
             f"nearest neighbours; heads: {heads_text}.\n{trained};\nthe full training config is `training_config.yaml` "
             "beside this card and the constructor arguments are in `model.json`." + base_text)
    version = json.loads((run / "model" / "model.json").read_text()).get("matgnn_version", "?")
    _write_card(dest, name, model, "this model, held-out splits", rows, cfg, json.loads((run / "split.json").read_text()),
                json.loads((run / "load_report.json").read_text()),
                f"Trained {time.strftime('%Y-%m-%d', time.localtime((run / 'metrics.json').stat().st_mtime))} "
                f"with matgnn {version}.")


if __name__ == "__main__":
    main()
