"""What the page loads: the scan as NIfTI (in the input's geometry) and the window presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsam2.io.volume import Volume
from medsam2.io.windows import CT_WINDOWS, IntensityWindow, choose_window, finite_range, looks_like_ct
from medsam2.io.writers import image_in_geometry

#: the native voxel axes (0 = i, 1 = j, 2 = k) of a frame's slice index, column x and row y, per voxel axis
FRAME_AXES = {"k": {"slice": 2, "x": 0, "y": 1}, "j": {"slice": 1, "x": 0, "y": 2}, "i": {"slice": 0, "x": 1, "y": 2}}


def write_viewer_nifti(volume: Volume, path: Path) -> None:
    """The scan as a NIfTI file with its spacing, origin and direction (a colour image as its luminance)."""
    array = volume.array
    if volume.is_color:
        array = np.round(array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    sitk.WriteImage(image_in_geometry(array, volume), str(path), useCompression=True)


def window_presets(volume: Volume, chosen: IntensityWindow) -> dict[str, list[float]]:
    """Display windows [low, high] the page can switch between: the model's, CT presets on CT, the
    0.5-99.5 percentiles and the full range."""
    presets = {chosen.name: [chosen.low, chosen.high]}
    if looks_like_ct(volume.array, volume.modality):
        presets.update({name: [level - width / 2, level + width / 2] for name, (level, width) in CT_WINDOWS.items()})
    percentile = choose_window(volume.array, "percentile", volume.modality)
    presets.setdefault("percentile", [percentile.low, percentile.high])
    presets["full"] = list(finite_range(volume.array))
    return {name: [round(float(low), 3), round(float(high), 3)] for name, (low, high) in presets.items()}
