"""matgnn models as ASE calculators.

    from matgnn.ase import MatgnnCalculator
    atoms.calc = MatgnnCalculator("magmom-mp", device="auto")  # any model spec: run, folder, name, ensemble
    atoms.get_magnetic_moments()                          # a per-atom moment head -> ASE's "magmoms"
    atoms.calc.get_property("optb88vdw_bandgap", atoms)   # graph heads under their own names
    db.write(atoms, **atoms.calc.key_value_pairs())       # ase.db: magmoms as ASE stores them, heads as keys

Properties follow ASE's names and those of the calculators users know (CHGNet's, MACE's): a per-atom
moment head (named ``magmom`` or ``magmoms``) is ASE's ``magmoms``, one value per atom. ASE's ``magmom`` is
the *total* moment, a number; the moment models predict |m| per atom, which does not give the net moment
of an antiferromagnet, so ``magmom`` is not offered (``get_magnetic_moment()`` says it is not implemented,
as CHGNet's calculator does) and no array is ever put under it. Each graph head is a number under its
own name, each other per-atom head an array under its name, and for an ensemble ``<name>_std`` (σ,
recalibrated when the ensemble folder says so). ``device``: ``auto`` (CUDA when torch sees a GPU), ``cpu``,
``cuda`` or ``cuda:N``.
Elements the model never saw in training are listed in ``results["unseen_elements"]``; heads whose answer
sat at the bound of a log transform's training range (a wild extrapolation, capped) in
``results["answers_at_bound"]`` (only for models with such heads, as ``matgnn predict``'s column).
:meth:`MatgnnCalculator.predict_many` predicts many structures in batches (screening).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from matgnn.data.structure import Structure
from matgnn.errors import StructureError, UserError

#: per-atom head names that ASE knows by another name (ASE's ``magmom`` is the total moment: never an array)
_ASE_NAMES = {"magmom": "magmoms"}


class MatgnnCalculator(Calculator):
    """An ASE calculator for any matgnn model spec (see :mod:`matgnn.artifacts`)."""

    def __init__(self, model: str | Sequence[str] = "magmom-mp", batch_size: int = 64, device: str | None = "auto",
                 **kwargs: Any) -> None:
        from matgnn.prediction.predict import Predictor

        self.predictor = Predictor(model if isinstance(model, (list, tuple)) else [model], device=device)
        self.device = self.predictor.device
        self.batch_size = batch_size
        self.known = self.predictor.train_elements
        props: list[str] = []
        for spec in self.predictor.head_specs:
            name = self.ase_name(spec)
            props.append(name)
            if len(self.predictor) > 1:
                props.append(f"{name}_std")
        self.implemented_properties = props
        super().__init__(**kwargs)

    @staticmethod
    def ase_name(spec: dict[str, Any]) -> str:
        """The property name of a head: ASE's own for a per-atom moment head, else the head's name."""
        if spec["level"] == "node" and spec["name"] in _ASE_NAMES:
            return _ASE_NAMES[spec["name"]]
        return spec["name"]

    def key_value_pairs(self) -> dict[str, float]:
        """The last answer's graph heads (and σ) as plain numbers under names ``ase.db`` accepts as keys, for
        ``db.write(atoms, **calc.key_value_pairs())`` (ase.db keeps only ASE's own properties of a
        calculator; ``magmoms`` is one of them and is stored as such)."""
        out: dict[str, float] = {}
        for key, v in self.results.items():
            if isinstance(v, (float, int, np.floating)) and not isinstance(v, bool):
                safe = "".join(c if c.isalnum() or c == "_" else "_" for c in key)
                out[safe if safe[:1].isalpha() else f"h_{safe}"] = float(v)
        return out

    def _results(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in self.predictor.head_specs:
            for suffix in ("", "_std"):
                key = spec["name"] + suffix
                if spec.get("components"):  # a vector head: an array of its components
                    if spec["name"] + "." + spec["components"][0] + suffix in row:
                        out[key] = np.array([row[f"{spec['name']}.{c}{suffix}"] for c in spec["components"]])
                    continue
                if key not in row:
                    continue
                v = float(row[key]) if spec["level"] == "graph" else np.asarray(row[key], float)
                out[self.ase_name(spec) + suffix] = v
        if "answers_at_bound" in row:
            out["answers_at_bound"] = list(row["answers_at_bound"])
        if self.known is not None:
            from ase.data import chemical_symbols

            out["unseen_elements"] = [chemical_symbols[z] for z in sorted({int(z) for z in row["structure"].numbers}
                                                                         - self.known)]
        return out

    def predict_many(self, images: Iterable[Any]) -> list[dict[str, Any]]:
        """The results of every ``Atoms`` in ``images``, in batches of ``batch_size``, in order.
        A structure matgnn cannot use (bad cell, overlapping atoms, ...) is a
        :class:`StructureError` naming its position."""
        from matgnn.prediction.predict import predict_structures

        structures = [structure_from_atoms(a, f"atoms[{k}]") for k, a in enumerate(images)]
        model = self.predictor if len(self.predictor) > 1 else self.predictor.members[0]
        from matgnn.data.report import LoadReport

        report = LoadReport("ase")
        rows = list(predict_structures(model, structures, self.predictor.settings, self.batch_size, report))
        if report.skipped:
            s = report.skipped[0]
            raise StructureError(s["id"], s["code"], s["detail"])
        return [self._results(r) for r in rows]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:  # noqa: ANN001
        super().calculate(atoms, properties, system_changes)
        self.results = self.predict_many([self.atoms])[0]


def structure_from_atoms(atoms: Any, sid: str = "atoms") -> Structure:
    """A matgnn structure from ASE ``Atoms`` (a crystal: a cell with non-zero volume along the
    periodic axes)."""
    if len(atoms) == 0:
        raise UserError(f"{sid}: no atoms")
    return Structure.from_ase(atoms, str(atoms.info.get("id", sid)))
