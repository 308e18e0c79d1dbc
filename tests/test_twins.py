"""Structural twins (matgnn.data.twins): the rule the twin-grouped splits, ``data info --twins`` and the
reference model share."""

from __future__ import annotations

import numpy as np
from ase.build import bulk, mx2

from matgnn.data.twins import (
    WHOLE_CELL_TOLERANCES,
    closest_match,
    matching_structure,
    structure_matcher,
    twin_groups,
    twin_summary,
)


def _parts(atoms):
    return atoms.numbers, atoms.positions, atoms.cell[:]


def test_a_slab_is_compared_with_its_vacuum_normalised():
    h_thin = mx2("MoS2", kind="2H", a=3.18, thickness=3.19, vacuum=5.0)
    h_thick = mx2("MoS2", kind="2H", a=3.21, thickness=3.15, vacuum=20.0).repeat((2, 1, 1))
    h_thick.translate([0.3, 0.2, 7.0])  # the layer now crosses the cell's boundary
    h_thick.wrap()
    t = mx2("MoS2", kind="1T", a=3.18, thickness=3.19, vacuum=5.0)
    m = structure_matcher()
    a, b, c = (matching_structure(*_parts(x)) for x in (h_thin, h_thick, t))
    assert m.fit(a, b) and not m.fit(a, c) and not m.fit(b, c)
    for s, x in ((a, h_thin), (b, h_thick)):  # every slab gets 4 Å above its layer, normal to it
        assert abs(s.lattice.c - (np.ptp(x.positions[:, 2]) + 4.0)) < 1e-6
        assert abs(s.lattice.alpha - 90) < 1e-6 and abs(s.lattice.beta - 90) < 1e-6
    # compared as stored, the vacuum dominates the volume per atom the site tolerance scales with: 1H fits 1T
    whole = [matching_structure(*_parts(x), slab_vacuum=None) for x in (h_thin, t)]
    assert structure_matcher(WHOLE_CELL_TOLERANCES).fit(*whole) and structure_matcher().fit(*whole)
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)  # no slab: as stored
    assert np.allclose(matching_structure(*_parts(cu)).lattice.matrix, cu.cell[:])


def test_twin_groups_join_twins_of_twins_and_only_within_a_formula():
    cells = [bulk("Cu", "fcc", a=3.61), bulk("Cu", "fcc", a=3.70, cubic=True), bulk("Cu", "bcc", a=2.87),
             bulk("Ag", "fcc", a=4.09), bulk("Cu", "fcc", a=3.65).repeat((1, 2, 1))]
    formulas = ["Cu", "Cu", "Cu", "Ag", "Cu"]
    groups = twin_groups(formulas, lambda k: _parts(cells[k]))
    assert groups == [0, 0, 1, 2, 0]
    assert twin_summary(groups) == (3, 1)
    assert twin_groups(["Cu", "Ag", "Cu"], lambda k: _parts([cells[0], cells[3], cells[1]][k])) == [0, 1, 0]


def test_closest_match_takes_the_smallest_displacement_among_fits():
    ideal = bulk("NaCl", "rocksalt", a=5.64)
    shaken = ideal.copy()
    shaken.positions[1] += [0.05, 0.0, 0.0]  # still a fit, further away than the scaled copy
    scaled = bulk("NaCl", "rocksalt", a=5.80)
    cscl = bulk("NaCl", "cesiumchloride", a=3.40)
    m = structure_matcher()
    made = {k: matching_structure(*_parts(x)) for k, x in {"shaken": shaken, "scaled": scaled, "cscl": cscl}.items()}
    key, rms = closest_match(matching_structure(*_parts(ideal)), made.items(), m)
    assert key == "scaled" and rms < 1e-6
    assert closest_match(matching_structure(*_parts(ideal)), [("shaken", made["shaken"]), ("cscl", made["cscl"])],
                         m)[0] == "shaken"
    assert closest_match(matching_structure(*_parts(ideal)), [("cscl", made["cscl"])], m) is None
    assert closest_match(matching_structure(*_parts(ideal)), iter(()), m) is None
