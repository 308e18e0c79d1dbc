"""A folder of structure files with an ``id_prop.csv`` (the CGCNN/ALIGNN layout, and the
2DMatPedia export of the research this project comes from), and the one reader of single
structure files that every command uses.

Structure files: CIF, POSCAR/CONTCAR/``*.vasp``/``*.poscar``, extxyz/xyz (first frame) and
pymatgen ``Structure.as_dict()`` JSON. Reading a file never runs code: JSON structures are
read field by field here (pymatgen's own ``from_dict`` would import any ``@module`` named in
a site property), CIF and POSCAR through pymatgen's text parsers.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from matgnn import errors
from matgnn.data.sources.base import (
    Entry,
    StructureSource,
    numbers_from_symbols,
    parse_label,
)
from matgnn.data.structure import Structure, missing_value
from matgnn.errors import StructureError, UserError

#: Suffixes tried, in order, for the file of id ``X`` (``X`` itself first: POSCAR-style names).
_SUFFIXES = ("", ".cif", ".vasp", ".poscar", ".POSCAR", ".extxyz", ".xyz", ".json")
#: Suffixes of single-structure files a folder may hold.
STRUCTURE_FILE_SUFFIXES = (".cif", ".vasp", ".poscar", ".extxyz", ".xyz", ".json")
#: Files of the CGCNN/ALIGNN layouts that are not structures (CGCNN's element embedding table).
NOT_STRUCTURES = ("atom_init.json",)


def is_structure_file_name(name: str) -> bool:
    """Whether a file name looks like a single-structure file (by suffix, or POSCAR/CONTCAR)."""
    low = name.lower()
    if low in NOT_STRUCTURES:
        return False
    return low.endswith(STRUCTURE_FILE_SUFFIXES) or name.startswith(("POSCAR", "CONTCAR"))


def _is_plain_name(sid: str) -> bool:
    """Whether ``sid`` can only name a file inside its folder: no path separator, not ``.``/``..``,
    no NUL byte (an absolute path always holds a separator)."""
    return bool(sid) and "/" not in sid and "\\" not in sid and sid not in (".", "..") and "\x00" not in sid


def check_id(sid: str, where: str) -> str:
    """``sid`` if it can name a file inside its folder; an id with a path separator, ``..``, a
    leading ``/`` or a NUL byte is a :class:`UserError` naming ``where`` (file and line)."""
    if not sid:
        raise UserError(f"{where}: empty id")
    if not _is_plain_name(sid):
        raise UserError(f"{where}: id {sid!r} is not a plain file name (ids may not contain '/', '\\\\', "
                        "'..' or be absolute paths: a structure file must lie in the folder itself)")
    return sid


def _cif_number(text: str) -> float | None:
    """A CIF number (``0.50(2)``: the uncertainty dropped), or None for ``?`` / ``.`` / text."""
    text = str(text).strip()
    if "(" in text:
        text = text[:text.index("(")]
    try:
        return float(text)
    except ValueError:
        return None


def cif_blocks(path: Path, sid: str) -> list[tuple[str, str]]:
    """(block name, block text) of every data block of a CIF holding atoms, each checked for occupancies
    outside (0, 1] (an error naming the site: pymatgen would drop or merge such a site silently)."""
    from pymatgen.io.cif import CifFile

    text = path.read_text(encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cif = CifFile.from_str(text)
    out = []
    for name, block in cif.data.items():
        data = block.data
        if "_atom_site_fract_x" not in data and "_atom_site_Cartn_x" not in data:
            continue  # a block without atoms (a global block of a multi-block file)
        labels = data.get("_atom_site_label") or data.get("_atom_site_type_symbol") or []
        for k, raw in enumerate(data.get("_atom_site_occupancy") or []):
            occ = _cif_number(raw)
            if occ is not None and not 0.0 < occ <= 1.0 + 1e-6:
                label = labels[k] if k < len(labels) else f"#{k}"
                raise StructureError(sid, errors.UNPARSABLE, f"data block {name!r}: site {label} has occupancy {raw} "
                                     "(must be > 0 and <= 1)", str(path))
        out.append((name, str(block)))
    return out


def read_cif_blocks(path: str | Path) -> list[Structure]:
    """Every data block of a CIF as a structure: one block is named by the file (``x``), several by file and
    block (``x[block]``). A block that cannot be read is a :class:`StructureError` naming it."""
    path = Path(path)
    sid = path.stem
    if not path.is_file() or path.stat().st_size == 0:
        return [read_structure_file(path)]
    with _as_structure_error(sid, path):
        return _read_cif(path, sid, every_block=True)


def _read_cif(path: Path, sid: str, every_block: bool) -> list[Structure]:
    """The CIF's structures, its blocks read and checked once: a single block as pymatgen reads the file;
    several blocks each by its own parser (``every_block``) or, for one id, an error naming them."""
    blocks = cif_blocks(path, sid)
    if len(blocks) <= 1:
        from pymatgen.core import Structure as PmgStructure

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [structure_from_pymatgen(PmgStructure.from_file(str(path)), sid, str(path))]
    if not every_block:
        raise StructureError(sid, errors.UNPARSABLE, f"the CIF holds {len(blocks)} data blocks "
                             f"({', '.join(b for b, _ in blocks[:5])}); one structure per file here (matgnn "
                             "predict reads every block)", str(path))
    from pymatgen.io.cif import CifParser

    out = []
    for name, text in blocks:
        bid = f"{sid}[{name}]"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                (pmg,) = CifParser.from_str(text).parse_structures(primitive=False, on_error="raise")
        except Exception as e:  # noqa: BLE001
            raise StructureError(bid, errors.UNPARSABLE, f"data block {name!r}: cannot parse: {type(e).__name__}: {e}",
                                 str(path)) from None
        out.append(structure_from_pymatgen(pmg, bid, str(path)))
    return out


@contextlib.contextmanager
def _as_structure_error(sid: str, path: Path) -> Iterator[None]:
    """Whatever reading a structure file raises, as a :class:`StructureError` naming the file."""
    try:
        yield
    except StructureError:
        raise
    except FileNotFoundError:
        raise StructureError(sid, errors.UNPARSABLE, "file not found", str(path)) from None
    except UnicodeDecodeError as e:
        raise StructureError(sid, errors.UNPARSABLE, f"not UTF-8 text (byte {e.start}: {e.reason})", str(path)) from None
    except Exception as e:  # pymatgen/ASE raise many different types on bad files
        raise StructureError(sid, errors.UNPARSABLE, f"cannot parse: {type(e).__name__}: {e}", str(path)) from e


def poscar_problem(text: str) -> str | None:
    """What makes ``text`` an incomplete or malformed POSCAR (a truncated file, a non-finite lattice), in
    words, or None when its layout is complete."""
    lines = text.splitlines()
    if len(lines) < 8:
        return f"a POSCAR needs at least 8 lines (comment, scale, 3 lattice vectors, species/counts, mode); it has {len(lines)}"
    vals = lines[1].split()
    if not vals or _cif_number(vals[0]) is None or not np.isfinite(_cif_number(vals[0])):
        return f"line 2 (the scale factor) is not a finite number: {lines[1].strip()!r}"
    for k in range(3):
        row = [_cif_number(x) for x in lines[2 + k].split()[:3]]
        if len(row) < 3 or any(v is None or not np.isfinite(v) for v in row):
            return f"lattice vector {k + 1} (line {3 + k}) is not three finite numbers: {lines[2 + k].strip()!r}"
    at = 5
    if not all(x.lstrip("-").isdigit() for x in lines[at].split()):
        at += 1  # species names, then counts
    try:
        counts = [int(x) for x in lines[at].split()]
    except (ValueError, IndexError):
        return f"line {at + 1} should hold the atom counts: {lines[at].strip() if at < len(lines) else ''!r}"
    at += 1
    if at < len(lines) and lines[at].strip()[:1].lower() == "s":
        at += 1  # selective dynamics
    at += 1  # Direct / Cartesian
    n = sum(counts)
    coords = [ln for ln in lines[at:at + n] if len(ln.split()) >= 3]
    if len(coords) < n:
        return f"the file ends after {len(coords)} of its {n} atom positions (truncated?)"
    return None


def read_structure_file(path: str | Path, sid: str | None = None) -> Structure:
    """Read one CIF, POSCAR/CONTCAR, extxyz or pymatgen-JSON file (also gzipped: ``x.cif.gz``). Raises
    :class:`StructureError` naming the file when it cannot be parsed; a CIF with several data blocks is an
    error here (one id, one structure: :func:`read_cif_blocks` reads them all)."""
    path = Path(path)
    sid = sid if sid is not None else path.stem
    name = path.name.lower()
    with _as_structure_error(sid, path):
        if path.stat().st_size == 0:
            raise StructureError(sid, errors.UNPARSABLE, "the file is empty", str(path))
        if name.endswith(".gz"):
            return _read_gzipped(path, sid)
        if name.endswith(".cif"):
            return _read_cif(path, sid, every_block=False)[0]
        if not name.endswith((".json", ".xyz", ".extxyz")):  # POSCAR / CONTCAR / *.vasp
            problem = poscar_problem(path.read_text(encoding="utf-8"))
            if problem:
                raise StructureError(sid, errors.UNPARSABLE, f"not a complete POSCAR: {problem}", str(path))
        if name.endswith(".json"):
            return structure_from_json(path.read_text(encoding="utf-8"), sid, str(path))
        if name.endswith((".xyz", ".extxyz")):
            from ase.io import read

            return Structure.from_ase(read(path, index=0), sid, meta={"file": str(path)})
        from pymatgen.core import Structure as PmgStructure

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pmg = PmgStructure.from_file(str(path))
    return structure_from_pymatgen(pmg, sid, str(path))


def _read_gzipped(path: Path, sid: str) -> Structure:
    """A gzipped single-structure file, read as the file it holds."""
    import gzip
    import tempfile

    inner = path.name[:-3]
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as e:
        raise StructureError(sid, errors.UNPARSABLE, f"not a readable gzip file: {e}", str(path)) from None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / inner).write_bytes(data)
        try:
            s = read_structure_file(Path(tmp) / inner, sid.split(".")[0] if sid == path.stem else sid)
        except StructureError as e:
            raise StructureError(e.structure_id, e.code, e.detail, str(path)) from None
    s.meta["file"] = str(path)
    return s


def structure_from_json(text: str, sid: str, file: str | None = None) -> Structure:
    """A structure from pymatgen's ``Structure.as_dict()`` JSON, read as data: the lattice
    matrix (and ``pbc`` when present), each site's element and Cartesian (``xyz``) or
    fractional (``abc``) coordinates. Partial occupancies are an error (disordered)."""
    def bad(detail: str) -> StructureError:
        return StructureError(sid, errors.UNPARSABLE, detail, file)

    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(d, dict) or not isinstance(d.get("lattice"), dict) or not isinstance(d.get("sites"), list):
        raise bad("not a pymatgen Structure JSON (needs 'lattice' and 'sites')")
    try:
        cell = np.asarray(d["lattice"]["matrix"], float).reshape(3, 3)
        pbc = np.asarray(d["lattice"].get("pbc", (True, True, True)), bool).reshape(3)
        symbols, frac, cart = [], [], []
        for k, site in enumerate(d["sites"]):
            species = site["species"]
            if len(species) != 1 or abs(float(species[0].get("occu", 1.0)) - 1.0) > 1e-6:
                raise StructureError(sid, errors.UNPARSABLE,
                                     f"site {k} is partially occupied (disordered structures are not supported)", file)
            symbols.append(str(species[0]["element"]))
            if "xyz" in site:
                cart.append(site["xyz"])
            else:
                frac.append((k, site["abc"]))
    except StructureError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise bad(f"malformed pymatgen Structure JSON: {type(e).__name__}: {e}") from None
    if not symbols:
        raise StructureError(sid, errors.EMPTY_STRUCTURE, "no sites", file)
    pos = np.zeros((len(symbols), 3))
    try:
        if cart:
            pos[[k for k in range(len(symbols)) if "xyz" in d["sites"][k]]] = np.asarray(cart, float).reshape(-1, 3)
        for k, abc in frac:
            pos[k] = np.asarray(abc, float).reshape(3) @ cell
    except (TypeError, ValueError) as e:
        raise bad(f"malformed coordinates: {e}") from None
    numbers = numbers_from_symbols(symbols, sid, file)
    return Structure(sid, numbers, pos, cell, pbc, meta={"file": file})


def structure_from_pymatgen(pmg: Any, sid: str, file: str | None = None) -> Structure:
    """Convert an ordered pymatgen Structure."""
    if not pmg.is_ordered:
        raise StructureError(sid, errors.UNPARSABLE,
                             "structure has partially occupied (disordered) sites", file)
    from pymatgen.core.periodic_table import DummySpecies

    for k, site in enumerate(pmg):
        if isinstance(site.specie, DummySpecies):
            raise StructureError(sid, errors.UNKNOWN_ELEMENT, f"atom {k} has unknown element {str(site.specie)!r}", file)
    numbers = np.array([site.specie.Z for site in pmg], dtype=np.int64)
    return Structure(sid, numbers, np.asarray(pmg.cart_coords, float),
                     np.asarray(pmg.lattice.matrix, float), np.ones(3, bool), meta={"file": file})


def _is_number(text: str) -> bool:
    """A cell that reads as a label: a number or a missing-value marker."""
    if missing_value(text) or text.strip().lower() == "nan":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_id_prop(path: Path, folder: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The target names and the ``(line number, cells)`` data rows of an ``id_prop.csv``.

    The first row is a header only when its id names no structure file in ``folder`` and
    one of its other cells is not a label (a number or a missing marker such as ``N/A``);
    so a first data row is never taken for a header. Empty files, undecodable bytes, a
    single column (wrong delimiter) and rows with another number of cells than the first
    are :class:`UserError` naming the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{path} line {line}: not UTF-8 text (byte {e.start}: {e.reason}); "
                        "save the file as UTF-8") from None
    rows = [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(text.splitlines()), 1)
            if r and any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"{path}: the file is empty (expected rows 'id,target[,target...]')")
    line, first = rows[0]
    if len(first) < 2:
        delim = next((d for d in (";", "\t", "|", " ") if d in first[0]), None)
        hint = f" (found {delim!r}: the file must be comma-separated)" if delim else ""
        raise UserError(f"{path} line {line}: one column; expected 'id,target[,target...]'{hint}")
    header = (_find_file(folder, first[0]) is None and not all(_is_number(c) for c in first[1:]))
    if header:
        names = first[1:]
        dup = [n for n, c in Counter(names).items() if c > 1]
        if dup:
            raise UserError(f"{path} line {line}: the header names target {dup[0]!r} twice")
        rows = rows[1:]
    else:
        names = ["target"] if len(first) == 2 else [f"target_{k + 1}" for k in range(len(first) - 1)]
    for n, r in rows:
        if len(r) != len(names) + 1:
            raise UserError(f"{path} line {n}: {len(r)} cells where {'the header' if header else 'line ' + str(line)} "
                            f"has {len(names) + 1} (id + {len(names)} target{'s' if len(names) > 1 else ''})")
    return names, rows


def _find_file(folder: Path, sid: str) -> Path | None:
    """The file of id ``sid`` in ``folder``: the first of ``sid``, ``sid.cif``, ... that exists."""
    if not _is_plain_name(sid):
        return None
    for suffix in _SUFFIXES:
        p = folder / f"{sid}{suffix}"
        if p.is_file():
            return p
    return None


class FolderSource(StructureSource):
    """Structures in folder ``path`` listed by ``path/id_prop.csv``.

    The CSV's first column is the structure id, the others are graph-level targets.
    With a header row the columns keep its names; without one (CGCNN's layout) they
    are called ``target`` (one column) or ``target_1``, ``target_2`` .... The file of
    id ``X`` is the first of ``X``, ``X.cif``, ``X.vasp``, ``X.poscar``, ``X.extxyz``,
    ``X.xyz``, ``X.json`` found in the folder itself (ids are plain file names). Empty
    cells, ``na`` and ``N/A`` are missing labels.

    Nothing is dropped silently: an id without a file, and a structure file of the folder
    that no row names, are entries of the load report (code ``unparsable`` /
    ``not_in_id_prop``). A duplicated id is an error naming it.
    """

    def __init__(self, path: str | Path, id_prop: str = "id_prop.csv", limit: int | None = None) -> None:
        super().__init__(limit)
        self.folder = Path(path)
        self.id_prop = self.folder / id_prop
        self.name = f"folder-{self.folder.resolve().name}"
        if not self.folder.is_dir():
            raise UserError(f"{self.folder}: no such folder")
        if not self.id_prop.is_file():
            raise UserError(f"{self.id_prop} not found: a structure folder needs an id_prop.csv whose first "
                            "column is the id and the others the targets (to predict a folder without labels, "
                            "use `matgnn predict MODEL FOLDER`)")
        self._plan: tuple[list[str], list[tuple[str, Path | None, list[str], int]], list[Path]] | None = None

    def plan(self) -> tuple[list[str], list[tuple[str, Path | None, list[str], int]], list[Path]]:
        """Target names, ``(id, file or None, label cells, line)`` per row, and the structure
        files of the folder that no row names. Checks ids (plain names, no duplicates)."""
        if self._plan is None:
            names, rows = read_id_prop(self.id_prop, self.folder)
            planned, seen = [], {}
            for line, r in rows:
                sid = check_id(r[0], f"{self.id_prop} line {line}")
                if sid in seen:
                    raise UserError(f"{self.id_prop}: id {sid!r} appears twice (lines {seen[sid]} and {line}); "
                                    "ids must be unique (one structure, one row)")
                seen[sid] = line
                planned.append((sid, _find_file(self.folder, sid), r[1:], line))
            used = {p.resolve() for _, p, _, _ in planned if p is not None}
            orphans = sorted(p for p in self.folder.iterdir()
                             if p.is_file() and p != self.id_prop and is_structure_file_name(p.name)
                             and p.resolve() not in used)
            self._plan = (names, planned, orphans)
        return self._plan

    def _size(self) -> int:
        _, planned, orphans = self.plan()
        return len(planned) + len(orphans)

    def _fingerprint_parts(self) -> dict[str, Any]:
        """Every file the source reads (id_prop.csv and each row's structure file) by content."""
        _, planned, orphans = self.plan()
        h = hashlib.sha256(self.id_prop.read_bytes())
        for sid, p, _, _ in planned:
            h.update(sid.encode() + b"\0")
            if p is not None:
                h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
        for p in orphans:
            h.update(b"orphan\0" + p.name.encode())
        return {"folder": str(self.folder.resolve()), "content": h.hexdigest(), "id_prop": self.id_prop.name,
                "reader": 2}

    def _entries(self) -> Iterator[Entry]:
        names, planned, orphans = self.plan()
        for sid, path, cells, line in planned:
            where = f"{self.id_prop}:{line}"
            if path is None:
                yield StructureError(sid, errors.UNPARSABLE, f"no structure file for this id in {self.folder} "
                                     f"(tried {', '.join(sid + s for s in _SUFFIXES if s)})", where)
                continue
            try:
                s = read_structure_file(path, sid)
                s.graph_targets = {n: parse_label(v, n, sid, where) for n, v in zip(names, cells)}
            except StructureError as e:
                yield e
                continue
            s.meta["source"] = self.name
            yield s
        for p in orphans:
            yield StructureError(p.stem, errors.NOT_IN_ID_PROP,
                                 f"structure file without a row in {self.id_prop.name} (no labels: not used)", str(p))
