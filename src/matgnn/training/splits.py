"""Train/validation/test splits, saved with every run."""

from __future__ import annotations

import numpy as np


def random_split(n: int, train: float, val: float, seed: int) -> dict[str, list[int]]:
    """Seeded random split of ``range(n)``; test gets the rest."""
    if train + val >= 1.0 + 1e-9:
        raise ValueError(f"train ({train}) + val ({val}) must leave something for test")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(train * n))
    n_val = int(round(val * n))
    return {"train": sorted(perm[:n_train].tolist()), "val": sorted(perm[n_train:n_train + n_val].tolist()),
            "test": sorted(perm[n_train + n_val:].tolist())}
