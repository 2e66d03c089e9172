"""Writing files so that an interrupted run leaves no partial output."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from medsam2.errors import OutputError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary file in the target folder, then rename it to ``path``.

    Arguments:
        path: the final file.
        write: writes the whole content to the path it is given.
        suffix: the temporary file's suffix (writers that pick a format by suffix need it).

    Raises:
        OutputError: the folder cannot be written.
    """
    out = Path(path)
    folder = out.resolve().parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{suffix}", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def write_json_atomic(data: dict, path: Path, overwrite: bool) -> None:
    """Write JSON through a temporary file in the target folder, then rename.

    Raises:
        OutputError: ``path`` exists and ``overwrite`` is False, or the folder cannot be written.
    """
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2)))
