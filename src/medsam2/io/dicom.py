"""Reading a DICOM series folder exactly, or refusing it.

GDCM leaves out files it cannot parse and ITK then reads the rest at whatever spacing the
remaining positions give (5 slices at 3 mm with one broken file became 4 slices at 4 mm, with only
a raw ITK warning). Here every file that looks like DICOM must belong to a series, every slice of
the chosen series must be readable, and the slice positions along the normal must be evenly
spaced; otherwise the series is refused, naming the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsam2.errors import InputError
from medsam2.io.guard import itk_messages, itk_note, read_header
from medsam2.io.limits import ReadLimits

#: files with these suffixes, or with the DICM magic at byte 128, are taken to be DICOM
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: slice gaps may differ by this fraction of the median gap (plus 0.01 mm) before the series is uneven
_SPACING_TOLERANCE = 0.01
#: slice positions may run this many degrees off the slice normal before the series is tilted
_TILT_TOLERANCE_DEGREES = 0.1
#: the SOP classes of DICOM Segmentation and RT Structure Set objects (not images)
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass(frozen=True)
class SlicePosition:
    """One file of a series and where its slice lies along the series' normal (mm)."""

    path: Path
    position_mm: float
    #: Image Position (Patient) of the slice's first voxel, mm (LPS)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: unit normal of the slice plane (row x column direction cosines)
    normal: tuple[float, float, float] = (0.0, 0.0, 1.0)


def looks_like_dicom(path: Path) -> bool:
    """A DICOM suffix, or the DICM magic at byte 128."""
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _names(paths: list[Path], most: int = 4) -> str:
    shown = ", ".join(p.name for p in paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _numbers(reader: sitk.ImageFileReader, key: str, count: int) -> tuple[float, ...] | None:
    if not reader.HasMetaDataKey(key):
        return None
    try:
        values = tuple(float(v) for v in reader.GetMetaData(key).strip().split("\\"))
    except ValueError:
        return None
    return values if len(values) == count else None


def slice_positions(files: list[Path]) -> list[SlicePosition]:
    """Each file's position along the normal of its image plane, in the order given.

    Raises:
        InputError: a file cannot be read, or has no image position / orientation (several files).
    """
    positions = []
    unreadable = []
    for path in files:
        try:
            _, reader = read_header(path)
        except InputError:
            unreadable.append(path)
            continue
        origin = _numbers(reader, "0020|0032", 3)
        orientation = _numbers(reader, "0020|0037", 6)
        if origin is None or orientation is None:
            if len(files) > 1:
                raise InputError(
                    f"{path} has no image position or orientation (0020,0032 / 0020,0037): the slice spacing of the series "
                    "cannot be known; convert the series to NIfTI with its spacing first"
                )
            positions.append(SlicePosition(path, 0.0))
            continue
        normal = np.cross(orientation[:3], orientation[3:])
        positions.append(SlicePosition(path, float(np.dot(normal, origin)), origin, tuple(float(v) for v in normal)))
    if unreadable:
        raise InputError(f"the DICOM series has unreadable files: {_names(unreadable)}; replace or remove them")
    return positions


def check_no_tilt(positions: list[SlicePosition], folder: Path) -> None:
    """Refuse a series whose slices are not stacked along their normal (CT gantry tilt): ITK would
    place such slices on a sheared grid that no label map's geometry can describe."""
    if len(positions) < 2:
        return
    ordered = sorted(positions, key=lambda p: p.position_mm)
    run = np.subtract(ordered[-1].origin, ordered[0].origin)
    length = float(np.linalg.norm(run))
    if length < 1e-6:
        return
    cosine = abs(float(np.dot(run / length, ordered[0].normal)))
    degrees = float(np.degrees(np.arccos(min(1.0, cosine))))
    if degrees > _TILT_TOLERANCE_DEGREES:
        raise InputError(
            f"the DICOM series in {folder} is tilted: its slices are stacked {degrees:.1f} degrees off their normal "
            "(gantry tilt); medsam2 does not resample it: resample it to an untilted grid first (dcm2niix, 3D Slicer)"
        )


def check_single_frame(path: Path) -> None:
    """Refuse a DICOM file that is a segmentation or structure set, or holds many frames (enhanced
    multi-frame CT/MR, whose per-frame geometry ITK does not read).

    Raises:
        InputError: one line naming the file and what to do.
    """
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "NumberOfFrames", "Modality"])
    except Exception:  # noqa: BLE001 - pydicom raises many kinds; ITK gives the precise message later
        return
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class == SEGMENTATION_STORAGE:
        raise InputError(f"{path} is a DICOM Segmentation, not an image; give the series it segments, and this file as --mask")
    if sop_class == RT_STRUCTURE_SET_STORAGE:
        raise InputError(f"{path} is an RT Structure Set, not an image; give the series it outlines")
    try:
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        raise InputError(
            f"{path} is a multi-frame DICOM image ({frames} frames); medsam2 reads single-frame series: "
            "convert it to NIfTI first (dcm2niix) or export it as one file per slice"
        )


def check_even_spacing(positions: list[SlicePosition], folder: Path) -> None:
    """Refuse a series with duplicate, missing or unevenly spaced slices, naming the files around the gap."""
    if len(positions) < 3:
        if len(positions) == 2 and abs(positions[1].position_mm - positions[0].position_mm) < 1e-4:
            raise InputError(f"{positions[0].path.name} and {positions[1].path.name} in {folder} lie at the same position")
        return
    ordered = sorted(positions, key=lambda p: p.position_mm)
    gaps = np.diff([p.position_mm for p in ordered])
    for index, gap in enumerate(gaps):
        if gap < 1e-4:
            raise InputError(
                f"{ordered[index].path.name} and {ordered[index + 1].path.name} in {folder} lie at the same position "
                f"({ordered[index].position_mm:.3f} mm): duplicate slices or two series in one folder"
            )
    typical = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - typical)))
    if abs(gaps[worst] - typical) > _SPACING_TOLERANCE * typical + 0.01:
        raise InputError(
            f"the DICOM series in {folder} is unevenly spaced: {gaps[worst]:.3f} mm between {ordered[worst].path.name} and "
            f"{ordered[worst + 1].path.name}, {typical:.3f} mm elsewhere (a slice missing or unreadable?); "
            "medsam2 does not guess a spacing"
        )


@dataclass
class DicomSeries:
    """One series read from a folder: the ITK image, its modality, what the reader noticed, and the
    files in the image's slice (z) order."""

    image: sitk.Image
    modality: str | None
    warnings: list[str]
    files: list[Path]


def read_dicom_series(folder: Path, limits: ReadLimits) -> DicomSeries:
    """The largest series in ``folder``, read exactly.

    Raises:
        InputError: no series; files that look like DICOM but belong to no series (unreadable or
            truncated); a slice that cannot be read; duplicate, missing or unevenly spaced slices;
            a decoded size over ``limits``.
    """
    reader = sitk.ImageSeriesReader()
    with itk_messages():
        try:
            series_ids = reader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError:
            raise InputError(f"cannot list DICOM series in {folder}") from None
        if not series_ids:
            raise InputError(f"{folder} is a folder but holds no DICOM series; pass a scan file or a DICOM folder")
        files_per_series = {sid: [Path(f) for f in reader.GetGDCMSeriesFileNames(str(folder), sid)] for sid in series_ids}
    placed = {p.resolve() for files in files_per_series.values() for p in files}
    strays = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.resolve() not in placed and looks_like_dicom(p)
    )
    if strays:
        raise InputError(
            f"{folder} holds DICOM files that cannot be read (truncated or corrupt): {_names(strays)}; "
            "replace or remove them, so that no slice is silently missing"
        )
    series = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    files = files_per_series[series]
    check_single_frame(files[0])
    positions = slice_positions(files)
    check_no_tilt(positions, folder)
    check_even_spacing(positions, folder)
    first, _ = read_header(files[0])
    limits.check(first.declared_bytes * len(files), folder)
    reader.SetFileNames([str(f) for f in files])
    reader.MetaDataDictionaryArrayUpdateOn()
    with itk_messages() as messages:
        try:
            image = reader.Execute()
        except RuntimeError:
            broken = [f for f in files if not _readable(f)]
            which = f": {_names(broken)}" if broken else ""
            raise InputError(f"cannot read the DICOM series in {folder}: a file is broken or truncated{which}") from None
    modality = None
    if reader.HasMetaDataKey(0, "0008|0060"):
        modality = reader.GetMetaData(0, "0008|0060").strip() or None
    notes = [itk_note(m) for m in messages]
    if len(series_ids) > 1:
        notes.append(f"{folder} holds {len(series_ids)} DICOM series; read the largest ({series})")
    return DicomSeries(image, modality, notes, files)


def _readable(path: Path) -> bool:
    with itk_messages():
        try:
            sitk.ReadImage(str(path))
        except RuntimeError:
            return False
    return True
