"""Copy a finished run's model into the package as a shipped model, with its model card.

Usage: python tools/ship_model.py RUN NAME   (NAME one of the entries of CARDS below)

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

CARDS = {
    "magmom-mp": {
        "summary": "Per-atom magnetic moment |m| (μB) of bulk crystals, CGCNN 64 × 3 trained on 47k Materials Project structures.",
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
}


def _run_of(source: str) -> Path | None:
    """The run folder a ``transfer.from_model`` points at: a run folder, a run's model folder, or a
    shipped model's name (found through the output_dir/name of its training_config.yaml)."""
    p = Path(source)
    p = p if p.is_absolute() else ROOT / p
    if (p / "config.yaml").is_file():
        return p
    if (p.parent / "config.yaml").is_file():
        return p.parent
    shipped = DEST / source / "training_config.yaml"
    if shipped.is_file():
        cfg = yaml.safe_load(shipped.read_text())
        out = Path(cfg["output_dir"])
        runs = sorted((out if out.is_absolute() else ROOT / out).glob(f"{cfg['name']}-*"))
        return runs[-1] if runs else None
    return None


def lineage(run: Path) -> list[tuple[Path, dict, dict]]:
    """(run folder, config, metrics) of the run and of every run it was continued or fine-tuned
    from, oldest first."""
    stages = []
    while run is not None and (run / "metrics.json").is_file():
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        stages.append((run, cfg, json.loads((run / "metrics.json").read_text())))
        source = (cfg.get("transfer") or {}).get("from_model")
        run = _run_of(source) if source else None
    return stages[::-1]


def main() -> None:
    run, name = Path(sys.argv[1]), sys.argv[2]
    info = CARDS[name]
    stages = lineage(run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    split = json.loads((run / "split.json").read_text())
    report = json.loads((run / "load_report.json").read_text())
    dest = DEST / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(run / "model", dest)
    shutil.copy(run / "config.yaml", dest / "training_config.yaml")
    for k, (r, _, _) in enumerate(stages[:-1], 1):  # the configs of the earlier stages, to reproduce the chain
        shutil.copy(r / "config.yaml", dest / f"training_config_stage{k}.yaml")
    total_epochs = sum(m["epochs_run"] for _, _, m in stages)
    total_min = sum(m["train_seconds"] for _, _, m in stages) / 60
    trained = (f"Trained {metrics['epochs_run']} epochs (best epoch {metrics['best_epoch']}), "
               f"{metrics['train_seconds'] / 60:.0f} min on 2 CPU cores")
    if len(stages) > 1:
        def tests(c: dict, m: dict) -> str:
            return ", ".join("{} MAE {:.4g}".format(h["name"], m["test." + h["name"] + ".mae"]) for h in c["targets"])

        steps = "; ".join(f"stage {k}: {m['epochs_run']} epochs, lr {c['train']['lr']:g}, {m['train_seconds'] / 60:.0f} min, "
                          f"test {tests(c, m)}" for k, (_, c, m) in enumerate(stages, 1))
        trained = (f"Trained in {len(stages)} stages, each continuing the previous one's weights (all trainable) on the "
                   f"same split with a fresh one-cycle schedule — {steps}; {total_epochs} epochs, {total_min:.0f} min in all "
                   f"on 2 CPU cores. Configs: `training_config_stage1.yaml` … and `training_config.yaml` (the last)")
    heads = cfg["targets"]
    rows = []
    for h in heads:
        for part in ("val", "test"):
            keys = [k for k in metrics if k.startswith(f"{part}.{h['name']}.") and k.endswith((".mae", ".rmse", ".r2", ".count"))]
            for k in sorted(keys):
                rows.append(f"| {k} | {int(metrics[k]):,} |" if k.endswith(".count") else f"| {k} | {metrics[k]:.4g} |")
    card = f"""# {name}

{info['summary']}

## Intended use
{info['use']}

## Model
`{cfg['model']['name']}` ({metrics['n_parameters']:,} parameters), width {cfg['model']['hidden']}, {cfg['model']['layers']} layers;
graphs: cutoff {cfg['graphs']['cutoff']} Å, {cfg['graphs']['max_neighbors']} nearest neighbours; heads: {', '.join(f"{h['name']} ({h['level']}, {h['loss']}{', residual to the per-element mean' if h.get('baseline') == 'element_mean' else ''})" for h in heads)}.
{trained};
the full training config is `training_config.yaml` beside this card and the constructor arguments are in `model.json`.

## Data
{info['data']}
{report['kept']:,} structures used, {report['skipped']} skipped by the loader's checks ({', '.join(f'{k}: {v}' for k, v in report['skipped_by_reason'].items()) or 'none'}).

## Split
{cfg['split']['kind']} (seed {cfg['split']['seed']}{', by reduced formula' if cfg['split']['kind'] == 'grouped' else ''}): {len(split['train']):,} train / {len(split['val']):,} validation / {len(split['test']):,} test structures.

## Metrics (this model, held-out splits)
| metric | value |
|---|---|
{chr(10).join(rows)}

## Date
Trained {time.strftime("%Y-%m-%d", time.localtime((run / "metrics.json").stat().st_mtime))} with matgnn {json.loads((run / "model" / "model.json").read_text()).get("matgnn_version", "?")}.

## Licence
{info['licence']}

## Citation
{info['citation']}

## Limitations
{info['limits']}
"""
    (dest / "MODEL_CARD.md").write_text(card)
    print(f"shipped {name} → {dest} ({sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
