"""Another image of the same study on the scan's voxel grid: FLAIR beside T1c, PET over CT.

An image already on the scan's grid (the same size, spacing, origin and direction) is kept as it
is; any other is resampled onto it with SimpleITK (linear interpolation, the physical positions of
both images' headers, no registration), voxels outside the image set to its lowest value.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from medsam2.errors import InputError
from medsam2.io.volume import Volume
from medsam2.io.writers import image_in_geometry

#: how far two grids' spacing, origin (mm) and direction cosines may differ and be the same grid
GRID_TOLERANCE = 1e-3


def same_grid(a: Volume, b: Volume) -> bool:
    """Whether two volumes share a voxel grid: size, spacing, origin and direction."""
    return (
        tuple(a.array.shape[:3]) == tuple(b.array.shape[:3])
        and np.allclose(a.spacing, b.spacing, atol=GRID_TOLERANCE)
        and np.allclose(a.origin, b.origin, atol=GRID_TOLERANCE * max(1.0, float(np.max(np.abs(a.spacing)))))
        and np.allclose(a.direction, b.direction, atol=GRID_TOLERANCE)
    )


def resample_onto(image: Volume, scan: Volume) -> tuple[Volume, bool]:
    """``image`` on ``scan``'s voxel grid, and whether it had to be resampled.

    Returns:
        A volume with the scan's shape (z, y, x), spacing, origin and direction and the image's
        values (float32 where resampled), modality and source.

    Raises:
        InputError: a colour image (a second image is grey: one value per voxel), or an image that
            does not overlap the scan in space (no voxel of the scan lies inside it).
    """
    for volume in (image, scan):
        if volume.array.ndim != 3:
            raise InputError(f"{volume.source or 'the image'} is a colour image; a study's images here are grey (one value per voxel)")
    if same_grid(image, scan):
        return replace(image, spacing=scan.spacing, origin=scan.origin, direction=scan.direction), False
    moving = image_in_geometry(np.asarray(image.array, np.float32), image)
    reference = image_in_geometry(np.zeros(scan.array.shape, np.uint8), scan)  # the grid only
    # one pass: voxels of the scan outside the image come back NaN, then its lowest value
    array = sitk.GetArrayFromImage(sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkLinear, float("nan"), sitk.sitkFloat32))
    outside = np.isnan(array)
    if outside.all():
        raise InputError(f"{image.source or 'the image'} does not overlap the scan in space (their headers place them apart); "
                         "a second image must show the same part of the patient")
    array[outside] = np.nanmin(image.array)
    note = f"{image.source or 'the image'} was resampled onto the scan's grid (linear interpolation, no registration)"
    return replace(image, array=array, spacing=scan.spacing, origin=scan.origin, direction=scan.direction,
                   warnings=[*image.warnings, note], dicom_files=(), data_files=()), True
