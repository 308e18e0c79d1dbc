"""Names of the fields of a graph and of a batch, defined once and used everywhere.

Every module reads and writes PyTorch Geometric ``Data``/``Batch`` objects whose
attributes are named here, so graph builders, featurisers, models and heads can be
swapped without renaming anything.
"""

from __future__ import annotations

#: Atomic numbers, shape ``[n_atoms]`` (long).
Z = "z"
#: Cartesian positions in Å, shape ``[n_atoms, 3]``.
POS = "pos"
#: Cell vectors as rows in Å, shape ``[n_graphs, 3, 3]`` (one ``[1, 3, 3]`` per graph).
CELL = "cell"
#: Per-axis periodicity, shape ``[n_graphs, 3]`` (bool).
PBC = "pbc"
#: ``[2, n_edges]``: row 0 is the neighbour (message source) ``j``, row 1 the centre atom ``i``.
EDGE_INDEX = "edge_index"
#: Integer cell offsets ``S`` of each edge, shape ``[n_edges, 3]``.
CELL_OFFSETS = "cell_offsets"
#: Displacement ``D = r_j + S·cell − r_i`` in Å, shape ``[n_edges, 3]``.
EDGE_VEC = "edge_vec"
#: Edge length ``|D|`` in Å, shape ``[n_edges]``.
EDGE_DIST = "edge_dist"
#: Graph index of every atom in a batch (PyG's own name).
BATCH = "batch"
#: Number of atoms of each graph, shape ``[n_graphs]``.
N_ATOMS = "n_atoms"
#: Structure identifier (a Python string per graph; a list in a batch).
STRUCTURE_ID = "structure_id"

#: Triplets ``(k→j, j→i)`` of edges sharing atom ``j`` (line-graph edges), shape ``[n_triplets]``
#: each: the edge index of ``k→j`` and of ``j→i``; the reverse edge of ``j→i`` is never its partner.
#: Present when a model declares ``batch_fields = ("triplets",)``.
TRIPLET_KJ = "idx_kj"
TRIPLET_JI = "idx_ji"


def backbone_atom(name: str) -> str:
    """Frozen features of pretrained backbone ``name`` (``chgnet``, ``sevennet``) per atom, ``[n_atoms, dim]``.
    Present when a model declares ``batch_fields = ("<name>_features",)``. One field per backbone, so a
    composite whose parts read different backbones (an ensemble of a CHGNet and a SevenNet model) gets both."""
    return f"{name}_atom_features"


def backbone_crystal(name: str) -> str:
    """Frozen features of pretrained backbone ``name`` per structure, ``[n_graphs, dim]`` (see :func:`backbone_atom`)."""
    return f"{name}_crystal_features"


#: Why a pretrained backbone refused each structure of a batch (a list of strings, ``""`` where none did):
#: present when a backbone's features were added. A refused structure's features are zero, so prediction
#: lists it with this reason instead of answering.
BACKBONE_REFUSED = "backbone_refused"


def backbone_graphs(name: str) -> str:
    """Pretrained backbone ``name``'s own graphs of a batch's structures (a list, one per structure, in the
    backbone package's own type), for a model that trains the backbone itself (``chgnet_ft``, ``sevennet_ft``).
    Present when a model declares ``batch_fields = ("<name>_graphs",)``."""
    return f"{name}_graphs"

#: Prefix of target fields: a graph-level target has shape ``[n_graphs]``, a node-level
#: target ``[n_atoms]``. Missing labels are NaN and are masked by the losses.
TARGET_PREFIX = "y_"


def target(name: str) -> str:
    """Field name that holds the target ``name`` in a graph or batch."""
    return TARGET_PREFIX + name
