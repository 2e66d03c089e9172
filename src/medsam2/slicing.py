"""The slicing direction: which voxel axis is the "time" axis of the video.

Volumes are (k, j, i) arrays (NumPy order of an ITK image). For each axis the frames are laid out
so that a frame's columns are the first remaining IJK axis and its rows the second, which is how
DESIGN.md defines prompt coordinates:

* axial: frames along k, each (j rows, i cols): a box is (i, j);
* coronal: frames along j, each (k rows, i cols): a box is (i, k);
* sagittal: frames along i, each (k rows, j cols): a box is (j, k).
"""

from __future__ import annotations

import numpy as np

from medsam2.errors import UsageError

AXES = ("axial", "coronal", "sagittal")
#: permutation of (k, j, i) array axes giving (frame, row, col)
_PERMUTATIONS = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}


def check_axis(axis: str) -> str:
    if axis not in AXES:
        raise UsageError(f"unknown axis '{axis}'; choose one of {', '.join(AXES)}")
    return axis


def to_frames(array: np.ndarray, axis: str) -> np.ndarray:
    """(k, j, i[, c]) volume array -> (frame, row, col[, c]) view along ``axis``."""
    perm = _PERMUTATIONS[check_axis(axis)]
    if array.ndim == 4:
        perm = (*perm, 3)
    return np.transpose(array, perm)


def from_frames(frames: np.ndarray, axis: str) -> np.ndarray:
    """Inverse of :func:`to_frames` for a (frame, row, col) array."""
    perm = _PERMUTATIONS[check_axis(axis)]
    return np.transpose(frames, np.argsort(perm))


def frame_spacing(spacing_xyz: tuple[float, float, float], axis: str) -> tuple[float, float, float]:
    """Voxel spacing as (between frames, rows, cols) in mm for ``axis``."""
    sx, sy, sz = spacing_xyz
    return {"axial": (sz, sy, sx), "coronal": (sy, sz, sx), "sagittal": (sx, sz, sy)}[check_axis(axis)]
