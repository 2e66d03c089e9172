"""DICOM Segmentation (SEG) objects: a label map written as one, and one read back as a label map.

Written with highdicom: one segment per object (its name as the segment label, SNOMED CT codes
from :mod:`medsam2.io.dicom_codes`, its colour, algorithm type SEMIAUTOMATIC and the algorithm's
name, version and parameters), binary, frames referencing the source series' instances. Segment
numbers run 1..N in label order; each segment's tracking ID ``medsam2 label V`` keeps the label
value V, so a label map with labels {1, 3, 7} reads back as {1, 3, 7}.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam2.errors import InputError
from medsam2.io.dicom import SEGMENTATION_STORAGE
from medsam2.io.dicom_codes import anatomy_code
from medsam2.io.dicom_source import SourceSeries, checked_source, source_series
from medsam2.io.seg_nrrd import LabelEntry

_TRACKING_ID = re.compile(r"^medsam2 label (\d+)$")
#: the series number medsam2 gives the derived series it writes
DERIVED_SERIES_NUMBER = 9901


@dataclass(frozen=True)
class Provenance:
    """Who made a DICOM output: the algorithm's name and version and how it was run."""

    version: str
    backbone: str = "litemedsam"
    checkpoint: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    name: str = "medsam2"

    def algorithm_parameters(self) -> dict[str, str]:
        """The parameters a SEG's algorithm identification lists (backbone, checkpoint file name, ...)."""
        found = {"backbone": self.backbone, **self.parameters}
        if self.checkpoint:
            found["checkpoint"] = Path(self.checkpoint).name
        return found


def _frames(labels: np.ndarray, entries: list[LabelEntry]) -> np.ndarray:
    """Labels -> segment numbers 1..N in the entries' order (0 stays background)."""
    lookup = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.uint16)
    for number, entry in enumerate(entries, start=1):
        if entry.value < lookup.size:
            lookup[entry.value] = number
    return lookup[labels]


def build_dicom_seg(labels: np.ndarray, volume, entries: list[LabelEntry], provenance: Provenance, source: SourceSeries | None = None):
    """A highdicom Segmentation of ``labels`` (z, y, x) on ``volume``'s source series.

    Raises:
        UsageError: the volume was not read from DICOM, or there is no object to write.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    source = checked_source(volume, entries, source, "a DICOM SEG", "segment")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=provenance.name, family=codes.cid7162.ArtificialIntelligence, version=provenance.version,
        parameters=provenance.algorithm_parameters(),
    )
    descriptions = []
    for number, entry in enumerate(entries, start=1):
        code = anatomy_code(entry.name)
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=(entry.name or f"label {entry.value}")[:64],
            segmented_property_category=code.category, segmented_property_type=code.type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=f"medsam2 label {entry.value}",
            display_color=hd.color.CIELabColor.from_rgb(*entry.colour),
        )
        if code.laterality is not None:
            from pydicom import Dataset

            modifier = Dataset()
            modifier.CodeValue = code.laterality.value
            modifier.CodingSchemeDesignator = code.laterality.scheme_designator
            modifier.CodeMeaning = code.laterality.meaning
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
        descriptions.append(description)
    first = source.datasets[0]
    return hd.seg.Segmentation(
        source_images=source.datasets,
        pixel_array=_frames(labels, entries),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=DERIVED_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=provenance.name,
        manufacturer_model_name=f"{provenance.name} {provenance.backbone}"[:64],
        software_versions=provenance.version,
        device_serial_number="0",
        content_description=f"Segmentation by {provenance.name} {provenance.version}"[:64],
        series_description=f"{provenance.name} SEG of {first.get('SeriesDescription', 'series')}"[:64],
        omit_empty_frames=True,
    )


def write_dicom_seg(
    labels: np.ndarray, volume, path: str | os.PathLike, entries: list[LabelEntry], provenance: Provenance, overwrite: bool = False,
    source: SourceSeries | None = None,
) -> Path:
    """Write ``labels`` as a DICOM SEG at ``path``, atomically (see :func:`build_dicom_seg`)."""
    from medsam2.io.atomic import atomic_write

    segmentation = build_dicom_seg(labels, volume, entries, provenance, source)
    out = Path(path)
    return atomic_write(out, lambda tmp: segmentation.save_as(tmp), ".dcm", overwrite=overwrite)


def is_dicom_seg(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file holding a DICOM Segmentation."""
    import pydicom

    candidate = Path(path)
    if not candidate.is_file():
        return False
    try:
        header = pydicom.dcmread(candidate, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - anything pydicom cannot read is not a SEG
        return False
    return str(header.get("SOPClassUID", "")) == SEGMENTATION_STORAGE


def read_dicom_seg(path: str | os.PathLike, reference, segment: int | None = None) -> np.ndarray:
    """A DICOM SEG as a label map (z, y, x) on ``reference``'s grid.

    Arguments:
        path: the SEG file.
        reference: the :class:`~medsam2.io.volume.Volume` of the series the SEG references.
        segment: one segment number (its voxels become 1), or None for every segment, each with
            its label value (the tracking ID medsam2 writes) or else its segment number.

    Raises:
        InputError: not a SEG, unreadable, it references another series than ``reference`` or
            instances that are not in it, its segments overlap, or ``segment`` is not one of its
            segments.
        UsageError: ``reference`` was not read from DICOM.
    """
    import highdicom as hd

    if not is_dicom_seg(path):
        raise InputError(f"{path} is not a DICOM Segmentation")
    try:
        seg = hd.seg.segread(path)
    except Exception as error:  # noqa: BLE001 - highdicom/pydicom raise many kinds for a broken file
        raise InputError(f"cannot read the DICOM SEG {path}: {str(error).splitlines()[0]}") from None
    source = source_series(reference, "a DICOM SEG mask")
    referenced = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    if referenced and source.series_uid not in referenced:
        raise InputError(
            f"the DICOM SEG {path} segments series {sorted(referenced)[0]}, not the input's series {source.series_uid}"
        )
    referenced_instances = {uid for _, _, uid in seg.get_source_image_uids()}
    missing = referenced_instances - set(source.sop_instance_uids)
    if missing:
        raise InputError(f"the DICOM SEG {path} references {len(missing)} instances that are not in the input series")
    numbers = list(seg.get_segment_numbers())
    if segment is not None and segment not in numbers:
        raise InputError(f"the DICOM SEG {path} has segments {', '.join(map(str, numbers))}, not {segment}")
    chosen = [segment] if segment is not None else numbers
    labels = np.zeros(reference.shape, dtype=np.uint16)
    for number in chosen:
        value = 1 if segment is not None else _label_value(seg, number)
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=source.sop_instance_uids, segment_numbers=[number], combine_segments=False,
            assert_missing_frames_are_empty=False,
        )[..., 0] >= 0.5
        if mask.shape != labels.shape:
            raise InputError(
                f"the DICOM SEG {path} has frames of {mask.shape[2]}x{mask.shape[1]}, the input {reference.shape[2]}x{reference.shape[1]}"
            )
        overlap = mask & (labels > 0)
        if overlap.any():
            raise InputError(f"segments of the DICOM SEG {path} overlap (segment {number}); pick one with --mask-segment N")
        labels[mask] = value
    return labels.astype(np.uint8) if labels.max(initial=0) < 256 else labels


def segment_names(path: str | os.PathLike) -> dict[int, str]:
    """{label value: segment label} of a DICOM SEG (label values as :func:`read_dicom_seg` gives them)."""
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    names = {}
    for item in header.get("SegmentSequence", []):
        match = _TRACKING_ID.match(str(item.get("TrackingID", "")))
        names[int(match.group(1)) if match else int(item.SegmentNumber)] = str(item.get("SegmentLabel", ""))
    return {value: name for value, name in names.items() if name}


def _label_value(seg, number: int) -> int:
    description = seg.get_segment_description(number)
    match = _TRACKING_ID.match(str(description.get("TrackingID", "")))
    return int(match.group(1)) if match else number
