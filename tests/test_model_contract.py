"""One model contract, checked: every shipped model and every model folder written before the saved-model base
existed loads and gives the answers recorded in ``tests/data/shipped_answers.json`` (``tests/shipped_answers.py``
recorded them), bit for bit where the CPU is of the kind that recorded them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.shipped_answers import ANSWERS, answers, cpu_kind


@pytest.fixture(scope="module")
def now_and_then():
    pytest.importorskip("chgnet")
    pytest.importorskip("sevenn")
    recorded = json.loads(ANSWERS.read_text())
    return answers(), recorded


def test_every_shipped_and_saved_model_gives_its_recorded_answers(now_and_then):
    now, recorded = now_and_then
    assert set(now) == set(recorded["answers"]), "the shipped models changed: record their answers on purpose"
    exact = recorded["cpu"] == cpu_kind()
    for model, rows in recorded["answers"].items():
        assert set(now[model]) == set(rows), model
        for sid, heads in rows.items():
            assert set(now[model][sid]) == set(heads), (model, sid)
            for head, value in heads.items():
                got, want = np.asarray(now[model][sid][head]), np.asarray(value)
                if exact:
                    assert np.array_equal(got, want), (model, sid, head, got, want)
                else:  # another CPU kind: its kernels may round differently
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{model} {sid} {head}")
