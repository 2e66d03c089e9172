"""Writing label maps with a :class:`~medsam2.io.volume.Volume`'s geometry: NIfTI, NRRD, MHA, 3D
Slicer ``.seg.nrrd``, 2D images, and DICOM SEG / RT-STRUCT for DICOM inputs (the formats are
:mod:`medsam2.io.formats`); outputs are checked before any work and written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from medsam2.errors import ArgumentTypeError, OutputError, UsageError
from medsam2.io.atomic import atomic_write, atomic_write_pair
from medsam2.io.formats import DICOM_KINDS
from medsam2.io.guard import itk_messages
from medsam2.io.limits import resolve_path
from medsam2.io.volume import IMAGE_SUFFIXES, MAX_LABEL_VALUE, WRITABLE_2D_SUFFIXES, WRITABLE_SUFFIXES, Volume, suffix_of


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
        image = image_in_geometry(labels, reference)
    _write_image(image, path)


def image_in_geometry(array: np.ndarray, reference: Volume) -> sitk.Image:
    """``array`` ((slices, rows, cols), numpy order) as a SimpleITK image with ``reference``'s
    spacing (mm), origin (mm) and direction."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(reference.spacing)
    image.SetOrigin(reference.origin)
    image.SetDirection(reference.direction)
    return image


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
