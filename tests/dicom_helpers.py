"""DICOM series for the tests: the bundled CT written as CT Image Storage files with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medsam2.cli.demo import sample_paths


def write_series(
    image: sitk.Image, folder: Path, names: list[str] | None = None, study_uid: str | None = None,
    series_uid: str | None = None, patient_id: str = "MEDSAM2-TEST",
) -> list[Path]:
    """Write ``image`` (3D, int16) as one CT file per slice in ``folder``; returns the paths, slice order.

    ``names`` gives the file names (any order of slices in the folder); the geometry (positions,
    orientation, spacing) is the image's own, so a direction with a negative slice axis gives a
    series whose slice order runs against the normal.
    """
    folder.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayFromImage(image).astype(np.int16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    for z in range(array.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Medsam2", patient_id, "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 1, z + 1, "medsam2 tests"
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in image.TransformIndexToPhysicalPoint((0, 0, z))]
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [float(image.GetSpacing()[1]), float(image.GetSpacing()[0])]
        ds.SliceThickness = float(image.GetSpacing()[2])
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = 0, 1, 120
        ds.PixelData = array[z].tobytes()
        path = folder / (names[z] if names else f"slice{z:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def bundled_ct_series(folder: Path, first: int = 0, count: int | None = None, **kwargs) -> tuple[list[Path], np.ndarray]:
    """Slices first..first+count-1 of the bundled CT as a DICOM series, and its reference labels there (z, y, x)."""
    ct_path, seg_path = sample_paths()
    ct, seg = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(seg_path))
    end = ct.GetSize()[2] if count is None else first + count
    paths = write_series(sitk.Cast(ct[:, :, first:end], sitk.sitkInt16), folder, **kwargs)
    return paths, sitk.GetArrayFromImage(seg[:, :, first:end])
