"""Another image of the study onto the scan's grid: a crop of the bundled CT with other
intensities (another "sequence") comes back on the scan's grid with its values exact where it
lies and its lowest value elsewhere; an image on the grid is kept as it is; one elsewhere in
space, or in colour, is one error."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from medsam2 import load_volume
from medsam2.cli.demo import sample_paths
from medsam2.errors import InputError
from medsam2.io.resample import resample_onto, same_grid
from medsam2.io.volume import Volume


def other_sequence(ct_path, shift_mm: float = 0.0) -> Volume:
    """Rows 10-89 and columns 5-114 of the CT (every slice) as 2 x HU + 100, in its own geometry
    (its origin where those voxels lie), moved ``shift_mm`` along x."""
    image = sitk.ReadImage(str(ct_path), sitk.sitkFloat32)[5:115, 10:90, :] * 2 + 100
    origin = np.array(image.GetOrigin()) + (shift_mm, 0, 0)
    return Volume(sitk.GetArrayFromImage(image), image.GetSpacing(), tuple(origin), image.GetDirection(), modality="MR",
                  source="t1c.nii.gz")


def test_a_crop_of_another_sequence_lands_on_the_scan_grid_exactly():
    ct_path, _ = sample_paths()
    scan = load_volume(ct_path)
    second = other_sequence(ct_path)
    assert not same_grid(second, scan)
    on, resampled = resample_onto(second, scan)
    assert resampled and on.array.shape == scan.array.shape and same_grid(on, scan)
    expected = scan.array.astype(np.float32) * 2 + 100
    np.testing.assert_allclose(on.array[:, 10:90, 5:115], expected[:, 10:90, 5:115], atol=1e-3)
    outside = np.ones(scan.array.shape, bool)
    outside[:, 10:90, 5:115] = False
    assert (on.array[outside] == second.array.min()).all()
    assert on.modality == "MR" and "resampled onto the scan's grid" in on.warnings[-1]
    same, resampled = resample_onto(replace(scan, array=expected), scan)
    assert not resampled and np.array_equal(same.array, expected)


def test_an_image_elsewhere_in_space_or_in_colour_is_one_error():
    ct_path, _ = sample_paths()
    scan = load_volume(ct_path)
    with pytest.raises(InputError, match="does not overlap the scan"):
        resample_onto(other_sequence(ct_path, shift_mm=5000.0), scan)
    colour = Volume(np.zeros((1, 8, 8, 3), np.uint8), is_2d=True, source="photo.png")
    with pytest.raises(InputError, match="colour image"):
        resample_onto(colour, scan)
