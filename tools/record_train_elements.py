"""Record the elements of a shipped model's training split in its ``model.json``.

Models trained since matgnn stores ``train_elements`` carry them already; the models shipped
before were not. This re-derives the training split from the model's own
``training_config.yaml`` (same source, graph settings and seeded split: the split is a pure
function of them) and writes the atomic numbers present in it, so ``matgnn predict`` flags
predictions for elements the model never saw.

    python tools/record_train_elements.py src/matgnn/pretrained/bandgap-2d [more model folders]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from matgnn.config import RunConfig
from matgnn.models.base import MODEL_FILE, write_atomic
from matgnn.training.run import prepare_run_data, train_elements


def record(folder: Path) -> list[int]:
    cfg = RunConfig.from_yaml(folder / "training_config.yaml")
    cfg = cfg.model_copy(update={"transfer": cfg.transfer.model_copy(update={"from_model": None})})
    with tempfile.TemporaryDirectory() as tmp:
        cache, _, split = prepare_run_data(cfg, Path(tmp), Console(stderr=True, quiet=True), progress=False,
                                           write=False)
    info = json.loads((folder / MODEL_FILE).read_text())
    info["train_elements"] = train_elements(cache, split["train"])
    info["train_elements_note"] = ("re-derived from training_config.yaml's source and seeded split by "
                                   "tools/record_train_elements.py")
    write_atomic(folder / MODEL_FILE, json.dumps(info, indent=1).encode())
    return info["train_elements"]


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        z = record(Path(arg))
        print(f"{arg}: {len(z)} elements in the training split")
