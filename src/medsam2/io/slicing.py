"""The slicing direction: which voxel axis is the "time" axis of the video.

Volumes are (k, j, i) arrays (NumPy order of an ITK image). An axis is named either by the voxel
axis it runs along (``k``, ``j``, ``i``) or by the patient's anatomy (``axial``, ``coronal``,
``sagittal``): an anatomical name is the voxel axis whose direction is closest to the patient's
superior-inferior (axial), anterior-posterior (coronal) or left-right (sagittal) axis, read from the
volume's direction cosines (:func:`voxel_axis`). On a scan stored axially (identity-like direction)
axial is k, coronal j and sagittal i.

For each voxel axis the frames are laid out so that a frame's columns are the first remaining IJK
axis and its rows the second, which is how DESIGN.md defines prompt coordinates:

* k: frames along k, each (j rows, i cols): a box is (i, j);
* j: frames along j, each (k rows, i cols): a box is (i, k);
* i: frames along i, each (k rows, j cols): a box is (j, k).
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from medsam2.errors import UsageError

ANATOMICAL_AXES = ("axial", "coronal", "sagittal")
VOXEL_AXES = ("k", "j", "i")
AXES = ANATOMICAL_AXES + VOXEL_AXES
#: permutation of (k, j, i) array axes giving (frame, row, col)
_PERMUTATIONS = {"k": (0, 1, 2), "j": (1, 0, 2), "i": (2, 0, 1)}
#: the physical (LPS) axis each anatomical plane is normal to: x (L-R), y (P-A), z (I-S)
_NORMAL_ROW = {"sagittal": 0, "coronal": 1, "axial": 2}


def check_axis(axis: str) -> str:
    """``axis`` if it is one of :data:`AXES`.

    Raises:
        UsageError: an unknown axis name.
    """
    if axis not in AXES:
        raise UsageError(f"unknown axis '{axis}'; choose one of {', '.join(AXES)}")
    return axis


def other_axes(axis: str) -> tuple[str, str]:
    """The two axes other than ``axis``, named the same way (anatomical or voxel), in
    axial/coronal/sagittal (k/j/i) order."""
    names = ANATOMICAL_AXES if check_axis(axis) in ANATOMICAL_AXES else VOXEL_AXES
    first, second = (name for name in names if name != axis)
    return first, second


def anatomical_axes(direction: tuple[float, ...]) -> dict[str, str]:
    """Which voxel axis each anatomical axis is, for a volume's direction cosines.

    Arguments:
        direction: 3x3 direction cosines, row-major, as ``sitk.Image.GetDirection()`` (column c is
            voxel axis c's direction in LPS millimetres).

    Returns:
        {"axial": "k"|"j"|"i", "coronal": ..., "sagittal": ...}: the one-to-one assignment whose
        voxel axes are best aligned with the patient's axes (largest sum of |cosines|), so that an
        oblique scan still gets three different voxel axes.
    """
    matrix = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))
    names = {0: "i", 1: "j", 2: "k"}
    best = max(
        permutations(range(3)),
        key=lambda columns: sum(matrix[_NORMAL_ROW[name], column] for name, column in zip(ANATOMICAL_AXES, columns)),
    )
    return {name: names[column] for name, column in zip(ANATOMICAL_AXES, best)}


def obliquity_degrees(direction: tuple[float, ...]) -> dict[str, float]:
    """Per anatomical axis, the angle in degrees between it and the voxel axis :func:`anatomical_axes`
    gives it (0 for a scan stored along the patient's axes)."""
    matrix = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))
    column = {"i": 0, "j": 1, "k": 2}
    return {
        name: float(np.degrees(np.arccos(min(1.0, matrix[_NORMAL_ROW[name], column[voxel]]))))
        for name, voxel in anatomical_axes(direction).items()
    }


def voxel_axis(axis: str, direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)) -> str:
    """The voxel axis ("k", "j" or "i") that ``axis`` names on a volume with ``direction``.

    Raises:
        UsageError: an unknown axis name.
    """
    check_axis(axis)
    if axis in VOXEL_AXES:
        return axis
    return anatomical_axes(direction)[axis]


def axis_text(axis: str, direction: tuple[float, ...]) -> str:
    """How a report names an axis: "axial (k)", or "j" for a voxel axis."""
    resolved = voxel_axis(axis, direction)
    return resolved if axis == resolved else f"{axis} ({resolved})"


def _voxel(axis: str) -> str:
    if axis not in VOXEL_AXES:
        if axis in ANATOMICAL_AXES:
            raise UsageError(f"internal: '{axis}' must be resolved to a voxel axis with voxel_axis(axis, direction) first")
        check_axis(axis)
    return axis


def to_frames(array: np.ndarray, axis: str) -> np.ndarray:
    """(k, j, i[, c]) volume array -> (frame, row, col[, c]) view along the voxel axis ``axis``."""
    perm = _PERMUTATIONS[_voxel(axis)]
    if array.ndim == 4:
        perm = (*perm, 3)
    return np.transpose(array, perm)


def from_frames(frames: np.ndarray, axis: str) -> np.ndarray:
    """Inverse of :func:`to_frames` for a (frame, row, col) array."""
    perm = _PERMUTATIONS[_voxel(axis)]
    return np.transpose(frames, np.argsort(perm))


def frame_spacing(spacing_xyz: tuple[float, float, float], axis: str) -> tuple[float, float, float]:
    """Voxel spacing as (between frames, rows, cols) in mm along the voxel axis ``axis``."""
    sx, sy, sz = spacing_xyz
    return {"k": (sz, sy, sx), "j": (sy, sz, sx), "i": (sx, sz, sy)}[_voxel(axis)]


def frame_to_index(axis: str, frame: float, col: float, row: float) -> tuple[float, float, float]:
    """A (frame, column x, row y) position along the voxel axis ``axis`` -> (i, j, k) voxel index."""
    return {"k": (col, row, frame), "j": (col, frame, row), "i": (frame, col, row)}[_voxel(axis)]


def index_to_frame(axis: str, index_ijk: tuple[float, float, float]) -> tuple[float, float, float]:
    """(i, j, k) voxel index -> (frame, column x, row y) along the voxel axis ``axis``."""
    i, j, k = index_ijk
    return {"k": (k, i, j), "j": (j, i, k), "i": (i, j, k)}[_voxel(axis)]
