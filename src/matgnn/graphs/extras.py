"""The extra batch fields a model may declare (``MatgnnModel.batch_fields``) and what adds each
to a batch; the packer (:class:`~matgnn.graphs.packed.PackedGraphs`) calls them once per batch."""

from __future__ import annotations

from typing import Any, Callable

from matgnn.graphs.backbone_features import BACKBONES
from matgnn.graphs.triplets import add_triplets


def _features(name: str) -> Callable[[Any], Any]:
    def add(batch: Any) -> Any:
        from matgnn.graphs.backbone_features import add_backbone_features

        return add_backbone_features(batch, name)  # the backbone's package is imported only here, when used

    return add


def _chgnet_graphs(batch: Any) -> Any:
    from matgnn.graphs.backbone_features import (
        add_chgnet_graphs,  # imports chgnet only when used
    )

    return add_chgnet_graphs(batch)


def _sevennet_graphs(batch: Any) -> Any:
    from matgnn.graphs.backbone_features import (
        add_sevennet_graphs,  # imports sevenn only when used
    )

    return add_sevennet_graphs(batch)


#: field name -> function adding it to a batch: every backbone of the registry
#: (:data:`matgnn.graphs.backbone_features.BACKBONES`) gives ``<name>_features``
BUILDERS = {"triplets": add_triplets, **{f"{name}_features": _features(name) for name in BACKBONES},
            "chgnet_graphs": _chgnet_graphs, "sevennet_graphs": _sevennet_graphs}
