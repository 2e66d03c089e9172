"""The :class:`Volume` type (a scan or image with its physical geometry), the file suffixes medsam2
knows, and what a file's name or first bytes say it is. Reading is :mod:`medsam2.io.readers`,
writing :mod:`medsam2.io.writers`.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam2.errors import ArgumentTypeError, InputError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
#: the other files SimpleITK reads by name (ITK-SNAP's GIPL, VTK legacy, MINC, Analyze, MRC, Bio-Rad, LSM, ...)
OTHER_ITK_SUFFIXES = (".gipl", ".gipl.gz", ".vtk", ".mnc", ".mnc2", ".hdr", ".img", ".img.gz", ".mrc", ".pic", ".lsm",
                      ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
SUPPORTED_SUFFIXES = VOLUME_SUFFIXES + OTHER_ITK_SUFFIXES + IMAGE_SUFFIXES
#: what a file's first bytes say it is, for files whose suffix does not (checked in this order)
_MAGIC = (
    (0, b"\x89PNG\r\n\x1a\n", ".png"), (0, b"GIF8", ".gif"), (0, b"\xff\xd8\xff", ".jpg"), (0, b"BM", ".bmp"),
    (0, b"II*\x00", ".tif"), (0, b"MM\x00*", ".tif"), (0, b"NRRD000", ".nrrd"), (128, b"DICM", ".dcm"),
    (344, b"n+1\x00", ".nii"), (4, b"n+2\x00", ".nii"),
)
#: what a label map can be written as (JPEG is lossy); .dcm is a DICOM SEG or RT-STRUCT of a DICOM input
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff", ".bmp", ".dcm")
#: 2D formats: they hold one slice
WRITABLE_2D_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
#: the largest label a label map holds (uint16)
MAX_LABEL_VALUE = 65535


@dataclass
class Volume:
    """A scan or image with its physical geometry.

    Attributes:
        array: voxel values, shape (z, y, x) as NumPy reads ITK images, or (z, y, x, 3) for a
            colour 2D image (z == 1). Never modified in place by medsam2.
        spacing: voxel size in mm, ITK order (x, y, z).
        origin: position of voxel (0, 0, 0) in mm, ITK order (x, y, z).
        direction: 3x3 direction cosines, row-major, as ``sitk.Image.GetDirection()``.
        modality: DICOM modality ("CT", "MR", ...) where the file says so, else None.
        source: where it was read from ("" when built in memory).
        is_2d: True when read from a 2D image file (written back as a 2D image).
        warnings: what the reader noticed that the user should know (several DICOM series, ITK's
            remarks), carried into the segmentation report.
        spacing_known: False where the file does not state a spacing (PNG, JPEG, BMP, GIF): the
            report then gives 2D areas in pixels, not mm^2.
        dicom_files: the DICOM files the slices were read from, one per slice in z order (empty
            where the input is not DICOM): what a DICOM SEG or RT-STRUCT output references.
        data_files: the detached data files a header (.mhd, .nhdr; an .mha or .nrrd that names
            one) pulled its voxels from, resolved, in the order read; empty where the voxels are
            in the file itself.

    Raises:
        ArgumentTypeError: ``array`` is not a NumPy array of numbers, or the geometry is not numbers.
        InputError: the array is not (z, y, x) or (z, y, x, 3), is empty or complex, or the
            geometry is not finite (spacing must be positive).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    modality: str | None = None
    source: str = ""
    is_2d: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    spacing_known: bool = True
    dicom_files: tuple[Path, ...] = ()
    data_files: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):
            raise ArgumentTypeError(
                f"a Volume's array must be a NumPy array (z, y, x), not {type(self.array).__name__}; use np.asarray(...)"
            )
        kind = self.array.dtype.kind
        if kind == "c":
            raise InputError("the image is complex-valued; take its magnitude (np.abs) or one part first")
        if kind not in "biuf":
            raise ArgumentTypeError(f"a Volume's array must hold numbers, not {self.array.dtype}")
        if self.array.ndim == 2:
            raise InputError(f"a Volume's array is (z, y, x); got a 2D array {self.array.shape}: use array[None] for one image")
        if not (self.array.ndim == 3 or (self.array.ndim == 4 and self.array.shape[-1] == 3)):
            raise InputError(f"a Volume's array is (z, y, x) or (z, y, x, 3) for colour; got shape {self.array.shape}")
        if self.array.size == 0:
            raise InputError(f"the image has no voxels (shape {self.array.shape})")
        self.spacing = _geometry(self.spacing, 3, "spacing", positive=True)  # type: ignore[assignment]
        self.origin = _geometry(self.origin, 3, "origin")  # type: ignore[assignment]
        self.direction = _geometry(self.direction, 9, "direction")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) size of the voxel grid (colour channels excluded)."""
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def is_color(self) -> bool:
        return self.array.ndim == 4

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (spacing is in mm)."""
        return float(np.prod(self.spacing)) / 1000.0


def _geometry(values, count: int, what: str, positive: bool = False) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"a Volume's {what} must be {count} numbers, not {values!r}") from None
    if len(numbers) != count:
        raise InputError(f"a Volume's {what} must be {count} numbers, got {len(numbers)}")
    if not all(np.isfinite(numbers)) or (positive and min(numbers) <= 0):
        raise InputError(f"a Volume's {what} must be finite{' and positive' if positive else ''}, got {numbers}")
    return numbers


def suffix_of(path: Path) -> str:
    """Lower-case suffix, with ``.nii.gz``, ``.gipl.gz`` (any ``.X.gz``) and ``.seg.nrrd`` kept whole."""
    name = path.name.lower()
    suffixes = [s.lower() for s in Path(name).suffixes]
    if len(suffixes) >= 2 and (suffixes[-1] == ".gz" or name.endswith(".seg.nrrd")):
        return "".join(suffixes[-2:])
    return path.suffix.lower()


def size_text(shape_zyx: tuple[int, ...]) -> str:
    """A (z, y, x[, c]) shape as a user reads it: ``XxYxZ``."""
    return "x".join(str(s) for s in reversed(tuple(shape_zyx)[:3]))


def sniff_suffix(path: Path) -> str | None:
    """What a file's content says it is (a suffix such as ".nii.gz" or ".png"), for files whose
    name does not say it: the magic bytes of PNG, GIF, JPEG, BMP, TIFF, NRRD, DICOM and NIfTI, a
    MetaImage text header, gzip-compressed NIfTI; None when it is none of these."""
    try:
        with path.open("rb") as handle:
            head = handle.read(352)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                inner = handle.read(352)
            found = _magic_suffix(inner)
            return found + ".gz" if found in (".nii", ".nrrd") else None
    except (OSError, EOFError, zlib.error):
        return None
    if head.lstrip()[:10].lower().startswith((b"objecttype", b"ndims")):
        return ".mha"
    return _magic_suffix(head)


def _magic_suffix(head: bytes) -> str | None:
    for offset, magic, suffix in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return suffix
    return None


def data_file_names(volume: Volume) -> list[str]:
    """:attr:`Volume.data_files` as a user reads them: relative to the header's folder where they
    lie in it, absolute elsewhere."""
    home = Path(os.path.realpath(Path(volume.source).parent)) if volume.source else None
    return [str(f.relative_to(home)) if home is not None and f.is_relative_to(home) else str(f) for f in volume.data_files]


def data_files_note(volume: Volume) -> str | None:
    """A report line naming the data files a header read its voxels from outside its own folder
    (None where there are none): the command line reads them where the header says."""
    names = [name for name in data_file_names(volume) if Path(name).is_absolute()]
    if not names:
        return None
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"the header {Path(volume.source).name} reads its voxels from: {', '.join(names[:3])}{more}"
