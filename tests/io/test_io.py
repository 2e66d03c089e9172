"""Reading every supported input kind and writing label maps with the input's geometry."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medsam2.cli import main
from medsam2.errors import InputError, OutputError, PromptError, UsageError
from medsam2.io.readers import load_volume, read_mask
from medsam2.io.writers import save_mask


def _image(shape_zyx=(4, 6, 5), dtype=np.int16):
    array = np.arange(np.prod(shape_zyx), dtype=dtype).reshape(shape_zyx)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((10.0, -20.0, 5.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return image, array


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_volume_round_trip_keeps_geometry(tmp_path, suffix):
    image, array = _image()
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(path))
    volume = load_volume(path)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.spacing == pytest.approx((0.8, 0.9, 2.5))
    labels = (array % 3).astype(np.uint8)
    out = save_mask(labels, volume, tmp_path / f"labels{suffix}")
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == image.GetSize()
    assert written.GetSpacing() == pytest.approx(image.GetSpacing())
    assert written.GetOrigin() == pytest.approx(image.GetOrigin())
    assert written.GetDirection() == pytest.approx(image.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), labels)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_dicom_series_folder(tmp_path):
    image, array = _image((3, 8, 7))
    folder = tmp_path / "series"
    folder.mkdir()
    uid = "1.2.826.0.1.3680043.2.1125.1.123456"
    for z in range(array.shape[0]):
        slice_image = image[:, :, z]
        slice_image.SetMetaData("0008|0060", "CT")
        slice_image.SetMetaData("0020|000e", uid)
        slice_image.SetMetaData("0020|0013", str(z + 1))
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:f}" for v in position))
        slice_image.SetMetaData("0020|0037", "0\\1\\0\\-1\\0\\0")
        slice_image.SetMetaData("0028|0030", "0.9\\0.8")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        writer.Execute(slice_image)
    volume = load_volume(folder)
    assert volume.shape == (3, 8, 7)
    assert volume.modality == "CT"
    np.testing.assert_array_equal(volume.array, array)


def test_png_grey_and_rgb_are_one_slice_volumes(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    volume = load_volume(tmp_path / "g.png")
    assert volume.shape == (1, 6, 8) and volume.is_2d and not volume.is_color
    rgb = np.stack([grey, grey[::-1], grey * 2], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    colour = load_volume(tmp_path / "c.png")
    assert colour.array.shape == (1, 6, 8, 3) and colour.is_color
    out = save_mask(np.ones((1, 6, 8), np.uint8), colour, tmp_path / "mask.png")
    assert np.asarray(Image.open(out)).shape == (6, 8)


def test_missing_path():
    with pytest.raises(InputError, match="no such file"):
        load_volume("/nonexistent/scan.nii.gz")


def test_not_an_image_and_truncated(tmp_path):
    fake = tmp_path / "notes.nii.gz"
    fake.write_text("this is not a scan")
    with pytest.raises(InputError, match="cannot read"):
        load_volume(fake)
    image, _ = _image((8, 32, 32))
    good = tmp_path / "good.nrrd"
    sitk.WriteImage(image, str(good))
    truncated = tmp_path / "cut.nrrd"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated"):
        load_volume(truncated)
    png = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "ok.png")
    png.write_bytes((tmp_path / "ok.png").read_bytes()[:40])
    with pytest.raises(InputError, match="cannot read"):
        load_volume(png)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_text("x")
    with pytest.raises(UsageError, match="cannot tell what kind of image .* suffix '.xyz'"):
        load_volume(path)


def test_4d_input_says_how_to_pick_a_volume(tmp_path):
    array = np.zeros((3, 4, 5, 6), np.int16)  # t, z, y, x
    array[2] = 9
    image = sitk.JoinSeries([sitk.GetImageFromArray(a) for a in array])
    path = tmp_path / "dyn.nii.gz"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="4D .*--time-index N \\(0..2\\)"):
        load_volume(path)
    volume = load_volume(path, time_index=2)
    assert volume.shape == (4, 5, 6) and int(volume.array.max()) == 9


def test_mask_size_must_match(tmp_path):
    image, _ = _image()
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    other, _ = _image((4, 6, 6))
    sitk.WriteImage(other, str(tmp_path / "m.nii.gz"))
    # a prompt that does not fit the image: a usage error (exit 2), as the README says
    with pytest.raises(PromptError, match="has size 6x6x4 but the image has 5x6x4"):
        read_mask(tmp_path / "m.nii.gz", load_volume(tmp_path / "a.nii.gz"))
    assert main(["segment", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--mask", str(tmp_path / "m.nii.gz")]) == 2


def test_outputs_are_protected(tmp_path):
    image, _ = _image()
    source = tmp_path / "scan.nii.gz"
    sitk.WriteImage(image, str(source))
    volume = load_volume(source)
    labels = np.zeros(volume.shape, np.uint8)
    with pytest.raises(OutputError, match="is an input"):
        save_mask(labels, volume, source, overwrite=True)
    out = save_mask(labels, volume, tmp_path / "out.nii.gz")
    before = out.read_bytes()
    with pytest.raises(OutputError, match="--overwrite"):
        save_mask(labels + 1, volume, out)
    assert out.read_bytes() == before
    save_mask(labels + 1, volume, out, overwrite=True)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out))).max() == 1
    with pytest.raises(OutputError, match="does not exist"):
        save_mask(labels, volume, tmp_path / "missing" / "out.nii.gz")
    with pytest.raises(OutputError, match="not writable|cannot write"):
        save_mask(labels, volume, Path("/proc/medsam2_out.nii.gz"))
