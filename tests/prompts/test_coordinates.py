"""A user's coordinates: anatomical axes from the direction cosines, millimetre prompts (LPS and
RAS) checked against SimpleITK's own transforms on an oblique and a flipped copy of the shared CT,
ITK-SNAP's 1-based indices, ``medsam2 info``, and the formats SimpleITK reads."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medsam2.cli.dispatch import main
from medsam2.errors import PromptError
from medsam2.io.readers import load_volume
from medsam2.io.scan_info import describe
from medsam2.io.slicing import anatomical_axes, to_frames, voxel_axis
from medsam2.prompts.coordinates import box_from_mm, index_to_physical, physical_to_index, point_from_mm
from medsam2.prompts.parse import Box, collect_prompts
from tests.shared_data import shared

CT = shared("totalseg_example", "example_ct_sm.nii.gz")


def oblique_copy(tmp_path):
    """The shared CT with its grid rotated 20 degrees about z and 10 about x (same voxels)."""
    image = sitk.ReadImage(str(CT))
    rotation = sitk.VersorTransform((0, 0, 1), np.radians(20))
    tilt = sitk.VersorTransform((1, 0, 0), np.radians(10))
    direction = np.array(tilt.GetMatrix()).reshape(3, 3) @ np.array(rotation.GetMatrix()).reshape(3, 3) @ np.array(
        image.GetDirection()
    ).reshape(3, 3)
    image.SetDirection(direction.ravel().tolist())
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def flipped_copy(tmp_path):
    """The shared CT flipped along i and k (SimpleITK updates origin and direction)."""
    image = sitk.Flip(sitk.ReadImage(str(CT)), [True, False, True])
    path = tmp_path / "flipped.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def permuted_copy(tmp_path):
    """The shared CT stored with its voxel axes permuted: the patient's axial axis is voxel i."""
    image = sitk.PermuteAxes(sitk.ReadImage(str(CT)), [2, 0, 1])
    path = tmp_path / "permuted.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_anatomical_axes_follow_the_direction_cosines(tmp_path):
    original = load_volume(CT)
    assert anatomical_axes(original.direction) == {"axial": "k", "coronal": "j", "sagittal": "i"}
    permuted = load_volume(permuted_copy(tmp_path))
    assert anatomical_axes(permuted.direction) == {"axial": "i", "coronal": "k", "sagittal": "j"}
    # the patient's axial slices are the same pictures whichever way the file stores them
    axial = to_frames(permuted.array, voxel_axis("axial", permuted.direction))
    assert axial.shape[0] == 30
    assert np.array_equal(axial[7], original.array[7])
    assert voxel_axis("j", permuted.direction) == "j"


@pytest.mark.parametrize("make", [oblique_copy, flipped_copy])
def test_millimetres_invert_simpleitk_transforms(tmp_path, make):
    path = make(tmp_path)
    image = sitk.ReadImage(str(path))
    volume = load_volume(path)
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = rng.uniform(0, np.array(image.GetSize()) - 1)
        point = image.TransformContinuousIndexToPhysicalPoint(index.tolist())
        assert np.allclose(index_to_physical(volume, tuple(index)), point, atol=1e-6)
        assert np.allclose(physical_to_index(volume, point), image.TransformPhysicalPointToContinuousIndex(point), atol=1e-6)


@pytest.mark.parametrize("make", [oblique_copy, flipped_copy])
@pytest.mark.parametrize("ras", [False, True])
def test_box_and_point_in_mm_give_the_voxel_prompts(tmp_path, make, ras):
    path = make(tmp_path)
    image = sitk.ReadImage(str(path))
    volume = load_volume(path)
    axis = voxel_axis("axial", volume.direction)
    assert axis == "k"
    corner_a = list(image.TransformIndexToPhysicalPoint((11, 23, 14)))
    corner_b = list(image.TransformIndexToPhysicalPoint((27, 54, 14)))
    if ras:  # 3D Slicer shows x and y negated
        corner_a[:2] = [-corner_a[0], -corner_a[1]]
        corner_b[:2] = [-corner_b[0], -corner_b[1]]
    text = ",".join(f"{v:.4f}" for v in corner_b + corner_a)  # any two opposite corners, in any order
    assert box_from_mm(text, volume, "axial", ras=ras) == Box(14, 11, 23, 27, 54)
    point = list(image.TransformIndexToPhysicalPoint((20, 40, 14)))
    if ras:
        point[:2] = [-point[0], -point[1]]
    clicked = point_from_mm(",".join(f"{v:.4f}" for v in point) + ",0", volume, "axial", ras=ras)
    assert (clicked.frame, clicked.x, clicked.y, clicked.positive) == (14, 20.0, 40.0, False)
    # read as the wrong convention, the box lands elsewhere or off the slice: never silently equal
    try:
        assert box_from_mm(text, volume, "axial", ras=not ras) != Box(14, 11, 23, 27, 54)
    except PromptError:
        pass


def test_box_mm_on_two_slices_and_bad_numbers_are_refused(tmp_path):
    volume = load_volume(CT)
    image = sitk.ReadImage(str(CT))
    a = image.TransformIndexToPhysicalPoint((11, 23, 10))
    b = image.TransformIndexToPhysicalPoint((27, 54, 14))
    with pytest.raises(PromptError, match="slices 10 and 14"):
        box_from_mm(",".join(map(str, a + b)), volume)
    with pytest.raises(PromptError, match="X0,Y0,Z0,X1,Y1,Z1"):
        box_from_mm("1,2,3", volume)
    with pytest.raises(PromptError, match="X0,Y0,Z0,X1,Y1,Z1"):
        box_from_mm("1,2,nan,4,5,6", volume)


def test_index_base_one_is_itksnap(tmp_path):
    volume = load_volume(CT)
    zero = collect_prompts([("box", "14:11,23,27,54"), ("point", "14:20,40,0")], None, volume)
    one = collect_prompts([("box", "15:12,24,28,55"), ("point", "15:21,41,0")], None, volume, index_base=1)
    assert zero[0].boxes == one[0].boxes and zero[0].points == one[0].points


def test_a_2d_mask_prompts_its_named_slice(tmp_path):
    volume = load_volume(CT)
    mask = np.zeros((101, 122), np.uint8)
    mask[30:50, 15:25] = 255
    Image.fromarray(mask).save(tmp_path / "slice.png")
    objects = collect_prompts([("mask", f"14:{tmp_path / 'slice.png'}")], None, volume)
    assert [m.frame for m in objects[0].masks] == [14]
    assert objects[0].masks[0].mask.sum() == 200
    Image.fromarray(mask[:50]).save(tmp_path / "small.png")
    with pytest.raises(Exception, match="size"):
        collect_prompts([("mask", f"14:{tmp_path / 'small.png'}")], None, volume)


def test_info_names_axes_orientation_and_conventions(tmp_path, capsys):
    assert main(["info", str(permuted_copy(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "--axis axial     = voxel axis i: 30 slices of 3 mm" in out
    assert "orientation        " in out and "ITK-SNAP" in out and "1-based" in out
    assert main(["info", str(oblique_copy(tmp_path)), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["modality"] == "CT" and facts["auto_window"] == "abdomen"
    axial = next(a for a in facts["axes"] if a["anatomical"] == "axial")
    assert axial["voxel_axis"] == "k" and axial["degrees_off"] == pytest.approx(10.0, abs=0.1)
    assert any("oblique" in w for w in facts["warnings"])
    assert describe(load_volume(CT)).orientation == "RAS"
    assert describe(load_volume(CT)).size_xyz == [122, 101, 30]


def test_formats_simpleitk_reads_and_content_sniffing(tmp_path, capsys):
    image = sitk.ReadImage(str(CT))
    reference = sitk.GetArrayFromImage(image)
    written = []
    for name in ("ct.gipl.gz", "ct.gipl", "ct.vtk", "ct.mnc"):
        sitk.WriteImage(image, str(tmp_path / name))
        written.append(tmp_path / name)
    for name in ("scan", "scan.gz", "scan.data"):  # a NIfTI whose name does not say so
        shutil.copy(CT, tmp_path / name)
        written.append(tmp_path / name)
    for path in written:
        volume = load_volume(path)
        assert np.array_equal(volume.array, reference), path.name
        assert np.allclose(volume.spacing, image.GetSpacing()) and np.allclose(volume.origin, image.GetOrigin(), atol=1e-3)
        assert volume.source == str(path)
    png = np.asarray(Image.open(shared("hc18_fetal_head", "000_HC.png")).convert("L"))
    Image.fromarray(png).save(tmp_path / "head.gif")
    shutil.copy(shared("hc18_fetal_head", "000_HC.png"), tmp_path / "head_no_suffix")
    for name in ("head.gif", "head_no_suffix"):
        volume = load_volume(tmp_path / name)
        assert volume.is_2d and volume.shape == (1, 540, 800)
    assert np.array_equal(load_volume(tmp_path / "head.gif").array[0], png)
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["info", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot tell what kind of image" in err


def test_prompts_json_takes_millimetres_one_slice_masks_and_the_index_base(tmp_path):
    volume = load_volume(CT)
    image = sitk.ReadImage(str(CT))
    corners = image.TransformIndexToPhysicalPoint((11, 23, 14)) + image.TransformIndexToPhysicalPoint((27, 54, 14))
    point = image.TransformIndexToPhysicalPoint((20, 40, 14))
    mask = np.zeros((101, 122), np.uint8)
    mask[30:50, 15:25] = 255
    Image.fromarray(mask).save(tmp_path / "slice.png")
    (tmp_path / "p.json").write_text(json.dumps({"objects": [
        {"label": 1, "boxes_mm": [",".join(map(str, corners))], "points_mm": [",".join(map(str, point)) + ",0"]},
        {"label": 2, "mask": "slice.png", "mask_slice": 15, "boxes": ["16:12,24,28,55"]},
    ]}))
    objects = collect_prompts([], tmp_path / "p.json", volume, index_base=1)
    assert objects[0].boxes == [Box(14, 11, 23, 27, 54)]
    assert (objects[0].points[0].frame, objects[0].points[0].x, objects[0].points[0].positive) == (14, 20.0, False)
    assert [m.frame for m in objects[1].masks] == [14] and objects[1].boxes == [Box(15, 11, 23, 27, 54)]
    head = load_volume(shared("hc18_fetal_head", "000_HC.png"))
    (tmp_path / "h.json").write_text(json.dumps({"objects": [{"label": 1, "boxes": ["200,100,600,450"]}]}))
    assert collect_prompts([], tmp_path / "h.json", head)[0].boxes == [Box(0, 200, 100, 600, 450)]
    with pytest.raises(PromptError, match="write it as SLICE:x0,y0,x1,y1"):
        collect_prompts([], tmp_path / "h.json", volume)


def test_batch_manifest_takes_millimetres_and_ras(tmp_path):
    from medsam2.batch.manifest import ManifestError, read_manifest

    shutil.copy(CT, tmp_path / "ct.nii.gz")
    (tmp_path / "m.csv").write_text(
        'case,image,box_mm,ras\np1,ct.nii.gz,"-144.96,80.32,136.30,-96.96,173.32,136.30",true\n'
    )
    (case,) = read_manifest(tmp_path / "m.csv", tmp_path / "out")
    assert case.job.ras and ("box_mm", "-144.96,80.32,136.30,-96.96,173.32,136.30") in case.job.prompt_items
    objects = collect_prompts(list(case.job.prompt_items), None, load_volume(CT), ras=case.job.ras)
    assert objects[0].boxes == [Box(14, 11, 23, 27, 54)]
    (tmp_path / "bad.csv").write_text('case,image,box_mm\np1,ct.nii.gz,"1,2,3"\n')
    with pytest.raises(ManifestError, match="row 1.*X0,Y0,Z0,X1,Y1,Z1"):
        read_manifest(tmp_path / "bad.csv", tmp_path / "out")
