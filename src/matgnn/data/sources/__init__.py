"""Structure sources, one interface (:class:`StructureSource`), chosen by a config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from matgnn.data.sources.ase_files import AseSource
from matgnn.data.sources.base import Entry, StructureSource
from matgnn.data.sources.cif_jsonl import CifJsonlSource
from matgnn.data.sources.emt import EmtAlloySource
from matgnn.data.sources.folder import FolderSource, read_structure_file
from matgnn.data.sources.jarvis import JarvisSource
from matgnn.data.sources.magmoms import MagmomSource
from matgnn.data.sources.matbench import MatbenchSource

__all__ = ["AseSource", "CifJsonlSource", "EmtAlloySource", "Entry", "FolderSource", "JarvisSource", "MagmomSource",
           "SourceConfig", "StructureSource", "make_source", "parse_source", "read_structure_file"]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int | None = Field(None, ge=1, description="use at most this many entries")


class EmtConfig(_Base):
    kind: Literal["emt"] = "emt"
    n_structures: int = Field(1000, ge=1)
    seed: int = 0


class JarvisConfig(_Base):
    kind: Literal["jarvis"] = "jarvis"
    dataset: str = "dft_2d"
    store_dir: str | None = None
    targets: list[str] | None = None
    dimensionality: str | None = None


class FolderConfig(_Base):
    kind: Literal["folder"] = "folder"
    path: str
    id_prop: str = "id_prop.csv"


class AseConfig(_Base):
    kind: Literal["ase"] = "ase"
    path: str
    graph_targets: list[str] | None = None
    node_targets: list[str] | None = None


class MagmomConfig(_Base):
    kind: Literal["magmoms"] = "magmoms"
    path: str
    signed: bool = False


class CifJsonlConfig(_Base):
    kind: Literal["cif_jsonl"] = "cif_jsonl"
    path: str
    id_field: str = "material_id"
    cif_field: str = "cif"
    targets: list[str] | None = None


class MatbenchConfig(_Base):
    """A Matbench v0.1 data file (``matbench_<task>.json.gz``); ids are Matbench's (``mb-jdft2d-001``)."""

    kind: Literal["matbench"] = "matbench"
    path: str
    task: str | None = None


SourceConfig = Annotated[EmtConfig | JarvisConfig | FolderConfig | AseConfig | MagmomConfig | CifJsonlConfig
                         | MatbenchConfig, Field(discriminator="kind")]


def make_source(cfg: BaseModel) -> StructureSource:
    """The source a config describes."""
    d = cfg.model_dump(exclude={"kind"})
    return {"emt": EmtAlloySource, "jarvis": JarvisSource, "folder": FolderSource,
            "ase": AseSource, "magmoms": MagmomSource, "cif_jsonl": CifJsonlSource,
            "matbench": MatbenchSource}[cfg.kind](**d)  # type: ignore[attr-defined]


def parse_source(spec: str, **options) -> BaseModel:
    """A source config from a command-line spec.

    ``emt`` or ``emt:500``; ``jarvis:dft_2d`` (any jarvis-tools name); a folder with an
    ``id_prop.csv``; an ``.extxyz``/``.xyz``/``.traj``/``.db`` file; a ``.jsonl[.gz]``
    magnetic-moment file. ``options`` are further config fields (``store_dir``,
    ``limit`` ...); None values are ignored.
    """
    options = {k: v for k, v in options.items() if v is not None}
    kind, _, arg = spec.partition(":")
    if kind == "emt":
        if arg:
            options.setdefault("n_structures", int(arg))
        return EmtConfig(**options)
    if kind == "jarvis":
        return JarvisConfig(dataset=arg or "dft_2d", **options)
    path = Path(spec)
    if path.is_dir():
        return FolderConfig(path=spec, **options)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        import gzip
        import json

        with (gzip.open(path, "rt") if name.endswith(".gz") else open(path)) as f:
            first = json.loads(f.readline() or "{}")
        if "cif" in first:
            return CifJsonlConfig(path=spec, **options)
        return MagmomConfig(path=spec, **options)
    if name.endswith((".xyz", ".extxyz", ".traj", ".db")):
        return AseConfig(path=spec, **options)
    raise ValueError(f"cannot tell what source {spec!r} is: use emt[:N], jarvis:NAME, a folder with "
                     "id_prop.csv, an .extxyz/.xyz/.traj/.db file or a .jsonl(.gz) magmom file")
