from __future__ import annotations

import numpy as np
import torch

from matgnn.graphs.features import (
    AtomFeatures,
    CosineCutoff,
    GaussianRBF,
    block_table,
    cgcnn_table,
)


def test_cgcnn_table_has_92_features_per_element():
    t = cgcnn_table()
    assert t.shape == (101, 92)
    assert (t[0] == 0).all()
    # every category present for common elements: 9 ones each
    for z in (1, 6, 8, 14, 26, 29, 79):
        assert t[z].sum() == 9, z
    # distinct elements get distinct encodings
    assert len({t[z].tobytes() for z in range(1, 84)}) > 75
    fe, o = t[26], t[8]
    assert fe[7] == 1  # group 8
    assert o[15] == 1  # group 16


def test_block_one_hot():
    b = block_table()
    assert b[1].tolist() == [1, 0, 0, 0] and b[8].tolist() == [0, 1, 0, 0]
    assert b[26].tolist() == [0, 0, 1, 0] and b[64].tolist() == [0, 0, 0, 1]
    f = AtomFeatures("cgcnn+block")
    assert f.dim == 96 and f(torch.tensor([26, 8])).shape == (2, 96)


def test_rbf_and_envelope():
    rbf = GaussianRBF(0.0, 8.0, 41)
    e = rbf(torch.tensor([0.0, 4.0]))
    assert e.shape == (2, 41)
    assert int(e[1].argmax()) == 20
    env = CosineCutoff(5.0)
    np.testing.assert_allclose(env(torch.tensor([0.0, 2.5, 5.0, 6.0])).numpy(), [1.0, 0.5, 0.0, 0.0], atol=1e-6)
