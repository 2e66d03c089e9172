"""The data files a detached header names (MetaImage ``ElementDataFile``, NRRD ``data file``), and
the check that keeps them inside a folder.

A ``.mhd`` / ``.mha`` / ``.nhdr`` / ``.nrrd`` header may keep its voxels in other files: one file,
a ``LIST`` of files, or a numbered pattern (``name%03d.raw 1 10 1``). ITK opens whatever is named,
anywhere on the disk, so a header is a way to read any file. :func:`detached_data_files` lists the
names the way SimpleITK's own readers parse them (their quirks included), and
:func:`check_data_files` refuses, before any of them is opened, names that are absolute, hold
``..`` or lead out of the folder the caller allows (the server's upload or ``--data``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import numpy as np

from medsam2.errors import InputError

#: the suffixes of the headers that may keep their voxels in other files (MetaImage, NRRD)
HEADER_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
#: the most data files one header may name (a LIST, or a file-name pattern once expanded)
MAX_DATA_FILES = 100_000
#: the longest header line a data file name is taken from (MetaIO keeps 499 characters of a value)
_MAX_VALUE_CHARS = 498
#: the longest line of a list of data files (MetaIO keeps 1023 characters of one, joined to the
#: header's folder in 2048 bytes)
_MAX_LIST_LINE = _MAX_VALUE_CHARS
#: how much longer than its pattern a numbered file name may be (teem allocates 10 characters more)
_MAX_NUMBER_CHARS = 10
#: the longest word MetaIO splits a pattern or a LIST value into (it copies each into 80 bytes)
_MAX_META_WORD = 79
#: how far into the file a header may run before its data file field
_MAX_HEADER_BYTES = 4 << 20
_META_LOCAL = ("LOCAL", "Local", "local")
#: an escaped percent sign, or one C integer conversion (%d, %03d, %-4i, ...), in a file-name pattern
_PERCENT = re.compile(r"%(%|[-+ 0]*[0-9]*(?:\.[0-9]+)?([di])|)")
#: a MetaImage field name on a line of its own, which MetaIO would take the next line's value for
_META_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_C_SPACE = " \t\n\v\f\r"
#: a number as a C++ stream reads a double (no inf or nan: the stream fails on them)
_C_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NRRD_PATTERN_NUMBERS = re.compile(r"[ \t]*([+-]?[0-9]+)[ \t]+([+-]?[0-9]+)[ \t]+([+-]?[0-9]+)")


def detached_data_files(path: Path, suffix: str) -> tuple[str, ...]:
    """The data files a MetaImage (.mhd, .mha) or NRRD (.nhdr, .nrrd) header names, as written.

    The header is read as ITK's readers read it (MetaIO, teem's NrrdIO): one file name, a list
    (MetaImage ``ElementDataFile = LIST [2D]``, NRRD ``data file: LIST [subdim]``, one name a
    line after the field) or a pattern, expanded (MetaImage ``ElementDataFile = name%03d.raw min
    max step``, NRRD ``data file: name%03d.raw min max step [subdim]``). No data file is opened.

    Returns:
        The names in the order the reader opens them, as the header writes them; () where the
        voxels are in the file itself (``LOCAL``, no data file field), where the file is not such
        a header, or where ``suffix`` is another format.

    Raises:
        InputError: a list or pattern that ITK would misread (fewer names than slices, a step of 0
            or below, a pattern holding anything but one integer), more than
            :data:`MAX_DATA_FILES` names, a name too long or holding control characters.
    """
    if suffix in (".mha", ".mhd"):
        names = _meta_data_files(path)
    elif suffix in (".nrrd", ".nhdr"):
        names = _nrrd_data_files(path)
    else:
        return ()
    for name in names:
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise InputError(f"cannot read {path.name}: its data file name {name!r} holds control characters")
    return names


def check_data_files(path: Path, suffix: str, confine_to: Path | None) -> tuple[Path, ...]:
    """Check the data files a header names (see :func:`detached_data_files`) before any is read.

    Arguments:
        path: the header (.mhd, .mha, .nhdr, .nrrd; other formats have none).
        suffix: what it is read as.
        confine_to: the folder the header and its data files must lie in (links followed), or
            None to read them wherever the header says (the command line reads what it is given).

    Returns:
        The data files, resolved, in the order they are read (each once); () where the voxels are
        in the header's own file.

    Raises:
        InputError: with ``confine_to``, a header outside it, or a data file name that is absolute,
            starts with ``~``, holds ``..``, or resolves outside it; always, a data file that is
            missing or not a regular file (a FIFO would block the reader), or a list or pattern
            :func:`detached_data_files` refuses. Messages name files as the header writes them,
            never the folder ``confine_to``.
    """
    names = detached_data_files(path, suffix)
    root = None
    if confine_to is not None:
        root = _resolved(Path(confine_to), "the folder it may read from", path)
        if not _resolved(path, path.name, path).is_relative_to(root):
            raise InputError(f"the header {path.name} lies outside the folder it may read from")
    opened: dict[str, tuple[Path, Path]] = {}  # name: (the path the reader opens, resolved)
    for name in names:  # every name is placed before any data file is looked at
        outside = (
            f"the header {path.name} names the data file '{name}' outside the folder it may read from; "
            "a detached header may only name data files next to it"
        )
        if root is not None and _escapes(name):
            raise InputError(outside)
        if name not in opened:
            target = _opened_path(path, name, nrrd=suffix in (".nrrd", ".nhdr"))
            opened[name] = (target, _resolved(target, f"its data file '{name}'", path))
        if root is not None and not opened[name][1].is_relative_to(root):
            raise InputError(outside)
    for name, (target, _) in opened.items():
        _check_data_file(target, name, path)
    return tuple(dict.fromkeys(resolved for _, resolved in opened.values()))


def _escapes(name: str) -> bool:
    """Whether a data file name can point away from the header's folder by how it is written:
    absolute, home-relative (MetaIO opens ``~x`` from the working folder), a drive (teem opens
    ``c:x`` from the working folder), or through ``..``."""
    return name.startswith(("/", "\\", "~")) or name[1:2] == ":" or ".." in re.split(r"[/\\]", name)


def _opened_path(header: Path, name: str, nrrd: bool) -> Path:
    """The file the reader opens for ``name``: next to the header, unless the reader takes the
    name as a full path (MetaIO: ``/`` or ``~`` first; teem: ``/`` first or ``:`` second)."""
    full = name.startswith("/") or (name[1:2] == ":" if nrrd else name.startswith("~"))
    return Path(name) if full else header.parent / name


def _resolved(path: Path, what: str, header: Path) -> Path:
    """``path`` with its links followed, or a one-line error that names ``what`` (not the path)."""
    try:
        return Path(os.path.realpath(path, strict=False))
    except (OSError, RuntimeError, ValueError):
        raise InputError(f"cannot read {header.name}: {what} cannot be resolved (a link loop?)") from None


def _check_data_file(target: Path, name: str, header: Path) -> None:
    """Refuse a data file that is missing or not a regular file, naming it as the header does."""
    try:
        info = target.stat()
    except FileNotFoundError:
        raise InputError(f"cannot read {header.name}: its data file '{name}' is missing") from None
    except (OSError, ValueError) as exc:
        why = "is a symbolic link loop" if getattr(exc, "errno", None) == errno.ELOOP else "cannot be opened"
        raise InputError(f"cannot read {header.name}: its data file '{name}' {why}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "folder" if stat.S_ISDIR(info.st_mode) else "FIFO" if stat.S_ISFIFO(info.st_mode) else "special file"
        raise InputError(f"cannot read {header.name}: its data file '{name}' is a {kind}, not a regular file")


def _fs_name(text: str) -> str:
    """A name read from a header (as latin-1: one character a byte) as the file system spells it."""
    return os.fsdecode(text.encode("latin-1"))


def _c_strip_end(text: str) -> str:
    """MetaIO's trim of a value or list line: trailing spaces and unprintable bytes, never the first."""
    end = len(text)
    while end > 1 and not 0x21 <= ord(text[end - 1]) <= 0x7E:
        end -= 1
    return text[:end]


def _too_many(header: Path, count: int) -> InputError:
    return InputError(f"cannot read {header.name}: its header names {count} data files, more than the {MAX_DATA_FILES} medsam2 reads")


# MetaImage: MetaIO's MET_Read takes a field name up to '=' or ':', then its value after them
def _meta_data_files(path: Path) -> tuple[str, ...]:
    with path.open("rb") as handle:
        text = handle.read(_MAX_HEADER_BYTES).decode("latin-1")
        complete = not handle.read(1)
        found = _meta_fields(path, text, complete)
        if found is None:
            return ()
        fields, value, end = found
        if value in _META_LOCAL:
            return ()
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise InputError(f"cannot read {path.name}: its ElementDataFile {value!r} holds control characters")
        if value.startswith("LIST") or "%" in value:
            words = [w for w in value.split(" ") if w]
            if any(len(w) > _MAX_META_WORD for w in words):
                raise InputError(f"cannot read {path.name}: its ElementDataFile '{value}' has a word over {_MAX_META_WORD} characters")
            if value.startswith("LIST"):
                handle.seek(end)
                return _meta_list(path, words, _meta_dims(path, fields, value), handle)
            return _meta_pattern(path, value, words, _meta_dims(path, fields, value))
        return (_fs_name(value),)


def _meta_fields(path: Path, text: str, complete: bool) -> tuple[dict[str, list[float] | None], str, int] | None:
    """NDims and DimSize, the ElementDataFile value and the offset after its line, as MET_Read
    finds them; None where the header has no ElementDataFile (ITK refuses it)."""
    n = len(text)
    fields: dict[str, list[float] | None] = {}
    pos = 0
    while pos < n:
        while pos < n and text[pos] not in "=:" and text[pos] in _C_SPACE:
            pos += 1
        start = pos
        while pos < n and text[pos] not in "=:\r\n" and pos - start < 500:
            pos += 1
        if pos >= n or pos - start >= 500:
            break  # where MET_Read stops
        name = text[start:pos].rstrip(" \t")
        line_end = text.find("\n", pos)
        line_end = n if line_end < 0 else line_end
        if name in ("ElementDataFile", "NDims", "DimSize"):
            at = pos  # MET_SkipToVal: on to '=' or ':' (past line ends), then past them and blanks
            while at < n and text[at] not in "=:":
                at += 1
            while at < n and text[at] in "=: \t":
                at += 1
            if at >= n:
                break
            if name == "ElementDataFile":
                end = text.find("\n", at)
                if end < 0 and not complete:
                    break
                end = n if end < 0 else end
                if end - at > _MAX_VALUE_CHARS:
                    raise InputError(f"cannot read {path.name}: its ElementDataFile is longer than {_MAX_VALUE_CHARS} characters")
                return fields, _c_strip_end(text[at:end]), end + 1
            count = 1 if name == "NDims" else _whole(fields.get("NDims"))
            fields[name], pos = _meta_numbers(text, at, count)
            continue
        if text[pos] in "\r\n" and not any(c in "=:" for c in text[pos:line_end]) and _META_FIELD_NAME.fullmatch(name):
            raise InputError(
                f"cannot read {path.name}: its header line '{name}' has no '=' and a value on the next line; "
                "write each MetaImage field as 'Name = value'"
            )
        pos = line_end + 1
    if not complete:
        raise InputError(f"cannot read {path.name}: its header runs past {_MAX_HEADER_BYTES >> 20} MB without an ElementDataFile")
    return None


def _whole(numbers: list[float] | None) -> int:
    return int(numbers[0]) if numbers and 1 <= numbers[0] <= 10 else 0


def _meta_numbers(text: str, at: int, count: int) -> tuple[list[float] | None, int]:
    """``count`` numbers as C++ streams read them (across line ends), and the offset after their
    line; None where they are not numbers (MetaIO's stream fails)."""
    numbers: list[float] = []
    for _ in range(count):
        while at < len(text) and text[at] in _C_SPACE:
            at += 1
        end = at
        while end < len(text) and text[end] not in _C_SPACE:
            end += 1
        if not _C_NUMBER.fullmatch(text[at:end]):
            numbers = []
            break
        numbers.append(float(text[at:end]))
        at = end
    line_end = text.find("\n", at)
    return (numbers or None), (len(text) if line_end < 0 else line_end + 1)


def _meta_dims(path: Path, fields: dict[str, list[float] | None], value: str) -> list[int]:
    ndims = _whole(fields.get("NDims"))
    sizes = fields.get("DimSize")
    if not ndims or not sizes or len(sizes) != ndims or not all(1 <= s < 2**31 and s == int(s) for s in sizes):
        raise InputError(f"cannot read {path.name}: its ElementDataFile '{value}' needs NDims and DimSize, and they are not whole numbers")
    return [int(s) for s in sizes]


def _c_div(a: int, b: int) -> int:
    """C's integer division (towards zero)."""
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b > 0) else -quotient


def _meta_list(path: Path, words: list[str], dims: list[int], handle) -> tuple[str, ...]:
    """``ElementDataFile = LIST [kD]``: one name a line after the field, as many as the slabs of
    k dimensions the image holds (k: the image's dimensions less one by default)."""
    ndims = len(dims)
    file_dim = ndims - 1
    if len(words) > 1:  # MetaIO takes (int)atof of it: only plain forms (2, 2D) are read alike here
        plain = re.fullmatch(r"([0-9]{1,9})[dD]?", words[1])
        if plain is None:
            raise InputError(f"cannot read {path.name}: its ElementDataFile '{' '.join(words)}' must be LIST, LIST 2D or LIST 3D")
        file_dim = int(plain.group(1))
    if file_dim == 0 or file_dim > ndims:
        file_dim = ndims - 1
    if not 0 <= file_dim < ndims:
        raise InputError(f"cannot read {path.name}: its ElementDataFile '{' '.join(words)}' names files of a size ITK misreads")
    needed = int(np.prod(dims[file_dim:], dtype=np.float64))
    if needed > MAX_DATA_FILES:
        raise _too_many(path, needed)
    names: list[str] = []
    while len(names) < needed:
        line = handle.readline(_MAX_LIST_LINE + 2)
        if not line.endswith(b"\n"):
            if len(line) > _MAX_LIST_LINE:
                raise InputError(f"cannot read {path.name}: a line of its list of data files is longer than {_MAX_LIST_LINE} characters")
            break  # the end of the file: MetaIO skips a last line without a line end
        names.append(_fs_name(_c_strip_end(line[:-1].decode("latin-1"))))
    if len(names) < needed:
        raise InputError(
            f"cannot read {path.name}: its header lists {len(names)} data files but its size needs {needed} "
            "(ITK would leave the other voxels unset)"
        )
    return tuple(names)


def _numbered(pattern: str, numbers: range, header: Path, shown: str) -> tuple[str, ...]:
    """The names a file-name pattern with one C integer conversion gives ``numbers``; refuse
    anything else (a %s or a second number would make ITK read memory, not a name) and names
    over the pattern's length + 10 (teem's buffer for them)."""
    conversions = [m for m in _PERCENT.finditer(pattern) if m.group(1) != "%"]
    if len(conversions) != 1 or conversions[0].group(2) is None:
        raise InputError(
            f"cannot read {header.name}: its data file pattern '{shown}' must hold one integer such as %03d (and %% for a percent sign)"
        )
    names = [pattern % number for number in numbers]
    if any(len(name) > len(pattern) + _MAX_NUMBER_CHARS for name in names):
        raise InputError(f"cannot read {header.name}: its data file pattern '{shown}' pads its numbers too wide")
    return tuple(_fs_name(name) for name in names)


def _meta_pattern(path: Path, value: str, words: list[str], dims: list[int]) -> tuple[str, ...]:
    """``ElementDataFile = name%03d.raw [min [max [step]]]``: one file per slice of the last axis,
    as MetaIO numbers them (min 1, max min + slices - 1, step 1 by default; at most one a slice)."""
    slices = dims[-1]
    written = words[-3:] if len(words) >= 5 else words[1:]
    if not all(_INTEGER.fullmatch(w) and abs(int(w)) < 2**31 for w in written):
        raise InputError(f"cannot read {path.name}: its data file pattern '{value}' must end in whole numbers (min max step)")
    numbers = [int(w) for w in written]
    pattern = " ".join(words[:-3]) if len(words) >= 5 else words[0]
    if len(pattern) > _MAX_META_WORD:
        raise InputError(f"cannot read {path.name}: its ElementDataFile '{value}' has a name over {_MAX_META_WORD} characters")
    low, high, step = 1, slices, 1
    if numbers:
        low = numbers[0]
        high = low + slices - 1
    if len(numbers) >= 2:
        high = numbers[1]
        step = _c_div(high - low, slices)
    if len(numbers) >= 3:
        step = numbers[2]
    if step <= 0:
        raise InputError(f"cannot read {path.name}: its data file pattern '{value}' steps by {step} (ITK needs a positive step)")
    if 1 + _c_div(high - low, step) > slices:
        high = (slices - 1) * step + low
    count = len(range(low, high + 1, step))
    if count > MAX_DATA_FILES:
        raise _too_many(path, count)
    if count < slices:
        raise InputError(
            f"cannot read {path.name}: its data file pattern '{value}' names {count} files for {slices} slices "
            "(ITK would leave the other voxels unset)"
        )
    return _numbered(pattern, range(low, high + 1, step), path, value)


# NRRD: teem reads "field: value" lines up to a blank line; a list of names runs to the file's end
def _nrrd_data_files(path: Path) -> tuple[str, ...]:
    with path.open("rb") as handle:
        if not handle.readline(_MAX_LIST_LINE).startswith(b"NRRD"):
            return ()
        value = None
        while value is None:
            if handle.tell() > _MAX_HEADER_BYTES:
                raise InputError(f"cannot read {path.name}: its header runs past {_MAX_HEADER_BYTES >> 20} MB")
            raw = handle.readline(_MAX_HEADER_BYTES)
            line = raw.rstrip(b"\r\n")
            if not line:
                return ()  # a blank line or the end: no data file field
            if line.startswith(b"#") or b": " not in line:
                continue
            name, _, rest = line.partition(b": ")
            if name.strip().lower() in (b"data file", b"datafile"):
                value = rest.lstrip(b" \t").decode("latin-1")
        if len(value) > _MAX_VALUE_CHARS:
            raise InputError(f"cannot read {path.name}: its data file field is longer than {_MAX_VALUE_CHARS} characters")
        if _teem_pattern(value):
            return _nrrd_pattern(path, value)
        names = _nrrd_list(path, handle) if value.startswith("LIST") else (_fs_name(value),)
        if "-" in names:  # teem reads "-" from standard input
            raise InputError(f"cannot read {path.name}: its header names standard input ('-') as a data file")
        return names


def _teem_pattern(value: str) -> bool:
    """teem's test for a file-name pattern: its first '%' (not '%%') is followed by digits and 'd'."""
    at = 0
    while True:
        percent = value.find("%", at)
        if percent < 0 or percent + 1 >= len(value):
            return False
        if value[percent + 1] != "%":
            break
        at = percent + 2
    end = percent + 1
    while end < len(value) and value[end] in "0123456789":
        end += 1
    return end < len(value) and value[end] == "d"


def _nrrd_pattern(path: Path, value: str) -> tuple[str, ...]:
    """``data file: name%03d.raw min max step [subdim]``: min, min + step, ... up to max."""
    pattern = re.split(r"[ \t]", value, maxsplit=1)[0]
    match = _NRRD_PATTERN_NUMBERS.match(value, len(pattern))
    if match is None:
        raise InputError(f"cannot read {path.name}: its data file pattern '{value}' must be followed by min max step")
    low, high, step = (int(g) for g in match.groups())
    if step == 0 or (high - low) * step < 0:
        raise InputError(f"cannot read {path.name}: its data file pattern '{value}' never reaches {high} from {low} by {step}")
    count = (high - low) // step + 1
    if count > MAX_DATA_FILES:
        raise _too_many(path, count)
    return _numbered(pattern, range(low, high + (1 if step > 0 else -1), step), path, value)


def _nrrd_list(path: Path, handle) -> tuple[str, ...]:
    """``data file: LIST [subdim]``: every line after it to the end of the file (teem skips a last
    line without a line end)."""
    names: list[str] = []
    while True:
        line = handle.readline(_MAX_LIST_LINE + 2)
        if not line.endswith(b"\n"):
            if len(line) > _MAX_LIST_LINE:
                raise InputError(f"cannot read {path.name}: a line of its list of data files is longer than {_MAX_LIST_LINE} characters")
            return tuple(names)
        if len(names) >= MAX_DATA_FILES:
            raise _too_many(path, len(names) + 1)
        names.append(_fs_name(line.rstrip(b"\r\n").decode("latin-1")))


