"""Errors raised for bad input. Each names the structure (id and, where known, file)."""

from __future__ import annotations

from dataclasses import dataclass

#: Codes of the classes of bad input, used in reports and skip lists.
UNPARSABLE = "unparsable"
UNKNOWN_ELEMENT = "unknown_element"
BAD_CELL = "bad_cell"
NON_FINITE_GEOMETRY = "non_finite_geometry"
OVERLAPPING_ATOMS = "overlapping_atoms"
ISOLATED_ATOM = "isolated_atom"
BAD_TARGET = "bad_target"
TARGET_LENGTH = "target_length"
EMPTY_STRUCTURE = "empty_structure"
NOT_IN_ID_PROP = "not_in_id_prop"
DUPLICATE_ID = "duplicate_id"
#: a pretrained backbone refused the structure (its features would be zero): no prediction is made
BACKBONE_REFUSED = "backbone_refused"
#: the model answered NaN or inf for the structure: listed, never written as a number
NON_FINITE_PREDICTION = "non_finite_prediction"


#: Exit status of every ``matgnn`` command for a user error (bad input, config, path or
#: storage fault); an interrupted command exits with :data:`EXIT_INTERRUPTED`; an internal
#: bug keeps Python's traceback and status 1.
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class MatgnnError(Exception):
    """Base class of the errors this package raises on purpose."""


class UserError(MatgnnError, ValueError):
    """Bad input that stops a whole command (not one structure): a config, an id file, a
    folder layout, a model folder, an output path. The message names the file or setting.

    It is a ``ValueError`` too, so callers that catch bad values keep working."""


class Interrupted(MatgnnError):
    """A command stopped by Ctrl-C or SIGTERM; the message says what was kept and how to go on."""


class UnsafeArtifactError(UserError):
    """A model, checkpoint or cache file that asks for something loading must never do
    (a class outside matgnn's registry, a pickled object, a path outside its folder)."""


@dataclass
class StructureError(MatgnnError):
    """A structure that cannot be used, with the reason.

    Attributes:
        structure_id: id of the structure (as given by its source).
        code: one of the codes defined in this module.
        detail: human-readable description of the problem.
        file: the file the structure came from, if any.
    """

    structure_id: str
    code: str
    detail: str
    file: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __reduce__(self):  # noqa: ANN204 - crosses process boundaries (parallel graph builds)
        return (type(self), (self.structure_id, self.code, self.detail, self.file))

    def __str__(self) -> str:
        where = f"structure '{self.structure_id}'"
        if self.file:
            where += f" (file {self.file})"
        return f"{where}: {self.code.replace('_', ' ')}: {self.detail}"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "id": self.structure_id,
            "file": self.file,
            "code": self.code,
            "detail": self.detail,
        }
