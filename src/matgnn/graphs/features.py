"""Atom and edge featurisers: small ``nn.Module`` transforms with a cache key.

They are cheap table look-ups and basis expansions applied to a batch, so graph caches
hold only geometry and every model carries its own featurisers (they are saved with
it). ``cache_key()`` says what each depends on.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from matgnn.data.structure import MAX_Z
from matgnn.graphs.geometry import edge_lengths

# CGCNN's categories (Xie & Grossman, PRL 2018, Table S2), built from pymatgen/ASE
# element data: (name, number of bins). The period one-hot has 8 bins (periods 1-7
# used), which makes the 92 features of CGCNN's released atom_init.json.
CGCNN_LAYOUT = (("group", 18), ("period", 8), ("electronegativity", 10), ("covalent_radius", 10),
                ("valence_electrons", 12), ("first_ionization", 10), ("electron_affinity", 10),
                ("block", 4), ("atomic_volume", 10))
_BLOCKS = ("s", "p", "d", "f")


def _bin(value: float | None, lo: float, hi: float, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    if value is None or not math.isfinite(value):
        return out
    k = int(np.clip(np.floor((value - lo) / (hi - lo) * n), 0, n - 1))
    out[k] = 1.0
    return out


def _onehot(k: int | None, n: int, first: int = 1) -> np.ndarray:
    out = np.zeros(n, np.float32)
    if k is not None and first <= k < first + n:
        out[k - first] = 1.0
    return out


def _valence(group: int, block: str) -> int:
    if block == "s":
        return 2 if group == 18 else group  # He is s-block, group 18
    if block == "p":
        return group - 10
    if block == "d":
        return group
    return 3  # lanthanides and actinides


@lru_cache(maxsize=1)
def cgcnn_table() -> np.ndarray:
    """``[MAX_Z + 1, 92]`` table; row ``Z`` is element ``Z``'s encoding (row 0 is zeros)."""
    import warnings

    from ase.data import covalent_radii
    from pymatgen.core import Element

    rows = [np.zeros(sum(n for _, n in CGCNN_LAYOUT), np.float32)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, MAX_Z + 1):
            el = Element.from_Z(z)
            block = str(el.block)
            group = int(el.group)
            ie = el.ionization_energies[0] if el.ionization_energies else None
            ea = el.electron_affinity
            vol = el.molar_volume
            parts = [
                _onehot(group, 18),
                _onehot(int(el.row), 8),
                _bin(float(el.X), 0.5, 4.0, 10),
                _bin(float(covalent_radii[z]) * 100.0, 25.0, 250.0, 10),
                _onehot(min(_valence(group, block), 12), 12),
                _bin(math.log(ie) if ie else None, 1.3, 3.3, 10),
                _bin(float(ea) if ea is not None else None, -3.0, 3.7, 10),
                _onehot(_BLOCKS.index(block) if block in _BLOCKS else None, 4, first=0),
                _bin(math.log(float(vol)) if vol else None, 1.5, 4.3, 10),
            ]
            rows.append(np.concatenate(parts))
    return np.stack(rows)


@lru_cache(maxsize=1)
def block_table() -> np.ndarray:
    """``[MAX_Z + 1, 4]`` s/p/d/f one-hot."""
    from pymatgen.core import Element

    table = np.zeros((MAX_Z + 1, 4), np.float32)
    for z in range(1, MAX_Z + 1):
        b = str(Element.from_Z(z).block)
        if b in _BLOCKS:
            table[z, _BLOCKS.index(b)] = 1.0
    return table


def onehot_table() -> np.ndarray:
    """``[MAX_Z + 1, MAX_Z]`` one-hot of Z (followed by a linear layer: a learned
    per-element embedding, ``Embedding(Z)``)."""
    return np.eye(MAX_Z + 1, dtype=np.float32)[:, 1:]


class AtomFeatures(nn.Module):
    """Fixed per-element features looked up by Z: ``"cgcnn"`` (92), ``"block"`` (4),
    ``"onehot"`` (a learned embedding once the model's linear layer follows), or a
    ``+``-joined combination such as ``"cgcnn+block"`` (96)."""

    def __init__(self, kind: str = "cgcnn") -> None:
        super().__init__()
        tables = {"cgcnn": cgcnn_table, "block": block_table, "onehot": onehot_table}
        parts = kind.split("+")
        unknown = [p for p in parts if p not in tables]
        if unknown:
            raise ValueError(f"unknown atom feature set {unknown}; known: cgcnn, block, onehot")
        self.kind = kind
        self.register_buffer("table", torch.from_numpy(np.concatenate([tables[p]() for p in parts], axis=1)))

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.table[z]

    def cache_key(self) -> dict:
        return {"atom_features": self.kind, "max_z": MAX_Z}


class GaussianRBF(nn.Module):
    """Gaussian radial basis: ``exp(-(d - mu_k)^2 / (2 width^2))`` for ``n`` centres
    ``mu_k`` evenly spaced on ``[start, stop]`` (width defaults to their spacing)."""

    def __init__(self, start: float = 0.0, stop: float = 8.0, n: int = 40, width: float | None = None) -> None:
        super().__init__()
        self.start, self.stop, self.n = start, stop, n
        self.width = width if width is not None else self.spacing(start, stop, n)
        self.register_buffer("centers", torch.linspace(start, stop, n))

    @staticmethod
    def spacing(start: float, stop: float, n: int) -> float:
        """The distance Δ between neighbouring centres."""
        return (stop - start) / max(n - 1, 1)

    @classmethod
    def wide(cls, start: float, stop: float, n: int) -> GaussianRBF:
        """ALIGNN's RBFExpansion, ``exp(-(d - mu_k)^2 / Δ)``: width √(Δ / 2) instead of Δ."""
        return cls(start, stop, n, width=(cls.spacing(start, stop, n) / 2) ** 0.5)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.exp((-((d.unsqueeze(-1) - self.centers) ** 2) / (2 * self.width**2)).clamp(min=-60.0))

    def cache_key(self) -> dict:
        return {"rbf": "gaussian", "start": self.start, "stop": self.stop, "n": self.n, "width": self.width}


class CosineCutoff(nn.Module):
    """Smooth envelope ``0.5 (cos(pi d / r_c) + 1)`` for ``d < r_c``, else 0."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return 0.5 * (torch.cos(math.pi * d / self.cutoff) + 1.0) * (d < self.cutoff).to(d.dtype)

    def cache_key(self) -> dict:
        return {"envelope": "cosine", "cutoff": self.cutoff}


class EdgeFeatures(nn.Module):
    """Gaussian RBF of the edge length, optionally times a cosine cutoff envelope."""

    def __init__(self, cutoff: float = 8.0, n_rbf: int = 40, width: float | None = None,
                 envelope: bool = False) -> None:
        super().__init__()
        self.rbf = GaussianRBF(0.0, cutoff, n_rbf, width)
        self.envelope = CosineCutoff(cutoff) if envelope else None

    @property
    def dim(self) -> int:
        return self.rbf.n

    def forward(self, batch) -> torch.Tensor:  # noqa: ANN001 - a PyG Batch
        d = edge_lengths(batch)
        e = self.rbf(d)
        if self.envelope is not None:
            e = e * self.envelope(d).unsqueeze(-1)
        return e

    def cache_key(self) -> dict:
        key = self.rbf.cache_key()
        if self.envelope is not None:
            key.update(self.envelope.cache_key())
        return key
