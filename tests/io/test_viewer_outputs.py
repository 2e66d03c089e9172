"""Outputs a viewer understands: 3D Slicer's .seg.nrrd with named, coloured segments, ITK-SNAP's
label description beside every label map, segment --montage, and 2D masks as 0/255 PNGs."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medsam2.cli import main
from medsam2.io.label_files import label_entries, label_file_path, read_itksnap_labels
from medsam2.io.readers import load_volume
from medsam2.io.volume import Volume
from medsam2.io.writers import save_mask
from medsam2.reporting.montage import label_colour
from tests.shared_data import shared


@pytest.fixture
def small_ct(tmp_path):
    """Slices 10-18 of the bundled CT crop (spleen and left kidney on all of them)."""
    image = sitk.ReadImage(str(shared("totalseg_example", "example_ct_sm.nii.gz")))[:, :, 10:19]
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_seg_nrrd_reads_back_with_names_colours_and_geometry(tmp_path):
    volume = load_volume(shared("totalseg_example", "example_ct_sm.nii.gz"))
    labels = np.zeros(volume.shape, np.uint8)
    labels[5:9, 20:40, 10:30] = 1
    labels[12:14, 50:60, 60:80] = 7
    out = save_mask(labels, volume, tmp_path / "organs.seg.nrrd", names={1: "spleen", 7: "kidney_left"})
    image = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(image), labels)
    assert np.allclose(image.GetOrigin(), volume.origin) and np.allclose(image.GetDirection(), volume.direction)
    keys = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    assert keys["Segment0_Name"] == "spleen" and keys["Segment0_LabelValue"] == "1"
    assert keys["Segment1_Name"] == "kidney_left" and keys["Segment1_LabelValue"] == "7"
    assert keys["Segment1_Layer"] == "0" and keys["Segment1_Extent"] == "60 79 50 59 12 13"
    colour = tuple(round(float(c) * 255) for c in keys["Segment1_Color"].split())
    assert colour == label_colour(7)
    assert keys["Segmentation_MasterRepresentation"] == "Binary labelmap"
    # the header lines Slicer reads, as they are in the file
    header = out.read_bytes()[:4000].decode("latin-1")
    assert "Segment0_Name:=spleen" in header


def test_segment_writes_seg_nrrd_label_file_and_montage(tmp_path, small_ct, monkeypatch, backbone, capsys):
    monkeypatch.setattr("medsam2.engine.segmenter.build_backbone", lambda *a, **k: backbone)
    out = tmp_path / "organs.seg.nrrd"
    image = sitk.ReadImage(str(small_ct))
    corners = image.TransformIndexToPhysicalPoint((26, 28, 1)) + image.TransformIndexToPhysicalPoint((44, 45, 1))
    code = main([
        "segment", str(small_ct), "-o", str(out), "--format", "seg-nrrd", "--montage", str(tmp_path / "check.png"),
        "--label", "1", "--name", "spleen", "--index-base", "1", "--box", "5:12,24,28,55", "--label", "3", "--name",
        "kidney left", "--box-mm", ",".join(f"{v:.3f}" for v in corners), "--report", str(tmp_path / "r.json"),
    ])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    assert [o["prompted_slices"] for o in report["objects"]] == [[4], [1]]
    assert report["axis"] == "axial" and report["voxel_axis"] == "k"
    summary = capsys.readouterr().out
    assert "organs.label.txt" in summary and "check.png" in summary
    image = sitk.ReadImage(str(out))
    assert image.GetMetaData("Segment0_Name") == "spleen" and image.GetMetaData("Segment1_Name") == "kidney left"
    assert set(np.unique(sitk.GetArrayFromImage(image))) == {0, 1, 3}
    described = read_itksnap_labels(tmp_path / "organs.label.txt")
    assert described[1] == ("spleen", label_colour(1)) and described[3] == ("kidney left", label_colour(3))
    assert described[0][0] == "Clear Label"
    montage = np.asarray(Image.open(tmp_path / "check.png").convert("RGB"))
    assert montage.shape[0] > 100 and montage.shape[1] > 200
    # the spleen's colour is drawn (blended over the grey) on the sheet
    red = (montage[..., 0].astype(int) - montage[..., 1]) > 60
    assert red.sum() > 100
    # the outputs are claimed before the work: a second run without --overwrite is refused at once
    code = main(["segment", str(small_ct), "-o", str(out), "--box", "4:11,23,27,54", "--quiet"])
    assert code == 1 and "exists" in capsys.readouterr().err
    (tmp_path / "organs.seg.nrrd").unlink()
    code = main(["segment", str(small_ct), "-o", str(out), "--box", "4:11,23,27,54", "--quiet"])
    assert code == 1 and "organs.label.txt exists" in capsys.readouterr().err
    assert not out.exists()


def test_format_seg_nrrd_needs_its_name(tmp_path, small_ct, capsys):
    code = main(["segment", str(small_ct), "-o", str(tmp_path / "a.nrrd"), "--format", "seg-nrrd", "--box", "4:11,23,27,54"])
    err = capsys.readouterr().err
    assert code == 2 and "a.seg.nrrd" in err and err.count("\n") == 1
    montage = str(tmp_path / "m.jpg")
    code = main(["segment", str(small_ct), "-o", str(tmp_path / "a.nii.gz"), "--montage", montage, "--box", "4:11,23,27,54"])
    assert code == 2 and "m.png" in capsys.readouterr().err
    assert not list(tmp_path.glob("a.*"))


def test_2d_masks_are_0_255_for_one_object_and_label_values_for_several(tmp_path):
    volume = Volume(np.zeros((1, 40, 50), np.uint8), is_2d=True, spacing_known=False)
    one = np.zeros((1, 40, 50), np.uint8)
    one[0, 5:20, 5:30] = 3
    save_mask(one, volume, tmp_path / "one.png")
    assert set(np.unique(np.asarray(Image.open(tmp_path / "one.png")))) == {0, 255}
    several = one.copy()
    several[0, 25:35, 10:40] = 2
    save_mask(several, volume, tmp_path / "two.png")
    assert set(np.unique(np.asarray(Image.open(tmp_path / "two.png")))) == {0, 2, 3}
    # read back as a mask prompt: the 0/255 file is the object
    back = load_volume(tmp_path / "one.png").array
    assert np.array_equal(back > 0, one > 0)


def test_label_file_names_the_value_the_file_stores(tmp_path):
    from medsam2.io.label_files import stored_entries, write_label_file

    entries = stored_entries(label_entries({4: "head"}), tmp_path / "x.png")
    write_label_file(label_file_path(tmp_path / "x.png"), entries)
    assert read_itksnap_labels(tmp_path / "x.label.txt")[255][0] == "head"
    assert label_file_path(tmp_path / "scan.nii.gz").name == "scan.label.txt"
    assert label_file_path(tmp_path / "scan.seg.nrrd").name == "scan.label.txt"
    json.dumps([e.__dict__ for e in entries])
