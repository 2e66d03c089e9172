"""DICOM SEG and RT-STRUCT outputs: exact round trips on the source grid, dciodvfy-clean files, the
geometry of any series order and direction, SEG masks and references, and bad input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medsam2 import load_volume
from medsam2.cli import main
from medsam2.errors import InputError
from medsam2.io.dicom_seg import Provenance, read_dicom_seg, write_dicom_seg
from medsam2.io.rtstruct import read_rtstruct
from medsam2.io.seg_nrrd import label_entries
from medsam2.io.writers import save_mask
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.dicom_helpers import bundled_ct_series, write_series

ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach", 7: "pancreas"}
SNOMED = {"spleen": "78961009", "kidney_right": "64033007", "kidney_left": "64033007", "liver": "10200004",
          "stomach": "69695003", "pancreas": "15776009", "gallbladder": "28231008"}
DCIODVFY = Path("/usr/bin/dciodvfy")


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory):
    """The bundled CT as a DICOM series (file names in reverse slice order) and its 7 organs."""
    folder = tmp_path_factory.mktemp("ct") / "series"
    names = [f"IM{99 - z:04d}" for z in range(30)]  # no suffix, and sorted names run against the slices
    _, reference = bundled_ct_series(folder, names=names)
    organs = np.where(reference <= 7, reference, 0).astype(np.uint8)
    return folder, organs


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def _dciodvfy_errors(path: Path) -> list[str]:
    if not DCIODVFY.exists():
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed; `make test` installs it")
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_seg_round_trip_is_exact_with_codes_and_references(ct_series, tmp_path):
    folder, organs = ct_series
    volume = load_volume(folder)
    assert len(volume.dicom_files) == 30
    out = save_mask(organs, volume, tmp_path / "organs.dcm", names=ORGANS)
    np.testing.assert_array_equal(read_dicom_seg(out, volume), organs)  # medsam2's reader (highdicom)
    seg = hd.seg.segread(out)
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in volume.dicom_files]
    combined = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # highdicom alone: segment numbers
    np.testing.assert_array_equal(combined, organs)  # labels 1..7 are segments 1..7
    raw = pydicom.dcmread(out)  # pydicom alone: every frame names its source instance and holds its slice
    assert raw.SegmentationType == "BINARY" and raw.Modality == "SEG"
    source = pydicom.dcmread(volume.dicom_files[0], stop_before_pixels=True)
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert raw.StudyInstanceUID == source.StudyInstanceUID and raw.PatientID == source.PatientID
    frames = raw.pixel_array
    for index, frame in enumerate(raw.PerFrameFunctionalGroupsSequence):
        segment = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        instance = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_array_equal(frames[index] > 0, organs[uids.index(instance)] == segment)
    for item in raw.SegmentSequence:
        name = item.SegmentLabel
        assert ORGANS[int(item.SegmentNumber)] == name
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == SNOMED[name]
        assert item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentAlgorithmType == "SEMIAUTOMATIC"
        assert item.SegmentAlgorithmName == "medsam2"
    sides = {item.SegmentLabel: item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning
             for item in raw.SegmentSequence if "kidney" in item.SegmentLabel}
    assert sides == {"kidney_right": "Right", "kidney_left": "Left"}
    assert _dciodvfy_errors(out) == []


def test_seg_keeps_label_values_and_names_unknown_structures_tissue(ct_series, tmp_path):
    folder, organs = ct_series
    volume = load_volume(folder)
    labels = np.where(organs == 1, 3, np.where(organs == 5, 300, 0)).astype(np.uint16)
    out = write_dicom_seg(labels, volume, tmp_path / "two.dcm", label_entries({3: "spleen", 300: "my lesion thing"}),
                          Provenance("9.9", backbone="sam2", checkpoint="/weights/MedSAM2_latest.pt"))
    np.testing.assert_array_equal(read_dicom_seg(out, volume), labels)
    np.testing.assert_array_equal(read_dicom_seg(out, volume, segment=2), labels == 300)
    raw = pydicom.dcmread(out, stop_before_pixels=True)
    assert len(raw.SegmentSequence) == 2
    empty = save_mask(labels, volume, tmp_path / "with_missing.dcm", names={3: "spleen", 300: "lesion", 4: "liver"})
    assert [s.SegmentLabel for s in pydicom.dcmread(empty, stop_before_pixels=True).SegmentSequence] == ["spleen", "liver", "lesion"]
    np.testing.assert_array_equal(read_dicom_seg(empty, volume), labels)  # an object not found: an empty segment
    unknown = raw.SegmentSequence[1]
    assert unknown.SegmentLabel == "my lesion thing"
    assert unknown.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    algorithm = raw.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == "9.9"
    assert "MedSAM2_latest.pt" in algorithm.AlgorithmParameters and "sam2" in algorithm.AlgorithmParameters


def test_rtstruct_rasterises_back_per_object(ct_series, tmp_path):
    folder, organs = ct_series
    volume = load_volume(folder)
    out = save_mask(organs, volume, tmp_path / "organs_rt.dcm", names=ORGANS, dicom_kind="rtstruct")
    back = read_rtstruct(out, volume)
    for label in ORGANS:
        assert _dice(back == label, organs == label) >= 0.95, ORGANS[label]
    raw = pydicom.dcmread(out)
    assert [roi.ROIName for roi in raw.StructureSetROISequence] == list(ORGANS.values())
    source_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in volume.dicom_files}
    referenced = {item.ReferencedSOPInstanceUID for item in raw.ReferencedFrameOfReferenceSequence[0]
                  .RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].ContourImageSequence}
    assert referenced == source_uids
    assert _dciodvfy_errors(out) == []


def test_rtstruct_keeps_holes(ct_series, tmp_path):
    folder, _ = ct_series
    volume = load_volume(folder)
    ring = np.zeros(volume.shape, np.uint8)
    ring[10:13, 30:70, 30:80] = 1
    ring[10:13, 40:60, 45:65] = 0  # a hole: an inner contour, read with the even-odd rule
    ring[11, 48:52, 52:56] = 1  # an island in the hole
    out = save_mask(ring, volume, tmp_path / "ring.dcm", names={1: "ring"}, dicom_kind="rtstruct")
    np.testing.assert_array_equal(read_rtstruct(out, volume), ring)


@pytest.mark.parametrize("order", ["shuffled", "files-against-normal", "normal-to-the-feet"])
def test_any_slice_order_or_direction_gives_the_same_label_map(tmp_path, order):
    _, reference = bundled_ct_series(tmp_path / "plain", first=10, count=6)
    image = _as_image(load_volume(tmp_path / "plain"))
    labels = np.where(reference <= 7, reference, 0).astype(np.uint8)
    if order == "shuffled":
        names = [f"{n:03d}.dcm" for n in np.random.default_rng(3).permutation(6)]
        written, expected = write_series(image, tmp_path / order, names=names), labels
    elif order == "files-against-normal":  # instance 1 is the top slice: the files run against the normal
        written, expected = write_series(image[:, :, ::-1], tmp_path / order), labels
    else:  # x and z flipped in the grid: the slice normal points to the feet, as many scanners store it
        flipped = sitk.Flip(image, [True, False, True])
        assert flipped.GetDirection()[8] == -1.0
        written, expected = write_series(flipped, tmp_path / order), labels[::-1, :, ::-1]
    volume = load_volume(tmp_path / order)
    assert sorted(volume.dicom_files) == sorted(written)
    np.testing.assert_array_equal(
        volume.array, sitk.GetArrayFromImage(image) if order != "normal-to-the-feet" else sitk.GetArrayFromImage(image)[::-1, :, ::-1]
    )
    out = save_mask(expected, volume, tmp_path / f"{order}.dcm", names=ORGANS)
    np.testing.assert_array_equal(read_dicom_seg(out, volume), expected)
    raw = pydicom.dcmread(out)
    position_of = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in volume.dicom_files}
    for index, frame in enumerate(raw.PerFrameFunctionalGroupsSequence):  # each frame: its source's slice, there
        source = pydicom.dcmread(position_of[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID])
        assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == pytest.approx(
            [float(v) for v in source.ImagePositionPatient], abs=1e-3)
        z = volume.dicom_files.index(position_of[source.SOPInstanceUID])
        segment = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(raw.pixel_array[index] > 0, expected[z] == segment)


def _as_image(volume) -> sitk.Image:
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    return image


def test_tilted_missing_slice_and_multi_frame_series_are_refused(tmp_path, capsys):
    paths, _ = bundled_ct_series(tmp_path / "tilted", first=10, count=5)
    for z, path in enumerate(paths):  # a 5 degree gantry tilt: each slice shifted along y by tan(5 deg) x 3 mm
        ds = pydicom.dcmread(path)
        position = [float(v) for v in ds.ImagePositionPatient]
        position[1] += z * 3.0 * np.tan(np.radians(5))
        ds.ImagePositionPatient = position
        ds.save_as(path)
    code, err = run_cli(["segment", tmp_path / "tilted", "-o", tmp_path / "t.dcm", "--box", "2:10,10,40,40"], capsys)
    assert_one_line_error(code, err, 1, "tilted")
    assert "5.0 degrees" in err[0]
    paths, _ = bundled_ct_series(tmp_path / "gap", first=10, count=6)
    paths[3].unlink()
    code, err = run_cli(["segment", tmp_path / "gap", "-o", tmp_path / "g.dcm", "--box", "2:10,10,40,40"], capsys)
    assert_one_line_error(code, err, 1, "unevenly spaced")
    multi = tmp_path / "multi.dcm"
    ds = pydicom.dcmread(bundled_ct_series(tmp_path / "one", first=10, count=2)[0][0])
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.save_as(multi)
    code, err = run_cli(["segment", multi, "-o", tmp_path / "m.dcm", "--box", "0:10,10,40,40"], capsys)
    assert_one_line_error(code, err, 1, "multi-frame")
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".dcm" and p.name != "multi.dcm"]


def test_dicom_output_of_a_nifti_input_is_refused_before_the_model(tmp_path, capsys):
    from medsam2.cli.demo import sample_paths

    ct_path, _ = sample_paths()
    for extra in ([], ["--format", "rtstruct"]):
        code, err = run_cli(["segment", ct_path, "-o", tmp_path / "x.dcm", "--box", "15:40,30,100,80", *extra], capsys)
        assert_one_line_error(code, err, 2, "is not a DICOM series")
    code, err = run_cli(["segment", ct_path, "-o", tmp_path / "x.nii.gz", "--format", "dicom-seg", "--box", "15:4,3,10,8"], capsys)
    assert_one_line_error(code, err, 2, "writes a DICOM file; name the output")
    assert list(tmp_path.iterdir()) == []


def test_a_seg_of_another_series_is_refused_as_mask_and_as_input(ct_series, tmp_path, capsys):
    folder, organs = ct_series
    other_folder = tmp_path / "other"
    bundled_ct_series(other_folder)  # the same pixels, another series
    seg = save_mask(organs, load_volume(other_folder), tmp_path / "other_seg.dcm", names=ORGANS)
    with pytest.raises(InputError, match="segments series .* not the input's series"):
        read_dicom_seg(seg, load_volume(folder))
    code, err = run_cli(["segment", folder, "-o", tmp_path / "o.nii.gz", "--mask", seg], capsys)
    assert_one_line_error(code, err, 1, "not the input's series")
    code, err = run_cli(["segment", seg, "-o", tmp_path / "o.nii.gz", "--box", "1:1,1,5,5"], capsys)
    assert_one_line_error(code, err, 1, "is a DICOM Segmentation, not an image")
    code, err = run_cli(["segment", folder, "-o", tmp_path / "o.nii.gz", "--mask-segment", "2", "--box", "1:1,1,5,5"], capsys)
    assert_one_line_error(code, err, 2, "follows the --mask")
    assert not (tmp_path / "o.nii.gz").exists()


def test_segment_writes_seg_equal_to_its_nifti_and_takes_a_seg_mask(tmp_path, capsys):
    """End to end on 9 slices of the CT as DICOM: the SEG holds exactly the label map the NIfTI output
    holds, a SEG given back as --mask (one segment) gives the same as that segment as a NIfTI mask."""
    _, reference = bundled_ct_series(tmp_path / "crop", first=10, count=9)
    spleen = reference == 1
    rows, cols = np.nonzero(spleen[4])
    box = f"4:{cols.min()},{rows.min()},{cols.max()},{rows.max()}"
    args = ["segment", tmp_path / "crop", "--name", "spleen", "--box", box, "--quiet"]
    assert main([str(a) for a in [*args, "-o", tmp_path / "spleen.dcm"]]) == 0
    assert not (tmp_path / "spleen.label.txt").exists()  # the SEG names its segments itself
    assert main([str(a) for a in [*args, "-o", tmp_path / "spleen.nii.gz"]]) == 0
    volume = load_volume(tmp_path / "crop")
    from_seg = read_dicom_seg(tmp_path / "spleen.dcm", volume)
    np.testing.assert_array_equal(from_seg, load_volume(tmp_path / "spleen.nii.gz").array)
    assert _dice(from_seg == 1, spleen) >= 0.9
    assert main([str(a) for a in [*args, "-o", tmp_path / "spleen_rt.dcm", "--format", "rtstruct"]]) == 0
    assert _dice(read_rtstruct(tmp_path / "spleen_rt.dcm", volume) == 1, from_seg == 1) >= 0.95
    both = save_mask(np.where(reference == 3, 1, np.where(spleen, 2, 0)).astype(np.uint8), volume, tmp_path / "ref.dcm",
                     names={1: "kidney_left", 2: "spleen"})
    save_mask(spleen.astype(np.uint8), volume, tmp_path / "ref_spleen.nii.gz")
    common = ["segment", tmp_path / "crop", "--quiet"]
    assert main([str(a) for a in [*common, "--mask", both, "--mask-segment", "2", "-o", tmp_path / "a.nii.gz"]]) == 0
    assert main([str(a) for a in [*common, "--mask", tmp_path / "ref_spleen.nii.gz", "-o", tmp_path / "b.nii.gz"]]) == 0
    np.testing.assert_array_equal(load_volume(tmp_path / "a.nii.gz").array, load_volume(tmp_path / "b.nii.gz").array)
    assert _dciodvfy_errors(tmp_path / "spleen.dcm") == []


def test_evaluate_and_batch_on_dicom_with_seg_references(tmp_path, nnunet_dataset, capsys):
    """A DICOM dataset (series folders + SEG references) scores as its NIfTI twin, and writes DICOM predictions."""
    dataset = tmp_path / "dicom_dataset"
    (dataset / "labels").mkdir(parents=True)
    nifti = tmp_path / "nifti_dataset"
    (nifti / "labels").mkdir(parents=True)
    (nifti / "images").mkdir()
    for index, start in enumerate((10, 12)):
        case = f"case{index}"
        _, reference = bundled_ct_series(dataset / "images" / case, first=start, count=8)
        volume = load_volume(dataset / "images" / case)
        labels = np.where(reference == 1, 1, np.where(reference == 3, 2, 0)).astype(np.uint8)
        save_mask(labels, volume, dataset / "labels" / f"{case}.dcm", names={1: "spleen", 2: "kidney_left"})
        shutil.copy(nnunet_dataset / "imagesTr" / f"tiny_{index:03d}_0000.nii.gz", nifti / "images" / f"{case}.nii.gz")
        shutil.copy(nnunet_dataset / "labelsTr" / f"tiny_{index:03d}.nii.gz", nifti / "labels" / f"{case}.nii.gz")
    common = ["--methods", "confidence", "--quiet"]
    assert main(["evaluate", str(dataset), "-o", str(tmp_path / "ev_dicom"), *common, "--save-predictions", "--format", "dicom-seg"]) == 0
    assert main(["evaluate", str(nifti), "-o", str(tmp_path / "ev_nifti"), *common]) == 0
    dicom_rows = (tmp_path / "ev_dicom" / "per_case.csv").read_text().splitlines()
    nifti_rows = (tmp_path / "ev_nifti" / "per_case.csv").read_text().splitlines()
    assert len(dicom_rows) == 5
    assert "spleen" in dicom_rows[1] and "kidney_left" in dicom_rows[2]  # the names of the SEG references' segments
    dice_column = dicom_rows[0].split(",").index("dice")
    assert [r.split(",")[dice_column] for r in dicom_rows[1:]] == [r.split(",")[dice_column] for r in nifti_rows[1:]]
    for index in range(2):
        prediction = tmp_path / "ev_dicom" / "predictions" / "confidence" / f"case{index}.dcm"
        assert read_dicom_seg(prediction, load_volume(dataset / "images" / f"case{index}")).max() == 2
    manifest = tmp_path / "studies.csv"
    manifest.write_text(f'case,image,box\ncase0,{dataset / "images" / "case0"},"4:60,30,100,80"\n'
                        f'nifti,{nifti / "images" / "case0.nii.gz"},"4:60,30,100,80"\n')
    code, err = run_cli(["batch", manifest, "-o", tmp_path / "batch", "--format", "rtstruct", "--quiet"], capsys)
    assert_one_line_error(code, err, 2, "row 2: a DICOM output (nifti.dcm) references the image's DICOM series")
    assert not (tmp_path / "batch").exists()  # refused before anything runs
    manifest.write_text(f'case,image,box\ncase0,{dataset / "images" / "case0"},"4:60,30,100,80"\n')
    assert main(["batch", str(manifest), "-o", str(tmp_path / "batch"), "--format", "rtstruct", "--quiet"]) == 0
    assert pydicom.dcmread(tmp_path / "batch" / "case0.dcm").Modality == "RTSTRUCT"
