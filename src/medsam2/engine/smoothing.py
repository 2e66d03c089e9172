"""*Smoothing* (3D Slicer's effect of that name) of an object in 3D, with a kernel in millimetres:

- ``median``: each voxel takes the majority of its neighbourhood (SimpleITK's binary median):
  jagged edges, thin extrusions and small holes go, the volume stays about the same;
- ``opening``: removes extrusions and bridges thinner than the kernel (erode, then dilate);
- ``closing``: fills holes and notches narrower than the kernel (dilate, then erode).

The kernel's radius along each axis is ``kernel_mm / 2`` in that axis's voxels (rounded down), so
thick slices are smoothed less across them than within them. Only the slices that change get new
answers (their masks exactly, confidence 1); the others keep the model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from medsam2.engine.object_volume import object_volume, with_volume
from medsam2.engine.session_state import ObjectState
from medsam2.errors import PromptError

#: the smoothing methods, as the API and the page name them
SMOOTHING_METHODS = ("median", "opening", "closing")
#: the default kernel, in voxels of the slice's finer spacing (a radius of one voxel in the plane)
DEFAULT_KERNEL_VOXELS = 3


@dataclass(frozen=True)
class SmoothSummary:
    """What a smoothing did: the object, the method, the kernel's radius in voxels (frames, rows,
    cols), the slices changed and the voxels added and removed."""

    label: int
    method: str
    radius_voxels: tuple[int, int, int]
    changed_slices: int
    added_voxels: int
    removed_voxels: int


def kernel_radius(kernel_mm: float, spacing_frames: tuple[float, float, float]) -> tuple[int, int, int]:
    """The kernel's radius in voxels along (frames, rows, cols) for a kernel ``kernel_mm`` wide."""
    return tuple(int(np.floor(kernel_mm / 2 / s + 1e-6)) for s in spacing_frames)


def smoothed(volume: np.ndarray, method: str, radius: tuple[int, int, int]) -> np.ndarray:
    """A (frames, rows, cols) bool mask smoothed by ``method`` with a kernel of ``radius`` voxels
    along (frames, rows, cols): a box for the median, a ball for opening and closing."""
    image = sitk.GetImageFromArray(volume.astype(np.uint8))
    size = [int(r) for r in reversed(radius)]  # SimpleITK: (cols, rows, frames)
    if method == "median":
        out = sitk.BinaryMedian(image, radius=size, foregroundValue=1, backgroundValue=0)
    elif method == "opening":
        out = sitk.BinaryMorphologicalOpening(image, kernelRadius=size, kernelType=sitk.sitkBall, backgroundValue=0, foregroundValue=1)
    else:
        out = sitk.BinaryMorphologicalClosing(image, kernelRadius=size, kernelType=sitk.sitkBall, foregroundValue=1, safeBorder=True)
    return sitk.GetArrayFromImage(out).astype(bool)


def smoothed_state(
    state: ObjectState, n_frames: int, geometry, spacing_frames: tuple[float, float, float], method: str, kernel_mm: float | None
) -> tuple[ObjectState, SmoothSummary]:
    """The object smoothed (``kernel_mm`` None: three voxels of the slice's finer spacing).

    Raises:
        PromptError: an unknown method, a kernel smaller than a voxel along every axis, an object
            not segmented yet, or a smoothing that changes nothing.
    """
    label = state.prompts.label
    if method not in SMOOTHING_METHODS:
        raise PromptError(f"unknown smoothing {method!r}: choose {', '.join(SMOOTHING_METHODS)}")
    if kernel_mm is None:
        kernel_mm = DEFAULT_KERNEL_VOXELS * min(spacing_frames[1:])
    if not np.isfinite(kernel_mm) or kernel_mm <= 0:
        raise PromptError(f"the smoothing kernel is a size in mm (above 0), not {kernel_mm}")
    radius = kernel_radius(kernel_mm, spacing_frames)
    if not any(radius):
        raise PromptError(f"a {kernel_mm:g} mm kernel is smaller than two voxels along every axis "
                          f"({' x '.join(f'{s:g}' for s in spacing_frames)} mm): give a larger one")
    volume = object_volume(state, n_frames, geometry)
    after = smoothed(volume, method, radius)
    added, removed = int((after & ~volume).sum()), int((volume & ~after).sum())
    if not added and not removed:
        raise PromptError(f"label {label} is smooth at {kernel_mm:g} mm already ({method}): nothing changes")
    if not after.any():
        raise PromptError(f"a {method} of {kernel_mm:g} mm would remove all of label {label}; give a smaller kernel")
    changed = int((volume != after).reshape(n_frames, -1).any(axis=1).sum())
    return with_volume(state, volume, after, geometry), SmoothSummary(label, method, radius, changed, added, removed)
