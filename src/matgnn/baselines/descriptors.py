"""Hand-built per-atom descriptors from a cached graph (the seed research's feature set):
own-element one-hot, counts of each neighbour element, coordination number (neighbours in
the graph), mean / min / max neighbour distance. Sparse (CSR): ~2 × (elements) + 4 columns
with at most ~16 non-zeros a row."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from matgnn.graphs.dataset import edge_geometry
from matgnn.packages import BACKBONES

N_DENSE = 4  # coordination, mean, min, max distance


class DescriptorSpace:
    """Column layout for a set of elements: ``[one-hot(Z) | neighbour counts(Z) | dense]``;
    elements outside the set share an "other" column."""

    def __init__(self, elements: Iterable[int]) -> None:
        self.elements = sorted({int(z) for z in elements})
        self.col = np.full(200, len(self.elements), np.int64)
        self.col[self.elements] = np.arange(len(self.elements))
        self.n_el = len(self.elements) + 1

    @property
    def n_columns(self) -> int:
        return 2 * self.n_el + N_DENSE

    def names(self) -> list[str]:
        from ase.data import chemical_symbols

        els = [chemical_symbols[z] for z in self.elements] + ["other"]
        return ([f"is_{e}" for e in els] + [f"n_{e}" for e in els] +
                ["coordination", "d_mean", "d_min", "d_max"])

    def atoms(self, rec: dict[str, Any]) -> sp.csr_matrix:
        """Descriptor rows of one graph's atoms."""
        z = np.asarray(rec["z"], np.int64)
        n = len(z)
        src, dst = rec["src"].astype(np.int64), rec["dst"].astype(np.int64)
        _, dist = edge_geometry(rec)
        cz = self.col[z]
        counts = sp.coo_matrix((np.ones(len(src)), (dst, self.n_el + cz[src])), shape=(n, self.n_columns))
        onehot = sp.coo_matrix((np.ones(n), (np.arange(n), cz)), shape=(n, self.n_columns))
        deg = np.bincount(dst, minlength=n).astype(float)
        dense = np.zeros((n, N_DENSE))
        dense[:, 0] = deg
        if len(dist):
            dense[:, 1] = np.bincount(dst, weights=dist, minlength=n) / np.maximum(deg, 1)
            dmin = np.full(n, np.inf)
            dmax = np.zeros(n)
            np.minimum.at(dmin, dst, dist)
            np.maximum.at(dmax, dst, dist)
            dense[:, 2] = np.where(deg > 0, dmin, 0.0)
            dense[:, 3] = dmax
        rows, cols = np.nonzero(dense)
        dense_part = sp.coo_matrix((dense[rows, cols], (rows, 2 * self.n_el + cols)), shape=(n, self.n_columns))
        return (onehot + counts + dense_part).tocsr()

    def graphs(self, recs: Sequence[dict[str, Any]]) -> sp.csr_matrix:
        """One row per graph: the mean of its atoms' descriptors (composition fractions,
        mean neighbour counts and distances)."""
        rows = [sp.csr_matrix(self.atoms(r).mean(axis=0)) for r in recs]
        return sp.vstack(rows).tocsr() if rows else sp.csr_matrix((0, self.n_columns))


#: ``matgnn baseline linear|xgboost --features NAME``: the descriptor sets a baseline can fit on
FEATURE_SETS = ("descriptors", *BACKBONES)


class BackboneSpace:
    """Columns from a pretrained backbone's frozen features (:mod:`matgnn.graphs.backbone_features`,
    computed once per structure and cached): per atom ``[its feature | its structure's mean]``, per
    structure ``[mean | max | min over its atoms]``. A structure the backbone refuses has zero features
    (named on stderr, its id returned by :meth:`prefetch`; the baseline leaves it out)."""

    n_el = 0

    def __init__(self, name: str) -> None:
        from matgnn.models.backbones import feature_store

        self.name = name
        self.store = feature_store(name)
        self.dim = self.store.dim

    @property
    def n_columns(self) -> int:
        return 2 * self.dim

    def names(self) -> list[str]:
        return ([f"{self.name}_{k}" for k in range(self.dim)] + [f"{self.name}_structure_mean_{k}" for k in range(self.dim)])

    def graph_names(self) -> list[str]:
        return [f"{self.name}_{stat}_{k}" for stat in ("mean", "max", "min") for k in range(self.dim)]

    def prefetch(self, recs: Sequence[dict[str, Any]]) -> set[str]:
        """Compute (or read from the cache) the features of ``recs`` in the backbone's batches; returns the ids
        of the records whose structure the backbone refused (their features are zero)."""
        from matgnn.graphs.backbone_features import record_structure

        _, reasons = self.store.features_and_refusals([record_structure(r) for r in recs])
        return {r["id"] for r, reason in zip(recs, reasons) if reason}

    def _atom_features(self, rec: dict[str, Any]) -> np.ndarray:
        from matgnn.graphs.backbone_features import record_structure

        return self.store.features([record_structure(rec)])[0][0]

    def atoms(self, rec: dict[str, Any]) -> sp.csr_matrix:
        from matgnn.models.regressors import atom_rows

        return sp.csr_matrix(atom_rows(self._atom_features(rec)))

    def graphs(self, recs: Sequence[dict[str, Any]]) -> sp.csr_matrix:
        from matgnn.models.regressors import (
            graph_rows,  # the rows a saved model computes from a batch
        )

        if not recs:
            return sp.csr_matrix((0, 3 * self.dim))
        return sp.csr_matrix(graph_rows([self._atom_features(r) for r in recs]))
