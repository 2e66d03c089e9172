"""RT Structure Sets (RT-STRUCT): a label map written as closed planar contours, one ROI per object.

No well-kept library writes one (highdicom has no RT-STRUCT; rt-utils has had no release since
2023 and needs OpenCV's GUI build), so the IOD's modules are filled with pydicom here: Patient and
General Study copied from the source series, RT Series, General Equipment, Structure Set (the
referenced frame of reference, study, series and every slice's instance), ROI Contour and RT ROI
Observations, SOP Common. Each slice's contours come from scikit-image's marching squares at
level 0.5 (the boundary halfway between inside and outside voxel centres), in patient mm (LPS).
A hole is a contour inside another on the same slice: read with the even-odd rule, as planning
systems read nested contours.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np

from medsam2.errors import InputError
from medsam2.io.dicom import RT_STRUCTURE_SET_STORAGE
from medsam2.io.dicom_codes import anatomy_code
from medsam2.io.dicom_seg import DERIVED_SERIES_NUMBER, Provenance
from medsam2.io.dicom_source import SourceSeries, checked_source, voxel_to_patient
from medsam2.io.seg_nrrd import LabelEntry

#: the retired Detached Study Management SOP class that RT-STRUCT's referenced study item names
_STUDY_COMPONENT_CLASS = "1.2.840.10008.3.1.2.3.1"
#: contour points closer than this (voxels) to the line through their neighbours are dropped
_SIMPLIFY_VOXELS = 0.05


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours of a 2D mask (rows, cols): each (N, 2) of (row, col) voxel coordinates,
    first point not repeated at the end."""
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(mask.astype(np.float32), 1)
    contours = []
    for contour in find_contours(padded, 0.5):
        points = approximate_polygon(contour - 1.0, tolerance=_SIMPLIFY_VOXELS)
        if len(points) > 1 and np.allclose(points[0], points[-1]):
            points = points[:-1]
        if len(points) >= 3:
            contours.append(points)
    return contours


def _item(**values):
    from pydicom import Dataset

    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def build_rtstruct(labels: np.ndarray, volume, entries: list[LabelEntry], provenance: Provenance, source: SourceSeries | None = None):
    """An RT Structure Set dataset of ``labels`` (z, y, x) on ``volume``'s source series.

    Raises:
        UsageError: the volume was not read from DICOM, or there is no object to write.
    """
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    source = checked_source(volume, entries, source, "an RT-STRUCT", "ROI")
    first = source.datasets[0]
    now = datetime.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100")
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription"):
        setattr(ds, key, first.get(key, ""))
    ds.StudyInstanceUID = source.study_uid
    ds.FrameOfReferenceUID = source.frame_of_reference_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), DERIVED_SERIES_NUMBER
    ds.SeriesDescription = f"{provenance.name} RTSTRUCT"[:64]
    ds.OperatorsName = ""
    ds.Manufacturer, ds.ManufacturerModelName = provenance.name, f"{provenance.name} {provenance.backbone}"[:64]
    ds.SoftwareVersions = provenance.version
    ds.InstanceNumber = 1
    ds.StructureSetLabel = f"{provenance.name}"[:16]
    ds.StructureSetName = f"{provenance.name} {provenance.backbone}"[:64]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    contour_images = [
        _item(ReferencedSOPClassUID=sop_class, ReferencedSOPInstanceUID=sop_instance)
        for sop_class, sop_instance in zip(source.sop_class_uids, source.sop_instance_uids)
    ]
    series_item = _item(SeriesInstanceUID=source.series_uid, ContourImageSequence=contour_images)
    study_item = _item(
        ReferencedSOPClassUID=_STUDY_COMPONENT_CLASS, ReferencedSOPInstanceUID=source.study_uid,
        RTReferencedSeriesSequence=[series_item],
    )
    ds.ReferencedFrameOfReferenceSequence = [
        _item(FrameOfReferenceUID=source.frame_of_reference_uid, RTReferencedStudySequence=[study_item])
    ]
    rois, roi_contours, observations = [], [], []
    for number, entry in enumerate(entries, start=1):
        name = entry.name or f"label {entry.value}"
        rois.append(_item(
            ROINumber=entry.value, ReferencedFrameOfReferenceUID=source.frame_of_reference_uid, ROIName=name[:64],
            ROIGenerationAlgorithm="SEMIAUTOMATIC",
            ROIGenerationDescription=f"{provenance.name} {provenance.version} ({provenance.backbone})"[:64],
        ))
        roi_contour = _item(ReferencedROINumber=entry.value, ROIDisplayColor=list(entry.colour))
        contours = _roi_contours(labels == entry.value, volume, source)
        if contours:
            roi_contour.ContourSequence = contours
        roi_contours.append(roi_contour)
        observations.append(_observation(number, entry))
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _roi_contours(mask: np.ndarray, volume, source: SourceSeries) -> list:
    """The closed planar contours of one ROI's (z, y, x) mask, slice by slice, in patient mm, each
    referencing its slice's instance."""
    contours = []
    for z in range(mask.shape[0]):
        if not mask[z].any():
            continue
        for points in slice_contours(mask[z]):
            ijk = np.column_stack([points[:, 1], points[:, 0], np.full(len(points), float(z))])
            xyz = voxel_to_patient(volume, ijk)
            contours.append(_item(
                ContourImageSequence=[_item(
                    ReferencedSOPClassUID=source.sop_class_uids[z], ReferencedSOPInstanceUID=source.sop_instance_uids[z],
                )],
                ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(points),
                ContourNumber=len(contours) + 1, ContourData=[f"{v:.4f}" for v in xyz.ravel()],
            ))
    return contours


def _observation(number: int, entry: LabelEntry):
    """An ROI's observation: an organ, with its anatomy code where its name is a known one."""
    code = anatomy_code(entry.name)
    observation = _item(ObservationNumber=number, ReferencedROINumber=entry.value, RTROIInterpretedType="ORGAN", ROIInterpreter="")
    if code.known:
        observation.RTROIIdentificationCodeSequence = [_item(
            CodeValue=code.type.value, CodingSchemeDesignator=code.type.scheme_designator, CodeMeaning=code.type.meaning,
        )]
    return observation


def write_rtstruct(
    labels: np.ndarray, volume, path: str | os.PathLike, entries: list[LabelEntry], provenance: Provenance, overwrite: bool = False,
    source: SourceSeries | None = None,
) -> Path:
    """Write ``labels`` as an RT-STRUCT at ``path``, atomically (see :func:`build_rtstruct`)."""
    from medsam2.io.atomic import atomic_write

    dataset = build_rtstruct(labels, volume, entries, provenance, source)
    return atomic_write(Path(path), lambda tmp: dataset.save_as(tmp, enforce_file_format=True), ".dcm", overwrite=overwrite)


def read_rtstruct(path: str | os.PathLike, reference) -> np.ndarray:
    """An RT-STRUCT rasterised on ``reference``'s grid: each ROI's contours filled (even-odd rule)
    with its ROI number as the label (z, y, x, uint16).

    Raises:
        InputError: not an RT-STRUCT, or a contour that does not lie on one of the reference's slices.
    """
    import pydicom
    from skimage.draw import polygon2mask

    ds = pydicom.dcmread(path)
    if str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE:
        raise InputError(f"{path} is not an RT Structure Set")
    direction = np.asarray(reference.direction, dtype=float).reshape(3, 3)
    to_index = np.linalg.inv(direction * np.asarray(reference.spacing, dtype=float))
    labels = np.zeros(reference.shape, dtype=np.uint16)
    rows_cols = reference.shape[1:]
    for roi in ds.get("ROIContourSequence", []):
        filled = np.zeros(reference.shape, dtype=bool)
        for contour in roi.get("ContourSequence", []):
            xyz = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            ijk = (xyz - np.asarray(reference.origin, dtype=float)) @ to_index.T
            z = int(round(float(np.mean(ijk[:, 2]))))
            if not 0 <= z < reference.shape[0] or np.abs(ijk[:, 2] - z).max() > 0.01:
                raise InputError(f"a contour of ROI {roi.ReferencedROINumber} in {path} does not lie on a slice of the input")
            filled[z] ^= polygon2mask(rows_cols, ijk[:, [1, 0]])
        labels[filled] = int(roi.ReferencedROINumber)
    return labels
