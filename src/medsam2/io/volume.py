"""Reading scans and 2D images into a :class:`Volume`, and writing label maps with its geometry.

Everything medical goes through SimpleITK (NIfTI, DICOM series, NRRD, MHA/MHD); 2D photographs
and screenshots (PNG, JPEG, TIFF, BMP) go through Pillow and become one-slice volumes.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, UnidentifiedImageError

from medsam2.errors import InputError, OutputError, UsageError
from medsam2.io.atomic import atomic_write

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SUPPORTED_SUFFIXES = VOLUME_SUFFIXES + IMAGE_SUFFIXES


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
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    modality: str | None = None
    source: str = ""
    is_2d: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

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


def suffix_of(path: Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def load_volume(path: str | os.PathLike, time_index: int | None = None) -> Volume:
    """Read a 3D scan, a DICOM series folder or a 2D image.

    Arguments:
        path: a NIfTI/NRRD/MHA/MHD/DICOM file, a folder holding one DICOM series, or a 2D image.
        time_index: for a 4D input, which 3D volume to take (0-based); required for 4D input.

    Returns:
        A :class:`Volume`; its array is (z, y, x) (or (1, y, x, 3) for a colour 2D image).

    Raises:
        InputError: the path does not exist, cannot be read, is truncated, or is 4D without
            ``time_index``.
        UsageError: the suffix is not one medsam2 reads.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if path.is_dir():
        return _load_dicom_series(path, time_index)
    suffix = suffix_of(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise UsageError(
            f"unsupported file type '{suffix or path.name}' for {path}; "
            f"expected one of {', '.join(SUPPORTED_SUFFIXES)} or a DICOM folder"
        )
    if suffix in IMAGE_SUFFIXES:
        return _load_2d_image(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read {path}: not a valid {suffix} image or the file is truncated") from exc
    _check_complete(path, suffix, image)
    modality = _metadata(image, "0008|0060")
    return _volume_from_sitk(image, path, time_index, modality)


def _check_complete(path: Path, suffix: str, image: sitk.Image) -> None:
    """SimpleITK's NIfTI reader fills a truncated file's missing voxels silently; refuse it."""
    if suffix not in (".nii", ".nii.gz"):
        return
    needed = image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel()
    try:
        if suffix == ".nii.gz":
            size = 0
            with gzip.open(path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    size += len(chunk)
        else:
            size = path.stat().st_size
        with (gzip.open(path, "rb") if suffix == ".nii.gz" else path.open("rb")) as handle:
            header = handle.read(348)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {path}: the file is truncated or corrupt ({exc})") from exc
    if len(header) >= 74 and 348 in (struct.unpack("<i", header[:4])[0], struct.unpack(">i", header[:4])[0]):
        order = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
        bitpix = struct.unpack(order + "h", header[72:74])[0]
        if bitpix > 0 and size < 348 + needed * bitpix // 8:
            raise InputError(f"cannot read {path}: the file is truncated ({size} bytes, the header promises more)")


def _metadata(image: sitk.Image, key: str) -> str | None:
    if image.HasMetaDataKey(key):
        value = image.GetMetaData(key).strip()
        return value or None
    return None


def _load_dicom_series(folder: Path, time_index: int | None) -> Volume:
    reader = sitk.ImageSeriesReader()
    try:
        series_ids = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:
        raise InputError(f"cannot list DICOM series in {folder}") from exc
    if not series_ids:
        raise InputError(f"{folder} is a folder but holds no DICOM series; pass a scan file or a DICOM folder")
    files_per_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    series = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    reader.SetFileNames(files_per_series[series])
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read the DICOM series in {folder}: a file is broken or truncated") from exc
    modality = None
    if reader.HasMetaDataKey(0, "0008|0060"):
        modality = reader.GetMetaData(0, "0008|0060").strip() or None
    volume = _volume_from_sitk(image, folder, time_index, modality)
    if len(series_ids) > 1:
        volume.metadata["warning"] = (
            f"{folder} holds {len(series_ids)} DICOM series; read the largest ({series})"
        )
    return volume


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


def _load_2d_image(path: Path) -> Volume:
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA"):
                rgb = np.asarray(img.convert("RGB"))
                if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
                    array = rgb[None, ..., 0].copy()
                else:
                    array = rgb[None].copy()
            elif img.mode == "1":
                array = np.asarray(img.convert("L"))[None].copy()
            else:
                array = np.asarray(img)[None].copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"cannot read {path}: not a valid image or the file is truncated") from exc
    if array.ndim == 4 and array.shape[-1] != 3:
        raise InputError(f"{path} has {array.shape[-1]} channels; expected grey or RGB")
    return Volume(array=array, source=str(path), is_2d=True)


def read_mask(path: str | os.PathLike, reference: Volume) -> np.ndarray:
    """Read a mask file (any format :func:`load_volume` reads) that must match ``reference``.

    Returns:
        Integer array (z, y, x) with the reference's voxel grid.

    Raises:
        InputError: unreadable file or a size that differs from the reference's.
    """
    mask_volume = load_volume(path)
    array = mask_volume.array
    if array.ndim == 4:
        array = array[..., 0]
    if tuple(array.shape) != reference.shape:
        raise InputError(
            f"mask {path} has size {_size_text(array.shape)} but the image has {_size_text(reference.shape)}; "
            "a mask must have the image's voxel grid"
        )
    return np.asarray(array)


def _size_text(shape_zyx: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in reversed(tuple(shape_zyx)[:3]))


def check_output_path(output: str | os.PathLike, inputs: list[str | os.PathLike], overwrite: bool) -> Path:
    """Check, before any work, that ``output`` can be written.

    Raises:
        OutputError: output equals an input, exists without ``overwrite``, or its folder does not
            exist or is not writable.
        UsageError: the output suffix is not one medsam2 writes.
    """
    out = Path(output)
    suffix = suffix_of(out)
    if suffix not in SUPPORTED_SUFFIXES or suffix == ".dcm":
        raise UsageError(
            f"cannot write '{out.name}': name the output with one of .nii.gz, .nii, .nrrd, .mha, .mhd, "
            ".png, .tif, .bmp"
        )
    resolved = out.resolve()
    for item in inputs:
        if Path(item).resolve() == resolved:
            raise OutputError(f"the output {out} is an input; choose another output path")
    if out.is_dir():
        raise OutputError(f"the output {out} is a folder; give a file name such as {out / 'mask.nii.gz'}")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    parent = resolved.parent
    if not parent.is_dir():
        raise OutputError(f"the output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"the output folder {parent} is not writable")
    return out


def save_mask(labels: np.ndarray, reference: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a label map with exactly the reference's geometry, atomically.

    Arguments:
        labels: integer labels (z, y, x), same grid as ``reference``; 0 is background.
        reference: the volume the labels belong to (size, spacing, origin, direction copied).
        path: output file; its suffix picks the format (NIfTI, NRRD, MHA, MHD, PNG, TIFF, BMP).
        overwrite: replace an existing file.

    The data go to a temporary file in the target folder that is renamed into place, so an
    interrupted run leaves no partial output.
    """
    out = check_output_path(path, [reference.source] if reference.source else [], overwrite)
    labels = np.asarray(labels)
    if labels.shape != reference.shape:
        raise OutputError(f"label map shape {labels.shape} does not match the volume {reference.shape}")
    max_label = int(labels.max()) if labels.size else 0
    dtype = np.uint8 if max_label < 256 else np.uint16
    suffix = suffix_of(out)
    if suffix == ".mhd":
        # The header names its .raw file, so write the pair under their final names in a
        # temporary folder beside the target, then move both into place.
        try:
            tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.resolve().parent))
        except OSError as exc:
            raise OutputError(f"cannot write in {out.resolve().parent}: {exc.strerror or exc}") from exc
        try:
            _write_sitk(labels.astype(dtype), reference, tmp_dir / out.name)
            for written in sorted(tmp_dir.iterdir(), key=lambda p: p.suffix == ".mhd"):
                os.replace(written, out.resolve().parent / written.name)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return out
    if suffix in IMAGE_SUFFIXES:
        atomic_write(out, lambda tmp: _write_2d(labels.astype(dtype), tmp, suffix), suffix)
    else:
        atomic_write(out, lambda tmp: _write_sitk(labels.astype(dtype), reference, tmp), suffix)
    return out


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
    sitk.WriteImage(image, str(path), useCompression=True)


def _write_2d(labels: np.ndarray, path: Path, suffix: str) -> None:
    if labels.shape[0] != 1:
        raise OutputError(f"a {suffix} output holds one slice but the label map has {labels.shape[0]}; use .nii.gz")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}[suffix]
    if fmt == "JPEG":
        raise OutputError("JPEG is lossy and would change label values; write the mask as .png")
    Image.fromarray(labels[0]).save(path, format=fmt)
