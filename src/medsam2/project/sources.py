"""Which cases a project's ``--images`` arguments name, and the content hash that tells when a
case's file has changed.

An argument is a file, a glob (``scans/*.nii.gz``), a DICOM series folder (a folder of DICOM files
only), a dataset folder in ``evaluate``'s layout (its ``images/`` or ``imagesTr/``), or a folder of
images. A case is named by its file's name without suffix (nnU-Net's ``_0000`` channel suffix
dropped); where two cases share a name (one folder per patient with the same file names), each is
named by its folder and file (``patient1_flair``).
"""

from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from medsam2.errors import InputError, UsageError
from medsam2.evaluation.datasets import case_stem, images_in

#: nnU-Net's first-channel suffix, dropped from case names
_FIRST_CHANNEL = re.compile(r"_0000$")
#: bytes read at a time while hashing
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CaseSource:
    """One case a project will hold: its name and the image (a file or a DICOM series folder)."""

    case_id: str
    image: Path


def content_hash(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, or of a folder's files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _is_series_folder(folder: Path) -> bool:
    """A folder whose visible entries are files and not images medsam2 reads one by one (a DICOM series)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(p.is_file() for p in entries) and not images_in(folder)


def _expand(argument: str) -> list[Path]:
    path = Path(argument)
    if any(ch in argument for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(argument))
        if not matches:
            raise InputError(f"--images {argument} matches no file")
        return [p for m in matches for p in _expand(str(m))]
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"--images {argument}: no such file or folder")
    for layout in ("imagesTr", "images"):  # a dataset folder in evaluate's layout
        if (path / layout).is_dir():
            return images_in(path / layout, series_folders=True)
    if _is_series_folder(path):
        return [path]
    found = images_in(path, series_folders=True)
    if not found:
        raise InputError(f"--images {argument} holds no image (NIfTI, NRRD, MHA, DICOM series, PNG, ...)")
    return found


def case_sources(arguments: list[str]) -> list[CaseSource]:
    """The cases ``--images`` names, each once, in the order given.

    Raises:
        InputError: an argument that names nothing readable.
        UsageError: two cases whose names cannot be told apart.
    """
    paths: list[Path] = []
    for argument in arguments:
        for path in _expand(argument):
            if path.resolve() not in {p.resolve() for p in paths}:
                paths.append(path)
    if not paths:
        raise InputError("--images names no image")
    names = [_FIRST_CHANNEL.sub("", case_stem(p)) for p in paths]
    if len(set(names)) < len(names):  # same file names in several folders: name each by its folder too
        names = [f"{p.resolve().parent.name}_{name}" for p, name in zip(paths, names)]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[0]
        raise UsageError(f"two images would both be case '{twice}'; rename one or add them to separate projects")
    return [CaseSource(name, path) for name, path in zip(names, paths)]
