"""JARVIS-DFT datasets through jarvis-tools (``jarvis.db.figshare.data``)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from matgnn.data.sources.base import (
    Entry,
    StructureSource,
    file_digest,
    numbers_from_symbols,
    parse_label,
)
from matgnn.data.structure import Structure, make_contiguous, missing_value
from matgnn.errors import StructureError

#: Fields of a JARVIS record that are not labels.
_NON_TARGET_FIELDS = {"jid", "atoms", "formula", "elements", "crys", "icsd", "dimensionality",
                      "spg_number", "spg_symbol", "nsites", "nelements", "reference", "search",
                      "encut", "kpoint_length_unit", "xml_data_link", "raw_files", "typ", "func"}


def _zip_path(dataset: str, store_dir: str | None) -> str:
    """Where jarvis-tools keeps ``dataset``'s zip. Importing jarvis-tools costs half a second and ~40 MB
    (it loads matplotlib and scipy), so the answer is remembered in ``<matgnn cache>/jarvis_paths.json``,
    per jarvis-tools version, dataset, folder and ``$ATOMGPTLAB_CACHE``; a remembered zip that is gone is
    asked for again."""
    from importlib.metadata import PackageNotFoundError, version

    from matgnn.artifacts import default_cache_root

    try:
        tools = version("jarvis-tools")
    except PackageNotFoundError:
        tools = "?"
    key = "|".join([tools, dataset, str(store_dir), os.environ.get("ATOMGPTLAB_CACHE", "")])
    memo_file = default_cache_root() / "jarvis_paths.json"
    try:
        memo = json.loads(memo_file.read_text())
        memo = memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        memo = {}
    known = memo.get(key)
    if isinstance(known, str) and os.path.isfile(known):
        return known
    path = _ask_jarvis(dataset, store_dir)
    if os.path.isfile(path):  # only a zip that is there (else a download may follow, and is asked for again)
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_name(f"{memo_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**memo, key: path}))
            os.replace(tmp, memo_file)
        except OSError:  # a read-only cache folder: ask jarvis-tools every time
            pass
    return path


def _ask_jarvis(dataset: str, store_dir: str | None) -> str:
    from jarvis.core.utils import get_cache_dir
    from jarvis.db.figshare import get_db_info

    info = get_db_info()
    if dataset not in info:
        raise ValueError(f"unknown JARVIS dataset {dataset!r}; known: {', '.join(sorted(info))}")
    store = store_dir if store_dir is not None else get_cache_dir("jarvis_data")
    return os.path.join(store, info[dataset][1] + ".zip")


class JarvisSource(StructureSource):
    """A JARVIS dataset (``dft_3d``, ``dft_2d``, or any jarvis-tools dataset name).

    Args:
        dataset: jarvis-tools dataset name.
        store_dir: where the dataset zip lies (or is downloaded to); None uses
            jarvis-tools' own cache folder.
        targets: graph-level label fields to keep; None keeps every numeric field.
        dimensionality: keep only entries whose ``dimensionality`` field equals this
            (e.g. ``"2D"``, ``"3D-bulk"``); entries of datasets without the field are
            all kept.
        limit: at most this many entries (in file order).
    """

    def __init__(self, dataset: str = "dft_2d", store_dir: str | None = None,
                 targets: list[str] | None = None, dimensionality: str | None = None,
                 limit: int | None = None) -> None:
        super().__init__(limit)
        self.dataset = dataset
        self.store_dir = store_dir
        self.targets = targets
        self.dimensionality = dimensionality
        self.name = f"jarvis-{dataset}"
        self._records: list[dict[str, Any]] | None = None  # read once (size hint and entries)

    def _fingerprint_parts(self) -> dict[str, Any]:
        path = _zip_path(self.dataset, self.store_dir)
        digest = file_digest(path) if os.path.isfile(path) else "not-downloaded"
        return {"dataset": self.dataset, "zip": digest, "targets": self.targets,
                "dimensionality": self.dimensionality}

    def records(self) -> list[dict[str, Any]]:
        """The raw JARVIS records (jarvis-tools' own loader; its chatter is silenced)."""
        from jarvis.db.figshare import data

        if self._records is None:
            from jarvis.db.figshare import get_db_info

            from matgnn.errors import UserError

            known = get_db_info()
            if self.dataset not in known:
                raise UserError(f"jarvis:{self.dataset}: unknown JARVIS dataset; known: {', '.join(sorted(known))}")
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    self._records = data(self.dataset, store_dir=self.store_dir)
            except (OSError, ValueError, EOFError) as e:  # no network, a damaged zip
                raise UserError(f"jarvis:{self.dataset}: could not read the dataset ({type(e).__name__}: {e}); put "
                                f"its zip ({_zip_path(self.dataset, self.store_dir)}) in place or pass --store-dir") from None
            except Exception as e:  # noqa: BLE001 - requests' and zipfile's own errors
                raise UserError(f"jarvis:{self.dataset}: could not read the dataset ({type(e).__name__}: {e})") from None
        return self._records

    def _size(self) -> int:
        return len(self.records())

    def _entries(self) -> Iterator[Entry]:
        for k, rec in enumerate(self.records()):
            if self.dimensionality is not None and "dimensionality" in rec \
                    and rec["dimensionality"] != self.dimensionality:
                continue
            yield self._parse(k, rec)

    def _parse(self, k: int, rec: dict[str, Any]) -> Entry:
        sid = str(rec.get("jid", f"{self.dataset}[{k}]"))
        try:
            atoms = rec["atoms"]
            cell = np.asarray(atoms["lattice_mat"], dtype=float)
            coords = np.asarray(atoms["coords"], dtype=float).reshape(-1, 3)
            positions = coords if atoms.get("cartesian", True) else coords @ cell
            numbers = numbers_from_symbols(atoms["elements"], sid)
            names = self.targets if self.targets is not None else [
                key for key, v in rec.items()
                if key not in _NON_TARGET_FIELDS and (isinstance(v, (int, float)) or missing_value(v))
                and not isinstance(v, bool)]
            graph_targets = {n: parse_label(rec.get(n), n, sid) for n in names}
        except StructureError as e:
            return e
        except (KeyError, TypeError, ValueError) as e:
            return StructureError(sid, "unparsable", f"JARVIS record is malformed: {e!r}")
        dim = rec.get("dimensionality")
        # JARVIS monolayers are periodic in-plane only: the c axis carries the vacuum.
        pbc = np.array([True, True, not (isinstance(dim, str) and dim.startswith("2D"))])
        return make_contiguous(Structure(sid, numbers, positions, cell, pbc, graph_targets,
                                         meta={"source": self.name, "dimensionality": dim}))
