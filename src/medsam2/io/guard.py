"""What is checked before and while an input is read, so that it is read exactly or refused.

- Paths: only regular files and folders are read (a FIFO would block forever, a device never
  ends); broken links and link loops are one-line errors.
- Size: the header is read first (image information only, no voxels), and the size it declares is
  compared with what the file can hold (its bytes, times zlib's largest ratio where the data are
  deflated) and with a cap (:class:`ReadLimits`), before anything is allocated.
- Detached data files: a MetaImage or NRRD header may keep its voxels in other files (one, a
  LIST, or a numbered pattern). They are listed from the header as ITK's readers read it
  (:func:`medsam2.io.detached.detached_data_files`) and checked before ITK opens any
  (:func:`medsam2.io.detached.check_data_files`): regular files only, and, where a folder is
  given (the server), only files inside it.
- ITK's own warnings are captured instead of reaching stderr (:func:`itk_messages`); the readers
  turn what they mean into a one-line error or a report warning.
- NaN and infinite voxels in NIfTI files, which SimpleITK's reader turns into 0, are located from
  the data as stored (nibabel) and put back (:func:`nifti_nonfinite_mask`), where the reader's
  streamed pass over the file found any.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsam2.errors import InputError
from medsam2.io.limits import MAX_DEFLATE_RATIO, ReadLimits, byte_size

#: the most a deflate stream (gzip, zlib: NIfTI .gz, NRRD gzip, MHA, PNG) can expand: 1032:1
_COMPLEX_PIXELS = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}

# -- ITK's messages --------------------------------------------------------------------------------
class _CapturingLogger(sitk.LoggerBase):
    """An ITK logger that keeps messages instead of printing them."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def _keep(self, text: str) -> None:
        self.messages.append(" ".join(str(text).split()))

    def DisplayText(self, text):  # noqa: N802 (ITK's names)
        self._keep(text)

    def DisplayErrorText(self, text):  # noqa: N802
        self._keep(text)

    def DisplayWarningText(self, text):  # noqa: N802
        self._keep(text)

    def DisplayGenericOutputText(self, text):  # noqa: N802
        self._keep(text)

    def DisplayDebugText(self, text):  # noqa: N802
        self._keep(text)


_ITK_LOGGER_LOCK = threading.RLock()


#: lines that ITK's C libraries (niftilib, GDCM) print straight to the stderr file descriptor
_LIBRARY_LINE = re.compile(r"^(\*\* ?(ERROR|WARNING)|WARNING: In |ERROR: In |Warning: |GDCM|nifti_)")


@contextmanager
def itk_messages() -> Iterator[list[str]]:
    """Within the block, ITK's warnings go into the yielded list instead of stderr.

    ITK's own messages come through its logger; the C libraries under it (niftilib, GDCM) print
    to file descriptor 2, which is redirected to a temporary file for the block: their lines join
    the list, and any other line written meanwhile is passed on to stderr. Both are process-wide:
    the block holds a lock, and the previous logger and descriptor come back when it ends.
    """
    with _ITK_LOGGER_LOCK:
        logger = _CapturingLogger()
        previous = logger.SetAsGlobalITKLogger()
        capture, saved = None, None
        try:
            sys.stderr.flush()
            capture = tempfile.TemporaryFile()
            saved = os.dup(2)
            os.dup2(capture.fileno(), 2)
        except (OSError, ValueError):  # no descriptor 2 to redirect: the logger still captures
            saved = None
        try:
            yield logger.messages
        finally:
            if saved is not None and capture is not None:
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                for line in capture.read().decode("utf-8", "replace").splitlines():
                    if _LIBRARY_LINE.match(line.strip()):
                        logger.messages.append(line.strip())
                    elif line.strip():
                        print(line, file=sys.stderr)
            if capture is not None:
                capture.close()
            previous.SetAsGlobalITKLogger()


def itk_note(message: str) -> str:
    """ITK's message without its source-file prefix: 'ITK: ImageSeriesReader: Non uniform sampling ...'."""
    text = " ".join(message.split())
    if text.startswith("WARNING: In ") and "): " in text:
        text = text.split("): ", 1)[1]
    return f"ITK: {text}"


# -- headers ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageHeader:
    """What an image file declares, read without its voxels.

    Attributes:
        size: voxels per axis, ITK order (x, y, z[, t]).
        components: values per voxel.
        bytes_per_component: bytes of one value.
        pixel_id: SimpleITK's pixel type id.
    """

    size: tuple[int, ...]
    components: int
    bytes_per_component: int
    pixel_id: int

    @property
    def declared_bytes(self) -> int:
        return int(np.prod(self.size, dtype=np.float64)) * self.components * self.bytes_per_component

    @property
    def is_complex(self) -> bool:
        return self.pixel_id in _COMPLEX_PIXELS


def read_header(path: Path) -> tuple[ImageHeader, sitk.ImageFileReader]:
    """The header of one image file (no voxels read), with the reader that read it.

    Raises:
        InputError: the file is not an image ITK can read.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with itk_messages():
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise InputError(f"cannot read {path}: not a valid {_kind(path)} image or the file is truncated") from None
    pixel_id = reader.GetPixelID()
    component_bytes = np.dtype(_COMPONENT_DTYPES.get(reader.GetPixelIDValue(), np.float64)).itemsize
    header = ImageHeader(tuple(int(s) for s in reader.GetSize()), int(reader.GetNumberOfComponents()), component_bytes, pixel_id)
    return header, reader


def _kind(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else (path.suffix.lower() or "image")


_COMPONENT_DTYPES = {
    sitk.sitkUInt8: np.uint8, sitk.sitkInt8: np.int8, sitk.sitkUInt16: np.uint16, sitk.sitkInt16: np.int16,
    sitk.sitkUInt32: np.uint32, sitk.sitkInt32: np.int32, sitk.sitkUInt64: np.uint64, sitk.sitkInt64: np.int64,
    sitk.sitkFloat32: np.float32, sitk.sitkFloat64: np.float64,
    sitk.sitkComplexFloat32: np.float32, sitk.sitkComplexFloat64: np.float64,
    sitk.sitkVectorUInt8: np.uint8, sitk.sitkVectorInt8: np.int8, sitk.sitkVectorUInt16: np.uint16,
    sitk.sitkVectorInt16: np.int16, sitk.sitkVectorUInt32: np.uint32, sitk.sitkVectorInt32: np.int32,
    sitk.sitkVectorUInt64: np.uint64, sitk.sitkVectorInt64: np.int64, sitk.sitkVectorFloat32: np.float32,
    sitk.sitkVectorFloat64: np.float64,
}


@dataclass(frozen=True)
class StoredData:
    """Where a file keeps its voxels: how many bytes, and how they are encoded.

    Attributes:
        n_bytes: bytes of the stored data (the whole file, or a detached data file).
        ratio: the most one stored byte can decode to (1 raw, 1032 deflate, None: no bound known).
    """

    n_bytes: int
    ratio: float | None


def stored_data(path: Path, suffix: str) -> StoredData:
    """How a NIfTI, NRRD or MetaImage file stores its voxels, from its header text."""
    size = path.stat().st_size
    if suffix.endswith(".gz"):
        return StoredData(size, MAX_DEFLATE_RATIO)
    if suffix == ".gipl":
        return StoredData(size, 1.0)
    if suffix == ".nii":
        return StoredData(size, 1.0)
    if suffix in (".nrrd", ".nhdr"):
        fields = _text_header(path, ":", blank_ends=True)
        encoding = fields.get("encoding", "raw").lower()
        ratio = {"raw": 1.0, "gzip": MAX_DEFLATE_RATIO, "gz": MAX_DEFLATE_RATIO, "ascii": 0.5, "text": 0.5, "txt": 0.5,
                 "hex": 0.5}.get(encoding)
        data_file = fields.get("data file") or fields.get("datafile")
        return StoredData(_detached_size(path, data_file, size), ratio)
    if suffix in (".mha", ".mhd"):
        fields = _text_header(path, "=", blank_ends=False)
        compressed = fields.get("compresseddata", "false").lower() == "true"
        data_file = fields.get("elementdatafile")
        return StoredData(_detached_size(path, data_file, size), MAX_DEFLATE_RATIO if compressed else 1.0)
    return StoredData(size, None)


def _text_header(path: Path, separator: str, blank_ends: bool, limit: int = 1 << 16) -> dict[str, str]:
    """``key<sep>value`` lines of a text header (lower-case keys), up to a blank line or ``limit`` bytes."""
    with path.open("rb") as handle:
        head = handle.read(limit)
    fields: dict[str, str] = {}
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").strip()
        if not line:
            if blank_ends:
                break
            continue
        if line.startswith("#") or separator not in line:
            continue
        key, value = line.split(separator, 1)
        fields.setdefault(key.strip().lower(), value.strip())
        if key.strip().lower() == "elementdatafile":  # MetaImage: the last header field
            break
    return fields


def _detached_size(header: Path, data_file: str | None, own_size: int) -> int:
    """The data file's size where the header names one (None where it is a list or a pattern)."""
    if not data_file or data_file.upper() == "LOCAL":
        return own_size
    if data_file.upper().startswith("LIST") or "%" in data_file or " " in data_file:
        return own_size  # several files: ITK checks them; the cap still holds
    target = Path(data_file) if Path(data_file).is_absolute() else header.parent / data_file
    try:
        return target.stat().st_size
    except OSError:
        raise InputError(f"cannot read {header.name}: its data file '{data_file}' is missing") from None


def check_declared_size(path: Path, suffix: str, header: ImageHeader, limits: ReadLimits) -> None:
    """Refuse a header that declares more than the file can hold, or more than the cap.

    Raises:
        InputError: the declared voxels cannot fit the stored bytes, or exceed ``limits``.
    """
    declared = header.declared_bytes
    stored = stored_data(path, suffix)
    if stored.ratio is not None and declared > stored.n_bytes * stored.ratio:
        size = "x".join(str(s) for s in header.size)
        raise InputError(
            f"cannot read {path}: its header declares {size} voxels ({byte_size(declared)}) but the file holds "
            f"{byte_size(stored.n_bytes)}, which cannot decode to that much; the file is truncated or its header is wrong"
        )
    limits.check(declared, path)


def nifti_nonfinite_mask(path: Path) -> np.ndarray | None:
    """Where a floating-point NIfTI file stores NaN or infinite voxels, as a bool array in NumPy's
    order for ITK images ((t,) z, y, x); None when every stored voxel is finite or the file is not
    floating point. SimpleITK's reader turns these voxels into 0, so they are read from the data as
    stored (nibabel)."""
    import nibabel
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    nibabel_log = logging.getLogger("nibabel.global")  # it logs the header fixes it makes; ITK read the header already
    was_disabled = nibabel_log.disabled
    nibabel_log.disabled = True
    try:
        image = nibabel.load(str(path))
        if image.get_data_dtype().kind not in "fc":
            return None
        data = np.asanyarray(image.dataobj)
    except (ImageFileError, HeaderDataError, OSError, ValueError, EOFError, zlib.error):
        raise InputError(f"cannot read {path}: ITK reads its header but its data are not what the header says") from None
    finally:
        nibabel_log.disabled = was_disabled
    finite = np.isfinite(data)
    if finite.all():
        return None
    return ~finite.T
