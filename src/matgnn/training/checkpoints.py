"""Training checkpoints and the history log: tensors and plain values only, written atomically,
loaded with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import torch

from matgnn.artifacts import CHECKPOINT_FILE, save_tensors
from matgnn.errors import UnsafeArtifactError

CHECKPOINT = CHECKPOINT_FILE


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))  # a run resumed from an older version's rows
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(history)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Atomic: a kill, a full disk or a read-only folder never leaves a half-written checkpoint
    (the last good one stays); the OS error names the file."""
    save_tensors(state, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A training checkpoint, loaded as data (``weights_only=True``: tensors and plain types)."""

    try:
        return torch.load(path, weights_only=True, map_location=device)
    except pickle.UnpicklingError:
        raise UnsafeArtifactError(f"{path}: refused, it holds more than tensors and plain values (torch.load "
                                  "with weights_only=True failed); checkpoints written before matgnn stored "
                                  "them as data cannot be resumed") from None
