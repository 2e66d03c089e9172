"""Writing files so that an interrupted run leaves no partial output, and two writers never both win.

Temporaries live in the target folder and are named ``.NAME.PID.RANDOM.tmp[SUFFIX]`` (a folder
``.NAME.PID.RANDOM.tmpdir`` for a MetaImage pair), so that a later run can tell its own
temporaries from another live process's and remove those left by a process that died
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from medsam2.errors import OutputError

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp(?:dir|\..*)?$")
# hard links are not supported here: fall back to an exclusive create of the final name
_NO_LINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str) -> list[Path]:
    """Remove temporaries of ``name`` in ``folder`` that a process which no longer runs left behind.

    Only names of this module's pattern are touched; a live process's temporaries stay.

    Returns:
        The paths removed.
    """
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if not match or match.group("name") != name or _pid_alive(int(match.group("pid"))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed


def _temp_prefix(out: Path) -> str:
    return f".{out.name}.{os.getpid()}."


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move a finished temporary to ``out``: rename over it with ``overwrite``, else link it there
    so that a file that appeared meanwhile is never replaced."""
    os.chmod(tmp, 0o666 & ~current_umask())
    if overwrite:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise OutputError(f"{out} exists (another run wrote it meanwhile); pass --overwrite to replace it") from None
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
        try:  # claim the name exclusively, then move the content over the claim
            os.close(os.open(out, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise OutputError(f"{out} exists (another run wrote it meanwhile); pass --overwrite to replace it") from None
        os.replace(tmp, out)
        return
    tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "", overwrite: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary file in the target folder, then move it to ``path``.

    Arguments:
        path: the final file.
        write: writes the whole content to the path it is given.
        suffix: the temporary file's suffix (writers that pick a format by suffix need it).
        overwrite: replace a file at ``path``; without it, a file that exists when the content is
            ready (another writer won) is an error and is left as it is.

    Raises:
        OutputError: the folder cannot be written, or ``path`` exists and ``overwrite`` is False.
    """
    out = Path(path)
    folder = out.resolve().parent
    remove_stale_temporaries(folder, out.name)
    try:
        fd, name = tempfile.mkstemp(prefix=_temp_prefix(out), suffix=f".tmp{suffix}", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _publish(tmp, out, overwrite)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def atomic_write_pair(header: Path, write: Callable[[Path], None], overwrite: bool) -> Path:
    """A MetaImage header and its data file (``x.mhd`` + ``x.zraw``): both are written under their
    final names in a temporary folder beside the target, then moved, data first, header last (the
    header is what readers open, so it appears only once its data are in place).

    Raises:
        OutputError: the folder cannot be written, or a file of the pair exists and ``overwrite`` is False.
    """
    folder = header.resolve().parent
    remove_stale_temporaries(folder, header.name)
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=_temp_prefix(header), suffix=".tmpdir", dir=folder))
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    published: list[Path] = []
    try:
        write(tmp_dir / header.name)
        for written in sorted(tmp_dir.iterdir(), key=lambda p: p.name == header.name):
            target = folder / written.name
            _publish(written, target, overwrite)
            published.append(target)
    except BaseException:
        if not overwrite:  # a data file linked before the header lost its race: take it back
            for target in published:
                target.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return header


def lock_path(path: Path) -> Path:
    """The lock file that a run holds beside an output while it works on it."""
    return path.with_name(f".{path.name}.medsam2-lock")


def claim_lock(path: Path) -> Path:
    """Create the output's lock file exclusively, holding this process's id.

    A lock whose process no longer runs is taken over.

    Returns:
        The lock file (give it to :func:`release_lock`).

    Raises:
        OutputError: a live process holds the lock, or the folder cannot be written.
    """
    lock = lock_path(path)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and _pid_alive(owner):
                raise OutputError(
                    f"another medsam2 run (process {owner}) is writing {path}; wait for it or choose another output"
                ) from None
            lock.unlink(missing_ok=True)  # left by a run that died
            continue
        except OSError as exc:
            raise OutputError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return lock
    raise OutputError(f"cannot take the lock {lock} for {path}; remove it if no medsam2 run is writing there")


def release_lock(lock: Path) -> None:
    """Remove a lock file this process holds (one that another process took over stays)."""
    try:
        if lock.read_text().strip() == str(os.getpid()):
            lock.unlink()
    except OSError:
        return


def write_json_atomic(data: dict, path: Path, overwrite: bool) -> None:
    """Write JSON through a temporary file in the target folder, then move it into place.

    Raises:
        OutputError: ``path`` exists and ``overwrite`` is False, or the folder cannot be written.
    """
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2)), overwrite=overwrite)
