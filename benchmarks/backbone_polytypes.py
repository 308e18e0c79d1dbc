"""Do the frozen backbones tell a monolayer's polytypes apart? (issue: pretrained backbones on 2D data)

JARVIS dft_2d holds 103 pairs of monolayers with the same reduced formula that are not structural twins
(:mod:`matgnn.data.twins`): polytypes such as MoS2's 1H (JVASP-664, OptB88vdW gap 1.66 eV) and 1T (JVASP-730,
0 eV). For each backbone (CHGNet 0.3.0, SevenNet-0) this measures, on the pooled frozen features a structure
gets in matgnn (mean, max and min over its atoms; each column standardised over dft_2d):

- ``<backbone>.polytype_distance_median``: the median distance between the two monolayers of a polytype pair,
  ``.nearest_neighbour_distance_median`` the median distance of a monolayer to its nearest other one and
  ``.random_pair_distance_median`` between two random monolayers — the scale of the space;
- ``<backbone>.polytype_pairs_closer_than_nearest_neighbour``: the fraction of pairs whose two monolayers are
  closer to each other than a typical monolayer is to its nearest neighbour (``_gap_differing``: of the pairs
  whose gaps differ by more than 0.5 eV);
- ``<member>.polytype_gap_difference_reproduced``: for the gap-differing pairs, the median over pairs of
  |Δ answer| / |Δ label| of each member of the shipped ``bandgap-2d-ensemble`` (1: the model separates them as
  much as the labels do; both monolayers of most pairs are in its training data, so this is what the model can
  represent, not a held-out error); ``mos2.<member>.*``: its answers for 1H and 1T MoS2.

Usage: python benchmarks/backbone_polytypes.py   (about a minute with the backbones' features cached)
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import write_result  # noqa: E402
from backbones_2d import JARVIS, pooled_features  # noqa: E402

from matgnn.config import RunConfig  # noqa: E402
from matgnn.data.sources import make_source  # noqa: E402
from matgnn.data.twins import twin_groups  # noqa: E402
from matgnn.models.reference import reduced_formula  # noqa: E402

TARGET = "optb88vdw_bandgap"
MOS2 = ("JVASP-664", "JVASP-730")  # 1H, 1T


def main() -> None:
    from matgnn.artifacts import ensemble_members, resolve
    from matgnn.models import load_model
    from matgnn.prediction.predict import graph_settings_of, predict_structures

    started = time.time()
    structures = [s for s in make_source(RunConfig.model_validate({"source": JARVIS}).source)
                  if np.isfinite(s.graph_targets.get(TARGET, np.nan))]
    ids = [s.id for s in structures]
    y = np.array([s.graph_targets[TARGET] for s in structures])
    formulas = [reduced_formula(s.numbers) for s in structures]
    groups = twin_groups(formulas, lambda k: (structures[k].numbers, structures[k].positions, structures[k].cell))
    by_formula: dict[str, list[int]] = defaultdict(list)
    for k, f in enumerate(formulas):
        by_formula[f].append(k)
    pairs = [(i, j) for ks in by_formula.values() for a, i in enumerate(ks) for j in ks[a + 1:] if groups[i] != groups[j]]
    differing = [(i, j) for i, j in pairs if abs(y[i] - y[j]) > 0.5]
    rng = np.random.default_rng(0)
    random_pairs = [(i, j) for i, j in rng.integers(0, len(structures), (5000, 2)) if i != j]
    metrics: dict[str, float] = {}
    for bb in ("chgnet", "sevennet"):
        pooled = pooled_features(structures, bb)
        x = np.stack([pooled[i] for i in ids])
        x = (x - x.mean(0)) / (x.std(0) + 1e-8)
        dist = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
        np.fill_diagonal(dist, np.inf)
        nn = float(np.median(dist.min(1)))
        d = np.array([dist[i, j] for i, j in pairs])
        dd = np.array([dist[i, j] for i, j in differing])
        metrics.update({
            f"{bb}.random_pair_distance_median": float(np.median([dist[i, j] for i, j in random_pairs])),
            f"{bb}.nearest_neighbour_distance_median": nn,
            f"{bb}.polytype_distance_median": float(np.median(d)),
            f"{bb}.polytype_pairs_closer_than_nearest_neighbour": float((d < nn).mean()),
            f"{bb}.polytype_pairs_closer_than_nearest_neighbour_gap_differing": float((dd < nn).mean()),
            f"{bb}.mos2_1h_1t_distance": float(dist[ids.index(MOS2[0]), ids.index(MOS2[1])])})
        print({k: round(v, 3) for k, v in metrics.items() if k.startswith(bb)}, flush=True)

    found = resolve("bandgap-2d-ensemble")
    members, _ = ensemble_members(found.path)
    for member in members:
        name = member.name.split("-", 1)[1]  # m0-sevennet -> sevennet
        model = load_model(member)
        answers = {row["id"]: row[TARGET] for row in
                   predict_structures(model, iter(structures), graph_settings_of(member))}
        got = np.array([answers[i] for i in ids])
        ratio = [abs(got[i] - got[j]) / abs(y[i] - y[j]) for i, j in differing]
        metrics[f"{name}_member.polytype_gap_difference_reproduced"] = float(np.median(ratio))
        for label, sid in zip(("1h", "1t"), MOS2):
            metrics[f"mos2_{label}.{name}_member"] = float(got[ids.index(sid)])
        print(name, metrics[f"{name}_member.polytype_gap_difference_reproduced"], flush=True)
    for label, sid in zip(("1h", "1t"), MOS2):
        metrics[f"mos2_{label}.label"] = float(y[ids.index(sid)])
    write_result(
        "backbone_polytypes", started,
        data={"source": "jarvis:dft_2d", "n_structures": len(structures), "polytype_pairs": len(pairs),
              "polytype_pairs_gap_differing": len(differing),
              "pairs": "same reduced formula, different twin group (matgnn.data.twins: StructureMatcher at the "
                       "reference's tolerances, slabs' vacuum normalised)",
              "features": "pooled frozen features per structure (mean, max, min over its atoms: 192 CHGNet 0.3.0, "
                          "384 SevenNet-0 columns), each column standardised over these monolayers; Euclidean distance",
              "models": "the members of the shipped bandgap-2d-ensemble (delta models on each backbone); most pairs "
                        "are in their training data"},
        metrics=metrics, anchors={}, targets={})


if __name__ == "__main__":
    main()
