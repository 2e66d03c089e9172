"""Reading scans and 2D images into a :class:`Volume`, and writing label maps with its geometry.

Everything medical goes through SimpleITK (NIfTI, DICOM series, NRRD, MHA/MHD); 2D photographs
and screenshots (PNG, JPEG, TIFF, BMP) go through Pillow and become one-slice volumes.
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, UnidentifiedImageError

from medsam2.errors import ArgumentTypeError, InputError, OutputError, UsageError
from medsam2.io.atomic import atomic_write, atomic_write_pair
from medsam2.io.detached import HEADER_SUFFIXES, check_data_files
from medsam2.io.dicom import check_single_frame, read_dicom_series
from medsam2.io.formats import DICOM_KINDS
from medsam2.io.guard import ImageHeader, check_declared_size, itk_messages, itk_note, nifti_nonfinite_mask, read_header
from medsam2.io.limits import MAX_DEFLATE_RATIO, ReadLimits, check_input_path, resolve_path

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
#: what ``save_mask`` writes a .dcm as: a DICOM Segmentation (the default) or an RT Structure Set
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


def _read_as(path: Path, suffix: str, time_index: int | None, limits: ReadLimits, confine_to: Path | None = None) -> Volume:
    """Read ``path`` as if it were named with ``suffix`` (a link in a temporary folder); a header's
    data files are checked on ``path`` itself before the link is made."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="medsam2-") as folder:
        link = Path(folder) / f"image{suffix}"
        link.symlink_to(path.resolve())
        volume = load_volume(link, time_index=time_index, limits=limits, confine_to=confine_to)
    volume.source = str(path)
    if volume.dicom_files:
        volume.dicom_files = (path,)
    return volume


def load_volume(
    path: str | os.PathLike, time_index: int | None = None, limits: ReadLimits | None = None, *, confine_to: Path | None = None,
) -> Volume:
    """Read a 3D scan, a DICOM series folder or a 2D image, exactly as stored, or refuse it.

    Arguments:
        path: a NIfTI/NRRD/MHA/MHD/DICOM file, a folder holding one DICOM series, or a 2D image.
        time_index: for a 4D input, which 3D volume to take (0-based); required for 4D input.
        limits: the cap on the decoded size (default: :class:`~medsam2.io.guard.ReadLimits`, 8 GiB).
        confine_to: the folder a detached header (.mhd, .nhdr, an .mha or .nrrd naming a data
            file) and every data file it names must lie in, links followed; None reads them
            wherever the header says (see :func:`~medsam2.io.detached.check_data_files`). The files
            read are in :attr:`Volume.data_files`.

    Returns:
        A :class:`Volume`; its array is (z, y, x) (or (1, y, x, 3) for a colour 2D image). NaN and
        infinite voxels are kept as stored (NIfTI included).

    Raises:
        ArgumentTypeError: ``path`` is not a str or path, ``time_index`` not an int.
        InputError: the path does not exist or is not a regular file or folder; the file cannot be
            read, is truncated, declares more voxels than it can hold or than ``limits`` allow, is
            complex-valued, has no finite voxel, or is 4D without ``time_index``; a DICOM series has
            unreadable files, missing slices or uneven spacing; a header names a data file that is
            missing, not a regular file, or (with ``confine_to``) outside that folder.
        UsageError: the suffix is not one medsam2 reads.
    """
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise ArgumentTypeError(f"load_volume takes a path (str or pathlib.Path), not {type(path).__name__}")
    if time_index is not None and (not isinstance(time_index, (int, np.integer)) or isinstance(time_index, bool)):
        raise ArgumentTypeError(f"time_index must be an integer or None, not {time_index!r}")
    limits = ReadLimits() if limits is None else limits
    path = Path(path)
    check_input_path(path)
    if path.is_dir():
        series = read_dicom_series(path, limits)
        volume = _volume_from_sitk(series.image, path, time_index, series.modality)
        volume.warnings.extend(series.warnings)
        volume.dicom_files = tuple(series.files)
        return volume
    suffix = suffix_of(path)
    if suffix not in SUPPORTED_SUFFIXES:
        sniffed = sniff_suffix(path)
        if sniffed is not None:
            if sniffed in HEADER_SUFFIXES:  # on the file itself: the link is made in a temporary folder
                check_data_files(path, sniffed, confine_to)
            return _read_as(path, sniffed, time_index, limits, confine_to)
        with itk_messages():
            itk_io = sitk.ImageFileReader().GetImageIOFromFileName(str(path))
        if not itk_io:
            raise UsageError(
                f"cannot tell what kind of image {path} is (neither its suffix '{suffix or path.name}' nor its content); "
                f"medsam2 reads {', '.join(SUPPORTED_SUFFIXES)}, a DICOM folder, and what else SimpleITK reads"
            )
    if suffix in IMAGE_SUFFIXES:
        return _load_2d_image(path, limits)
    if suffix in (".dcm", ".dicom"):
        check_single_frame(path)
    # before ITK reads the header: teem opens an NRRD header's data files as it reads it
    data_files = check_data_files(path, suffix, confine_to) if suffix in HEADER_SUFFIXES else ()
    header, _ = read_header(path)
    if header.is_complex:
        raise InputError(f"{path} is complex-valued; take its magnitude or one part first (medsam2 reads real images)")
    check_declared_size(path, suffix, header, limits)
    nonfinite = _scan_nifti(path, suffix, header) if suffix in (".nii", ".nii.gz") else False
    with itk_messages() as messages:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            raise InputError(f"cannot read {path}: not a valid {suffix} image or the file is truncated") from None
    modality = _metadata(image, "0008|0060")
    volume = _volume_from_sitk(image, path, time_index, modality)
    volume.warnings.extend(itk_note(m) for m in messages)
    if nonfinite is not False:  # found in the scan (or not knowable from it): where, from nibabel
        _restore_nonfinite(volume, path, time_index)
    if suffix in (".dcm", ".dicom") and volume.shape[0] == 1:
        volume.dicom_files = (path,)
    volume.data_files = data_files
    return volume


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


def _restore_nonfinite(volume: Volume, path: Path, time_index: int | None) -> None:
    """Put back the NaN and infinite voxels that SimpleITK's NIfTI reader turned into 0."""
    nonfinite = nifti_nonfinite_mask(path)
    if nonfinite is None:
        return
    if nonfinite.ndim == 4:
        nonfinite = nonfinite[time_index or 0]
    if nonfinite.ndim == 2:
        nonfinite = nonfinite[None]
    if nonfinite.shape != volume.shape or volume.array.dtype.kind != "f":
        raise InputError(f"cannot read {path}: it stores NaN or infinite voxels that SimpleITK's reader would hide")
    volume.array[nonfinite] = np.nan
    if nonfinite.all():
        raise InputError(f"{path} holds no finite voxel (every value is NaN or infinite); there is nothing to segment")


#: NIfTI-1 datatype codes whose NaN and infinite voxels SimpleITK's reader turns into 0
_NIFTI_FLOAT_DTYPES = {16: "f4", 64: "f8"}


def _scan_nifti(path: Path, suffix: str, header: ImageHeader) -> bool | None:
    """One pass over a NIfTI file's data, before ITK reads it: refuse a truncated file (ITK fills
    the missing voxels silently) and tell whether floating-point data hold NaN or infinite values.

    Returns:
        True or False for a NIfTI-1 file (False also when it is not floating point); None when the
        layout is not NIfTI-1's, so that the caller asks nibabel.

    Raises:
        InputError: the file is truncated or its compressed stream is corrupt.
    """
    try:
        with (gzip.open(path, "rb") if suffix == ".nii.gz" else path.open("rb")) as handle:
            head = handle.read(352)
            if len(head) < 348:
                raise InputError(f"cannot read {path}: the file is truncated (no complete NIfTI header)")
            order = next((o for o in "<>" if struct.unpack(o + "i", head[:4])[0] == 348), None)
            if order is None:  # NIfTI-2 or another layout: a size check only
                needed, dtype, offset = 352 + header.declared_bytes, None, 352
            else:
                vox_offset = struct.unpack(order + "f", head[108:112])[0]
                offset = max(352, int(vox_offset)) if np.isfinite(vox_offset) else 352
                needed = offset + header.declared_bytes
                code = _NIFTI_FLOAT_DTYPES.get(struct.unpack(order + "h", head[70:72])[0])
                dtype = np.dtype(order + code) if code else None
            if dtype is None and suffix == ".nii":
                size = path.stat().st_size
                nonfinite = False
            else:
                size, nonfinite, pending = len(head), False, b""
                while size < needed and (chunk := handle.read(1 << 22)):
                    start = max(0, offset - size)  # bytes of this chunk that belong to the data
                    size += len(chunk)
                    if dtype is not None and not nonfinite:
                        data = pending + chunk[start : max(start, len(chunk) - max(0, size - needed))]
                        usable = len(data) - len(data) % dtype.itemsize
                        nonfinite = not np.isfinite(np.frombuffer(data[:usable], dtype)).all()
                        pending = data[usable:]
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {path}: the file is truncated or corrupt ({exc})") from exc
    if size < needed:
        raise InputError(f"cannot read {path}: the file is truncated ({size} bytes of data, the header promises {needed})")
    return None if order is None else nonfinite


def _metadata(image: sitk.Image, key: str) -> str | None:
    if image.HasMetaDataKey(key):
        value = image.GetMetaData(key).strip()
        return value or None
    return None


def _volume_from_sitk(image: sitk.Image, path: Path, time_index: int | None, modality: str | None) -> Volume:
    dim = image.GetDimension()
    if dim == 4:
        n_volumes = image.GetSize()[3]
        if time_index is None:
            size = "x".join(str(s) for s in image.GetSize())
            raise InputError(
                f"{path} is 4D (size {size}): pick one 3D volume with --time-index N (0..{n_volumes - 1})"
            )
        if not 0 <= time_index < n_volumes:
            raise InputError(f"--time-index {time_index} is outside 0..{n_volumes - 1} for {path}")
        size = list(image.GetSize())
        size[3] = 0
        extractor = sitk.ExtractImageFilter()
        extractor.SetSize(size)
        extractor.SetIndex([0, 0, 0, time_index])
        extractor.SetDirectionCollapseToStrategy(extractor.DIRECTIONCOLLAPSETOSUBMATRIX)
        image = extractor.Execute(image)
        dim = 3
    elif time_index is not None:
        raise UsageError(f"--time-index was given but {path} is not 4D")
    if dim not in (2, 3):
        raise InputError(f"{path} has {dim} dimensions; medsam2 reads 2D, 3D and 4D images")
    if image.GetNumberOfComponentsPerPixel() > 1:
        if dim == 2 and image.GetNumberOfComponentsPerPixel() in (3, 4):
            array = sitk.GetArrayFromImage(image)[None, ..., :3]
            spacing = tuple(image.GetSpacing()) + (1.0,)
            return Volume(array=array, spacing=spacing, source=str(path), is_2d=True)  # type: ignore[arg-type]
        raise InputError(
            f"{path} has {image.GetNumberOfComponentsPerPixel()} values per voxel (a vector or 4D image): "
            "pick one component first"
        )
    if dim == 2:
        array = sitk.GetArrayFromImage(image)[None]
        spacing2 = image.GetSpacing()
        origin2 = image.GetOrigin()
        d = image.GetDirection()
        return Volume(
            array=array,
            spacing=(spacing2[0], spacing2[1], 1.0),
            origin=(origin2[0], origin2[1], 0.0),
            direction=(d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0),
            modality=modality,
            source=str(path),
            is_2d=True,
        )
    array = sitk.GetArrayFromImage(image)
    return Volume(
        array=array,
        spacing=tuple(image.GetSpacing()),  # type: ignore[arg-type]
        origin=tuple(image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(image.GetDirection()),
        modality=modality,
        source=str(path),
    )


#: bytes per band of Pillow's modes (the others are 8-bit)
_PIL_BAND_BYTES = {"I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def _load_2d_image(path: Path, limits: ReadLimits) -> Volume:
    """A PNG/JPEG/TIFF/BMP as a one-slice volume; its size is checked from the header first."""
    try:
        with warnings.catch_warnings():
            # Pillow warns on large images and raises past twice its pixel limit; the size is
            # checked here against the file and the cap instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                declared = width * height * len(img.getbands()) * _PIL_BAND_BYTES.get(img.mode, 1)
                if img.format == "PNG" and declared > path.stat().st_size * MAX_DEFLATE_RATIO:
                    raise InputError(
                        f"cannot read {path}: it declares {width}x{height} pixels, more than its {path.stat().st_size} bytes can hold"
                    )
                limits.check(declared, path)
                img.load()
                array = _pil_array(img)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"cannot read {path}: Pillow calls it a decompression bomb (far more pixels than an image should have)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {path}: not a valid image or the file is truncated") from exc
    if array.ndim == 4 and array.shape[-1] != 3:
        raise InputError(f"{path} has {array.shape[-1]} channels; expected grey or RGB")
    if array.size == 0:
        raise InputError(f"{path} has no pixels")
    return Volume(array=array, source=str(path), is_2d=True, spacing_known=False)


def _pil_array(img: Image.Image) -> np.ndarray:
    """(1, rows, cols) grey or (1, rows, cols, 3) colour."""
    if img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA"):
        rgb = np.asarray(img.convert("RGB"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[None, ..., 0].copy()
        return rgb[None].copy()
    if img.mode == "1":
        return np.asarray(img.convert("L"))[None].copy()
    return np.asarray(img)[None].copy()


def read_mask(path: str | os.PathLike, reference: Volume, segment: int | None = None) -> np.ndarray:
    """Read a mask file (any format :func:`load_volume` reads, or a DICOM SEG) that must match ``reference``.

    Arguments:
        path: the mask file.
        reference: the volume it belongs to.
        segment: for a DICOM SEG, one segment number (its voxels become 1); None reads every
            segment with its label value. Only a SEG has segments.

    Returns:
        Integer array (z, y, x) with the reference's voxel grid.

    Raises:
        InputError: unreadable file; a SEG of another series.
        PromptError: a size that differs from the reference's (a prompt that does not fit: exit 2),
            or ``segment`` for a file that is not a DICOM SEG.
    """
    from medsam2.errors import PromptError
    from medsam2.io.dicom_seg import is_dicom_seg, read_dicom_seg

    if suffix_of(Path(path)) in (".dcm", ".dicom", "") and is_dicom_seg(path):
        return read_dicom_seg(path, reference, segment)
    if segment is not None:
        raise PromptError(f"--mask-segment {segment} picks a segment of a DICOM SEG, and {path} is not one")
    # a mask is at most the reference's voxels x 8 bytes x 3 channels: refuse a larger header before reading it
    limits = ReadLimits(max(1 << 20, int(np.prod(reference.shape)) * 24))
    mask_volume = load_volume(path, limits=limits)
    array = mask_volume.array
    if array.ndim == 4:
        array = array[..., 0]
    if tuple(array.shape) != reference.shape:
        raise PromptError(
            f"mask {path} has size {_size_text(array.shape)} but the image has {_size_text(reference.shape)}; "
            "a mask must have the image's voxel grid (or give a 2D mask of one slice as --mask SLICE:FILE)"
        )
    return np.asarray(array)


def _size_text(shape_zyx: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in reversed(tuple(shape_zyx)[:3]))


def check_output_path(
    output: str | os.PathLike, inputs: list[str | os.PathLike], overwrite: bool, n_slices: int | None = None
) -> Path:
    """Check, before any work, that ``output`` can be written.

    Arguments:
        output: the label map's path.
        inputs: paths that must not be overwritten.
        overwrite: whether an existing output may be replaced.
        n_slices: the label map's slice count where known: a 2D format holds one slice.

    Raises:
        OutputError: output equals an input, is a folder, exists without ``overwrite``, or its
            folder does not exist or is not writable.
        UsageError: the output suffix is not one medsam2 writes, or is 2D for a 3D label map.
    """
    if not isinstance(output, (str, os.PathLike)) or isinstance(output, bytes):
        raise ArgumentTypeError(f"an output path is a str or pathlib.Path, not {type(output).__name__}")
    out = Path(output)
    if out.is_dir():
        raise OutputError(f"the output {out} is a folder; give a file name such as {out / 'mask.nii.gz'}")
    suffix = suffix_of(out)
    if suffix not in WRITABLE_SUFFIXES:
        lossy = " (JPEG is lossy and would change label values)" if suffix in (".jpg", ".jpeg") else ""
        raise UsageError(f"cannot write '{out.name}'{lossy}: name the output with one of {', '.join(WRITABLE_SUFFIXES)}")
    if n_slices is not None and n_slices > 1 and suffix in WRITABLE_2D_SUFFIXES:
        raise UsageError(f"a {suffix} file holds one slice but the label map has {n_slices}; write it as .nii.gz, .nrrd or .mha")
    resolved = resolve_path(out)
    for item in inputs:
        if item and resolve_path(Path(item)) == resolved:
            raise OutputError(f"the output {out} is an input; choose another output path")
    if resolved.is_dir():
        raise OutputError(f"the output {out} is a folder; give a file name such as {out / 'mask.nii.gz'}")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    parent = resolved.parent
    if not parent.is_dir():
        raise OutputError(f"the output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"the output folder {parent} is not writable")
    return out


def check_labels(labels: object, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """A label map as an unsigned integer array (uint8, or uint16 past label 255).

    Raises:
        ArgumentTypeError: not an array of numbers.
        UsageError: labels that are negative, above 65535 or not whole numbers, or a shape other than ``shape``.
    """
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"a label map is an integer array (z, y, x), not {type(labels).__name__}") from None
    if array.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"a label map holds integers, not {array.dtype}")
    if shape is not None and array.shape != tuple(shape):
        raise UsageError(f"label map shape {array.shape} does not match the volume {tuple(shape)}")
    if array.size == 0:
        return array.astype(np.uint8)
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and np.array_equal(array, np.round(array))):
        raise UsageError("a label map holds whole numbers; got fractional, NaN or infinite values")
    low, high = array.min(), array.max()
    if low < 0 or high > MAX_LABEL_VALUE:
        raise UsageError(f"labels must be 0..{MAX_LABEL_VALUE}; this label map holds {int(low) if low < 0 else int(high)}")
    return array.astype(np.uint8 if high < 256 else np.uint16)


def save_mask(
    labels: np.ndarray, reference: Volume, path: str | os.PathLike, overwrite: bool = False, names: dict[int, str | None] | None = None,
    dicom_kind: str = "dicom-seg", provenance=None, source=None,
) -> Path:
    """Write a label map with exactly the reference's geometry, atomically.

    Arguments:
        labels: integer labels 0..65535 (z, y, x), same grid as ``reference``; 0 is background.
        reference: the volume the labels belong to (size, spacing, origin, direction copied).
        path: output file; its suffix picks the format (NIfTI, NRRD, MHA, MHD, PNG, TIFF, BMP). A
            2D file stores one object as 0/255 and several objects with their label values.
        overwrite: replace an existing file.
        names: {label: name} of the structures, for a ``.seg.nrrd`` (3D Slicer segmentation with
            named, coloured segments) or a ``.dcm``; default: every label in the map, named "label N".
        dicom_kind: what a ``.dcm`` is: "dicom-seg" (a DICOM Segmentation) or "rtstruct" (an RT
            Structure Set); either references ``reference``'s source DICOM instances, so the
            reference must have been read from a DICOM series.
        provenance: the :class:`~medsam2.io.dicom_seg.Provenance` a ``.dcm`` names (default:
            medsam2's version, backbone unknown).
        source: the reference's :class:`~medsam2.io.dicom_source.SourceSeries` where already read
            (default: read from ``reference.dicom_files`` now).

    The data go to a temporary file in the target folder. Without ``overwrite`` it is hard-linked
    to the final name, which fails if a file appeared there meanwhile (two writers: exactly one
    wins); with ``overwrite`` it is renamed over it. An interrupted run leaves no partial output.
    The file's mode follows the umask.

    Raises:
        ArgumentTypeError: ``reference`` is not a Volume, ``labels`` not an array.
        UsageError: labels out of 0..65535 or not whole numbers, or a suffix medsam2 does not write.
        OutputError: the output exists (without ``overwrite``), is an input or cannot be written.
    """
    if not isinstance(reference, Volume):
        raise ArgumentTypeError(f"save_mask's reference is the Volume the labels belong to, not {type(reference).__name__}")
    array = check_labels(labels, reference.shape)
    out = check_output_path(path, [reference.source] if reference.source else [], overwrite, n_slices=array.shape[0])
    suffix = suffix_of(out)
    if suffix == ".dcm":
        return _write_dicom(array, reference, out, names, dicom_kind, provenance, overwrite, source)
    if suffix == ".seg.nrrd":
        from medsam2.io.seg_nrrd import label_entries, seg_nrrd_image

        if reference.is_2d:
            raise UsageError("a .seg.nrrd holds a 3D segmentation; write a 2D label map as .png or .nii.gz")
        entries = label_entries(names if names is not None else {int(v): None for v in np.unique(array) if v > 0})
        image = seg_nrrd_image(array, reference.spacing, reference.origin, reference.direction, entries)
        atomic_write(out, lambda tmp: _write_image(image, tmp), ".nrrd", overwrite=overwrite)
        return out
    if suffix == ".mhd":
        atomic_write_pair(out, lambda tmp: _write_sitk(array, reference, tmp), overwrite)
    elif suffix in IMAGE_SUFFIXES:
        atomic_write(out, lambda tmp: _write_2d(array, tmp, suffix), suffix, overwrite=overwrite)
    else:
        atomic_write(out, lambda tmp: _write_sitk(array, reference, tmp), suffix, overwrite=overwrite)
    return out


def _write_dicom(array: np.ndarray, reference: Volume, out: Path, names, kind: str, provenance, overwrite: bool, source) -> Path:
    from medsam2._version import __version__
    from medsam2.io.dicom_seg import Provenance, write_dicom_seg
    from medsam2.io.rtstruct import write_rtstruct
    from medsam2.io.seg_nrrd import label_entries

    if kind not in DICOM_KINDS:
        raise UsageError(f"a .dcm label map is one of {', '.join(DICOM_KINDS)}, not {kind!r}")
    # every named object is a segment or ROI, an object that was not found an empty one
    present = {int(v): None for v in np.unique(array) if v > 0}
    entries = label_entries({**present, **names} if names is not None else present)
    writer = write_dicom_seg if kind == "dicom-seg" else write_rtstruct
    return writer(array, reference, out, entries, provenance or Provenance(__version__, backbone="unknown"), overwrite=overwrite,
                  source=source)


def _write_sitk(labels: np.ndarray, reference: Volume, path: Path) -> None:
    if reference.is_2d:
        image = sitk.GetImageFromArray(labels[0])
        image.SetSpacing(reference.spacing[:2])
        image.SetOrigin(reference.origin[:2])
        d = reference.direction
        image.SetDirection((d[0], d[1], d[3], d[4]))
    else:
        image = sitk.GetImageFromArray(labels)
        image.SetSpacing(reference.spacing)
        image.SetOrigin(reference.origin)
        image.SetDirection(reference.direction)
    _write_image(image, path)


def _write_image(image: sitk.Image, path: Path) -> None:
    with itk_messages():
        sitk.WriteImage(image, str(path), useCompression=True)


#: what a 2D image file stores for a label map of one object
ONE_OBJECT_2D_VALUE = 255


def two_d_values(labels: np.ndarray) -> np.ndarray:
    """What a 2D image file stores for a label map: one object as 0/255 (it shows white on black,
    as oneprompt and the field's 2D datasets store masks); several objects keep their label values."""
    values = np.unique(labels)
    foreground = values[values > 0]
    if foreground.size == 1 and labels.dtype == np.uint8:
        return np.where(labels > 0, np.uint8(ONE_OBJECT_2D_VALUE), np.uint8(0))
    return labels


def _write_2d(labels: np.ndarray, path: Path, suffix: str) -> None:
    fmt = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}[suffix]
    Image.fromarray(two_d_values(labels)[0]).save(path, format=fmt)
