"""Scans under ``--data``: the list the page shows, and names resolved without ever leaving the folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medsam2.io.dicom import looks_like_dicom
from medsam2.io.volume import SUPPORTED_SUFFIXES, suffix_of
from medsam2.serve.errors import ApiError

#: folders are listed this deep under ``--data``
MAX_DEPTH = 4
#: at most this many entries are listed
MAX_ENTRIES = 2000


@dataclass(frozen=True)
class DataEntry:
    """One scan under ``--data``.

    Attributes:
        path: its name relative to ``--data``, with ``/`` (what ``{"path": ...}`` takes).
        kind: "file" or "dicom" (a folder of DICOM slices).
        size_bytes: the file's size, or the folder's files' sizes summed.
    """

    path: str
    kind: str
    size_bytes: int


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def list_scans(root: Path) -> list[DataEntry]:
    """Every file medsam2 reads and every DICOM folder under ``root`` (resolved), sorted by name;
    hidden names and links that lead outside ``root`` are left out."""
    entries: list[DataEntry] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH and _inside(root, here / d))
        visible = sorted(f for f in files if not f.startswith(".") and _inside(root, here / f))
        dicom = [f for f in visible if looks_like_dicom(here / f)]
        if dicom and here != root:
            size = sum((here / f).stat().st_size for f in dicom)
            entries.append(DataEntry(here.relative_to(root).as_posix(), "dicom", size))
        for name in visible:
            if name in dicom:
                continue
            path = here / name
            if suffix_of(path).lower() in SUPPORTED_SUFFIXES and not name.endswith(".label.txt"):
                entries.append(DataEntry(path.relative_to(root).as_posix(), "file", path.stat().st_size))
        if len(entries) >= MAX_ENTRIES:
            break
    return sorted(entries[:MAX_ENTRIES], key=lambda e: e.path)


def resolve_data_path(root: Path | None, name: object) -> Path:
    """The scan ``name`` under ``root``.

    Raises:
        ApiError: 400 when the server has no ``--data``, the name is not a relative path inside
            it (absolute, ``..``, a link that leads out), or there is nothing there.
    """
    if root is None:
        raise ApiError(400, "this server has no data folder (start it with --data DIR); upload the scan instead")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "'path' is the name of a scan under the data folder, as GET /api/data lists them")
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (len(name) > 1 and name[1] == ":"):
        raise ApiError(400, f"'path' must be a name under the data folder, not {name!r}")
    path = root.joinpath(*posix.parts)
    if not _inside(root, path):
        raise ApiError(400, f"{name!r} leads outside the data folder")
    if not path.exists():
        raise ApiError(400, f"no scan {name!r} in the data folder (GET /api/data lists them)")
    return path.resolve()
