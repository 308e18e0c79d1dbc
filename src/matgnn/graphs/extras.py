"""The extra batch fields a model may declare (``MatgnnModel.batch_fields``) and what adds each
to a batch; the packer (:class:`~matgnn.graphs.packed.PackedGraphs`) calls them once per batch.

``triplets`` is built here; each pretrained backbone's module (``matgnn.models.backbones.<name>``) registers
its own fields (``<name>_features``, ``<name>_graphs``) with :func:`register_batch_field` when it is imported,
which defining a model class that declares them does first.
"""

from __future__ import annotations

from typing import Any, Callable

from matgnn.graphs.triplets import add_triplets

#: field name -> function adding it to a batch (module-level functions: a packer sent to a loader's worker
#: process takes them by reference)
BUILDERS: dict[str, Callable[[Any], Any]] = {"triplets": add_triplets}


def register_batch_field(name: str, build: Callable[[Any], Any]) -> None:
    """Batch field ``name`` is added by ``build(batch)``."""
    BUILDERS[name] = build
