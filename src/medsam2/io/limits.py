"""What an input may be before anything reads it: the cap on its decoded size (:class:`ReadLimits`),
and the checks on its path (exists, a regular file or folder, readable). Light: no SimpleITK, no
NumPy, so the command line reads its defaults for ``--help``.
"""

from __future__ import annotations

import errno
import math
import numbers
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from medsam2.errors import InputError, InputTooLarge, UsageError

MAX_DEFLATE_RATIO = 1032
#: default cap on the decoded size of one input (voxels x bytes per voxel)
DEFAULT_MAX_INPUT_BYTES = 8 * 1024**3



@dataclass(frozen=True)
class ReadLimits:
    """How much one input may take once decoded.

    Attributes:
        max_bytes: the cap on voxels x bytes per voxel (default 8 GiB; ``--max-input-gb``).
    """

    max_bytes: int = DEFAULT_MAX_INPUT_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.max_bytes, numbers.Integral) or isinstance(self.max_bytes, bool) or self.max_bytes <= 0:
            raise UsageError(f"the input size limit must be a positive number of bytes, not {self.max_bytes!r}")

    @classmethod
    def from_gigabytes(cls, gigabytes: float) -> ReadLimits:
        """``--max-input-gb`` -> limits (GiB, 1024**3 bytes)."""
        if not math.isfinite(gigabytes) or gigabytes <= 0:
            raise UsageError(f"--max-input-gb takes a positive number, not {gigabytes}")
        return cls(int(gigabytes * 1024**3))

    def check(self, declared_bytes: int, path: Path) -> None:
        """Refuse an input whose decoded size is over the cap."""
        if declared_bytes > self.max_bytes:
            raise InputTooLarge(
                f"{path} declares {byte_size(declared_bytes)} of voxels, over the input limit of {byte_size(self.max_bytes)}; "
                "raise it with --max-input-gb if the scan is really that large"
            )


def byte_size(n_bytes: float) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{int(n_bytes)} bytes"


def check_input_path(path: Path) -> os.stat_result:
    """Refuse what is not a regular file or a folder, before anything opens it.

    Raises:
        InputError: missing path, broken link, link loop, FIFO, socket or device.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(f"{path} is a broken symbolic link") from None
        raise InputError(f"no such file or folder: {path}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path} is a symbolic link loop") from None
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        return info
    kind = (
        "FIFO" if stat.S_ISFIFO(info.st_mode) else "socket" if stat.S_ISSOCK(info.st_mode) else
        "device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "special file"
    )
    raise InputError(f"{path} is a {kind}, not a regular file or folder; medsam2 reads image files and DICOM folders only")


def resolve_path(path: Path) -> Path:
    """``path.resolve()`` with link loops and OS errors as one-line errors.

    Raises:
        InputError: the path cannot be resolved.
    """
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13 reports a link loop this way
        raise InputError(f"{path} is a symbolic link loop") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path} is a symbolic link loop") from None
        raise InputError(f"cannot resolve {path}: {exc.strerror or exc}") from None
