"""A reference set as a model: a structure that matches one of the reference's structures gets that
structure's label; any other gets a fallback model's prediction.

The use: a database that already holds a related label for many of the structures a user predicts —
2DMatPedia's PBE band gaps for JARVIS monolayers, say. As the frozen base of delta learning
(``delta: {base_model: <this model's folder>}``) the residual network then learns the difference between
the two levels of theory, and wherever the reference has no such structure, the difference from the
fallback model (e.g. a model trained on the reference's labels).

Matching: the rule of :mod:`matgnn.data.twins` — the same reduced composition, then pymatgen's
``StructureMatcher`` (lattice, site and angle tolerances; volumes scaled, primitive cells compared, so a
supercell, rotation or translation still matches) on structures whose slabs got the same vacuum (a
different vacuum thickness of a monolayer still matches, a 1T and a 1H polytype do not; folders saved
before that rule, without ``slab_vacuum``, keep comparing whole cells); of several matches the one with the
smallest RMS site displacement. Matches are memoised per reference and structure within a process, so training
epochs after the first (and further runs on the same reference) cost nothing extra.

The reference's structures and labels are constructor arguments (``model.json``, plain data) and the
fallback is a nested model spec, like :class:`~matgnn.models.delta.DeltaModel`'s; the folder loads
without the reference data beside it. Build one with ``matgnn reference`` (:func:`matgnn.commands.reference.build_reference`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

import numpy as np
import torch

from matgnn import keys
from matgnn.data.twins import (
    SLAB_VACUUM,
    TOLERANCES,
    WHOLE_CELL_TOLERANCES,
    closest_match,
    matching_structure,
    structure_matcher,
)
from matgnn.models.base import MatgnnModel
from matgnn.models.registry import build_from_spec, model_spec
from matgnn.models.saved import SavedModel

#: (reference, structure) digest -> the matching entry (-1: none), shared by the instances of one reference
#: in a process (every training run and every fold reloads its base model)
_MATCHES: dict[bytes, int] = {}
_MATCHES_MAX = 1_000_000


def reduced_formula(numbers: Iterable[int]) -> str:
    """The reduced formula (pymatgen's) of a structure's atomic numbers."""
    from pymatgen.core import Composition, Element

    z, counts = np.unique(np.asarray(list(numbers), dtype=int), return_counts=True)
    return Composition({Element.from_Z(int(a)): int(c) for a, c in zip(z, counts)}).reduced_formula


class ReferenceModel(SavedModel):
    """Graph heads answered from a reference set where a structure matches one of its entries, else by
    ``fallback`` (a model spec whose heads include each head's name, or the name ``fallback_heads`` gives).

    ``entries``: ``{"ids": [...], "numbers": [[Z, ...], ...], "positions": [[x, y, z, ...], ...]`` (Å,
    flattened), ``"cells": [[9 floats], ...], "labels": {head: [value, ...]}}``."""

    def __init__(self, heads: list[dict[str, Any]], entries: dict[str, Any], fallback: dict[str, Any],
                 fallback_heads: dict[str, str] | None = None, tolerances: dict[str, float] | None = None,
                 slab_vacuum: float | None = None) -> None:
        super().__init__()
        bad = [h.get("name") for h in heads if h.get("level", "graph") != "graph"]
        if bad:
            raise ValueError(f"a reference model answers graph-level heads only, not {bad}")
        self._heads = [{"name": h["name"], "level": "graph"} for h in heads]
        n = len(entries["ids"])
        for key in ("numbers", "positions", "cells"):
            if len(entries[key]) != n:
                raise ValueError(f"reference entries: {len(entries[key])} {key} for {n} ids")
        missing = [h["name"] for h in heads if len(entries["labels"].get(h["name"], ())) != n]
        if missing:
            raise ValueError(f"reference entries: no label of every entry for heads {missing}")
        self.entries = entries
        self.fallback = build_from_spec(fallback)
        self.fallback_heads = dict(fallback_heads or {})
        have = {s["name"] for s in self.fallback.head_specs if s["level"] == "graph"}
        lacking = [self.fallback_heads.get(h["name"], h["name"]) for h in heads
                   if self.fallback_heads.get(h["name"], h["name"]) not in have]
        if lacking:
            raise ValueError(f"the fallback model has no graph head {lacking} (its heads: {sorted(have)}); "
                             "name its head for each target in fallback_heads")
        for p in self.fallback.parameters():
            p.requires_grad_(False)
        # slab_vacuum None: the rule of folders saved before slabs were normalised (whole cells, looser sites)
        self.slab_vacuum = slab_vacuum
        self.tolerances = {**(WHOLE_CELL_TOLERANCES if slab_vacuum is None else TOLERANCES), **(tolerances or {})}
        self._made: dict[int, Any] = {}  # the entries as compared, made at their first comparison
        self._by_formula: dict[str, list[int]] | None = None  # built at the first match, with the two below
        self._key: bytes | None = None
        self._matcher: Any = None

    @classmethod
    def of(cls, heads: list[dict[str, Any]], entries: dict[str, Any], fallback: MatgnnModel,
           fallback_heads: dict[str, str] | None = None, tolerances: dict[str, float] | None = None,
           slab_vacuum: float | None = SLAB_VACUUM) -> ReferenceModel:
        """A reference model around a trained fallback (its weights copied)."""
        m = cls(heads, entries, model_spec(fallback), fallback_heads, tolerances, slab_vacuum)
        m.fallback.load_state_dict(fallback.state_dict())
        return m.eval()

    @property
    def head_specs(self) -> list[dict[str, Any]]:
        return self._heads

    # -- matching ---------------------------------------------------------------
    def _index(self) -> dict[str, list[int]]:
        """Entries by reduced formula; also the reference's digest (the memo's key) and the matcher, all made
        at the first match, not when the model is loaded."""
        if self._by_formula is None:
            by: dict[str, list[int]] = {}
            for k, numbers in enumerate(self.entries["numbers"]):
                by.setdefault(reduced_formula(numbers), []).append(k)
            self._key = hashlib.sha1(json.dumps([self.entries, self.tolerances, self.slab_vacuum],
                                                sort_keys=True).encode()).digest()
            self._matcher = structure_matcher(self.tolerances)
            self._by_formula = by
        return self._by_formula

    def _entry(self, k: int) -> Any:
        """Reference entry ``k`` as compared (made at its first comparison)."""
        if k not in self._made:
            self._made[k] = matching_structure(self.entries["numbers"][k], self.entries["positions"][k],
                                               self.entries["cells"][k], self.slab_vacuum)
        return self._made[k]

    def match(self, numbers: Any, positions: Any, cell: Any) -> int:
        """The index of the reference entry matching a structure (smallest RMS displacement of the
        matches), or -1."""
        numbers = np.asarray(numbers, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        index = self._index()
        key = self._key + hashlib.sha1(numbers.tobytes() + np.round(positions, 4).tobytes()
                                       + np.round(cell, 4).tobytes()).digest()
        if key in _MATCHES:
            return _MATCHES[key]
        best = -1
        candidates = index.get(reduced_formula(numbers), [])
        if candidates:
            found = closest_match(matching_structure(numbers, positions, cell, self.slab_vacuum),
                                  ((k, self._entry(k)) for k in candidates), self._matcher)
            best = -1 if found is None else found[0]
        if len(_MATCHES) >= _MATCHES_MAX:
            _MATCHES.clear()
        _MATCHES[key] = best
        return best

    def matches(self, batch: Any) -> list[int]:
        """The matching entry of each structure of a batch (-1: none)."""
        from matgnn.graphs.backbone_features import batch_structures

        return [self.match(z, pos, cell) for _, z, pos, cell, _ in batch_structures(batch)]

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        found = self.matches(batch)
        device = batch[keys.POS].device
        hit = torch.tensor([k >= 0 for k in found], dtype=torch.bool, device=device)
        fb = None
        if not bool(hit.all()):
            with torch.no_grad():
                fb = self.fallback(batch)
        out = {}
        for spec in self._heads:
            name = spec["name"]
            labels = self.entries["labels"][name]
            ref = torch.tensor([float(labels[k]) if k >= 0 else 0.0 for k in found], dtype=torch.float32,
                               device=device)
            if fb is not None:
                other = fb[self.fallback_heads.get(name, name)].detach()
                ref = torch.where(hit, ref.to(other.dtype), other)
            out[name] = ref
        return out

    def bounded_heads(self) -> list[str]:
        """Heads whose fallback answer can sit at a log transform's bound."""
        of_fallback = set(self.fallback.bounded_heads())
        return [h["name"] for h in self._heads if self.fallback_heads.get(h["name"], h["name"]) in of_fallback]

    def at_bound(self, batch: Any, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per graph, for each of :meth:`bounded_heads`: whether it had no match and the fallback's answer sat
        at its bound."""
        if not self.bounded_heads():
            return {}
        unmatched = torch.tensor([k < 0 for k in self.matches(batch)], dtype=torch.bool, device=batch[keys.POS].device)
        of_fallback = self.fallback.at_bound(batch)
        return {n: of_fallback[self.fallback_heads.get(n, n)] & unmatched for n in self.bounded_heads()}


#: Materials Project's GGA+U rule (pymatgen's MPRelaxSet): U on these metals in oxides and fluorides
HUBBARD_U_METALS = frozenset({27, 24, 26, 25, 42, 28, 23, 74})  # Co Cr Fe Mn Mo Ni V W
HUBBARD_U_ANIONS = frozenset({8, 9})  # O F


def hubbard_u_applies(numbers: Iterable[int]) -> bool:
    """Whether Materials Project (and databases computed with its settings, such as 2DMatPedia) uses GGA+U
    for a structure of these elements."""
    z = {int(a) for a in numbers}
    return bool(z & HUBBARD_U_METALS) and bool(z & HUBBARD_U_ANIONS)


def entries_of(structures: Iterable[Any], heads: list[str], skip_hubbard_u: bool = False
               ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A reference's entries from a source's structures with those graph labels. Left out, as
    ``(id, reason)``: the source's unreadable structures, those without a finite label of every head and
    (``skip_hubbard_u``) those Materials Project's settings compute with GGA+U."""
    from matgnn.errors import StructureError

    entries: dict[str, Any] = {"ids": [], "numbers": [], "positions": [], "cells": [], "labels": {h: [] for h in heads}}
    left_out: list[tuple[str, str]] = []
    for s in structures:
        if isinstance(s, StructureError):
            left_out.append((s.structure_id, f"{s.code}: {s.detail}"))
            continue
        if skip_hubbard_u and hubbard_u_applies(s.numbers):
            left_out.append((str(s.id), "GGA+U under Materials Project's settings (an oxide or fluoride of Co, Cr, "
                                        "Fe, Mn, Mo, Ni, V or W)"))
            continue
        values = [s.graph_targets.get(h) for h in heads]
        lacking = [h for h, v in zip(heads, values)
                   if v is None or np.ndim(v) != 0 or not np.isfinite(float(v))]
        if lacking:
            left_out.append((str(s.id), f"no finite label {', '.join(lacking)}"))
            continue
        entries["ids"].append(str(s.id))
        entries["numbers"].append([int(z) for z in s.numbers])
        entries["positions"].append([round(float(x), 5) for x in np.asarray(s.positions, float).ravel()])
        entries["cells"].append([round(float(x), 5) for x in np.asarray(s.cell, float).ravel()])
        for h, v in zip(heads, values):
            entries["labels"][h].append(float(v))
    return entries, left_out
