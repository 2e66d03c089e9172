"""Reading scans and 2D images into a :class:`~medsam2.io.volume.Volume`, and masks onto one.

Everything medical goes through SimpleITK (NIfTI, DICOM series, NRRD, MHA/MHD); 2D photographs
and screenshots (PNG, JPEG, TIFF, BMP) go through Pillow and become one-slice volumes. Each reader
checks what it is given before anything is allocated (see :mod:`medsam2.io.guard`).
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, UnidentifiedImageError

from medsam2.errors import ArgumentTypeError, InputError, UsageError
from medsam2.io.detached import HEADER_SUFFIXES, check_data_files
from medsam2.io.dicom import check_single_frame, read_dicom_series
from medsam2.io.guard import ImageHeader, check_declared_size, itk_messages, itk_note, nifti_nonfinite_mask, read_header
from medsam2.io.limits import MAX_DEFLATE_RATIO, ReadLimits, check_input_path
from medsam2.io.volume import IMAGE_SUFFIXES, SUPPORTED_SUFFIXES, Volume, size_text, sniff_suffix, suffix_of


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


def read_mask(path: str | os.PathLike, reference: Volume, segment: int | None = None, *, confine_to: Path | None = None) -> np.ndarray:
    """Read a mask file (any format :func:`load_volume` reads, or a DICOM SEG) that must match ``reference``.

    Arguments:
        path: the mask file.
        reference: the volume it belongs to.
        segment: for a DICOM SEG, one segment number (its voxels become 1); None reads every
            segment with its label value. Only a SEG has segments.
        confine_to: a detached header's data files must lie in this folder (as :func:`load_volume`).

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
    mask_volume = load_volume(path, limits=limits, confine_to=confine_to)
    array = mask_volume.array
    if array.ndim == 4:
        array = array[..., 0]
    if tuple(array.shape) != reference.shape:
        raise PromptError(
            f"mask {path} has size {size_text(array.shape)} but the image has {size_text(reference.shape)}; "
            "a mask must have the image's voxel grid (or give a 2D mask of one slice as --mask SLICE:FILE)"
        )
    return np.asarray(array)
