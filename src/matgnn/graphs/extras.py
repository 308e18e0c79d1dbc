"""The extra batch fields a model may declare (``MatgnnModel.batch_fields``) and what adds each
to a batch; the packer (:class:`~matgnn.graphs.packed.PackedGraphs`) calls them once per batch."""

from __future__ import annotations

from typing import Any

from matgnn.graphs.triplets import add_triplets


def _chgnet(batch: Any) -> Any:
    from matgnn.graphs.backbone_features import (
        add_chgnet_features,  # imports chgnet only when used
    )

    return add_chgnet_features(batch)


def _sevennet(batch: Any) -> Any:
    from matgnn.graphs.backbone_features import (
        add_backbone_features,  # imports sevenn only when used
    )

    return add_backbone_features(batch, "sevennet")


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


#: field name -> function adding it to a batch
BUILDERS = {"triplets": add_triplets, "chgnet_features": _chgnet, "sevennet_features": _sevennet,
            "chgnet_graphs": _chgnet_graphs, "sevennet_graphs": _sevennet_graphs}
