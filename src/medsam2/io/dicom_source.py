"""The DICOM instances a label map's slices came from: what a SEG or RT-STRUCT output references.

A volume read from a DICOM series keeps its files in slice (z) order
(:attr:`medsam2.io.volume.Volume.dicom_files`). Their headers are read again here, and each
slice's Image Position (Patient) is checked against the volume's own geometry, so that a
segment's frame or a contour is tied to exactly the instance whose pixels it was drawn on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam2.errors import InputError, UsageError

#: a slice may lie this far (mm) from where the volume's geometry puts it
_POSITION_TOLERANCE_MM = 0.01


@dataclass(frozen=True)
class SourceSeries:
    """The headers (no pixel data) of a volume's DICOM instances, one per slice in z order."""

    datasets: list  # list[pydicom.Dataset]
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str

    @property
    def sop_instance_uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.datasets]

    @property
    def sop_class_uids(self) -> list[str]:
        return [str(ds.SOPClassUID) for ds in self.datasets]


def checked_source(volume, entries: list, source: SourceSeries | None, what: str, part: str) -> SourceSeries:
    """What a DICOM writer needs before it starts: ``source`` (or the volume's, read now) and at
    least one entry.

    Raises:
        UsageError: the volume was not read from DICOM, or ``entries`` is empty ("needs at least one ``part``").
    """
    source = source if source is not None else source_series(volume, what)
    if not entries:
        raise UsageError(f"the label map holds no object; {what} needs at least one {part}")
    return source


def voxel_to_patient(volume, ijk: np.ndarray) -> np.ndarray:
    """Continuous voxel indices (N, 3) in ITK order (x=column, y=row, z=slice) -> LPS mm (N, 3)."""
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    scaled = np.asarray(ijk, dtype=float) * np.asarray(volume.spacing, dtype=float)
    return scaled @ direction.T + np.asarray(volume.origin, dtype=float)


def source_series(volume, what: str = "a DICOM SEG") -> SourceSeries:
    """The source instances of ``volume``, checked against its geometry.

    Arguments:
        volume: a :class:`~medsam2.io.volume.Volume` read from a DICOM series (or one DICOM file).
        what: the output being written, for the error message.

    Raises:
        UsageError: the volume was not read from DICOM (nothing to reference).
        InputError: a file is gone or changed, the files are not one series, or a slice does not
            lie where the volume's geometry puts it.
    """
    import pydicom

    files: tuple[Path, ...] = tuple(volume.dicom_files)
    if not files:
        source = f" {volume.source}" if volume.source else ""
        raise UsageError(
            f"the input{source} is not a DICOM series, so {what} has no source instances to reference; "
            "write .nii.gz, .nrrd or .seg.nrrd instead, or segment the DICOM series itself"
        )
    if len(files) != volume.shape[0]:
        raise InputError(f"the volume has {volume.shape[0]} slices but {len(files)} source DICOM files")
    datasets = []
    for path in files:
        try:
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (OSError, pydicom.errors.InvalidDicomError) as error:
            raise InputError(f"cannot read the source DICOM file {path} again: {error}") from None
    first = datasets[0]
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if key not in first:
            raise InputError(f"{files[0]} has no {key}; {what} cannot reference it")
    frame_of_reference = str(first.get("FrameOfReferenceUID", ""))
    if not frame_of_reference:
        raise InputError(f"{files[0]} has no FrameOfReferenceUID; {what} cannot be placed in its patient space")
    for path, ds in zip(files, datasets):
        if ds.get("SeriesInstanceUID") != first.SeriesInstanceUID:
            raise InputError(f"{path} belongs to another series than {files[0]}; {what} references one series")
    if len(files) > 1 or "ImagePositionPatient" in first:
        expected = voxel_to_patient(volume, np.array([[0.0, 0.0, float(z)] for z in range(len(files))]))
        for z, (path, ds) in enumerate(zip(files, datasets)):
            position = np.array([float(v) for v in ds.get("ImagePositionPatient", [np.nan] * 3)])
            if not np.all(np.abs(position - expected[z]) <= _POSITION_TOLERANCE_MM):
                raise InputError(
                    f"slice {z} of the volume lies at {np.round(expected[z], 3).tolist()} mm but its file {path.name} "
                    f"says {np.round(position, 3).tolist()}; the series' geometry is not what was segmented"
                )
    return SourceSeries(datasets, str(first.StudyInstanceUID), str(first.SeriesInstanceUID), frame_of_reference)
