"""Prompts in physical millimetres: what a viewer's cursor shows, turned into voxel prompts.

ITK (and so SimpleITK, ITK-SNAP's "world" coordinates and DICOM) uses LPS: x grows towards the
patient's left, y towards posterior, z towards superior. 3D Slicer shows RAS: x and y have the
opposite sign. A voxel index (i, j, k) sits at ``origin + direction @ (spacing * index)``; this
module inverts that (the voxel centre nearest to a point) with the volume's own geometry, as
``sitk.Image.TransformPhysicalPointToContinuousIndex`` does.
"""

from __future__ import annotations

import math
import re

import numpy as np

from medsam2.errors import PromptError
from medsam2.io.slicing import index_to_frame, voxel_axis
from medsam2.io.volume import Volume
from medsam2.prompts.types import Box, Point

_NUMBER = r"\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*"


def physical_to_index(volume: Volume, point_lps: tuple[float, float, float]) -> tuple[float, float, float]:
    """An LPS point in mm -> the continuous voxel index (i, j, k) in ``volume`` (voxel centres are whole numbers)."""
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    offset = np.asarray(point_lps, dtype=float) - np.asarray(volume.origin, dtype=float)
    index = np.linalg.solve(direction * np.asarray(volume.spacing, dtype=float)[None, :], offset)
    return float(index[0]), float(index[1]), float(index[2])


def index_to_physical(volume: Volume, index_ijk: tuple[float, float, float]) -> tuple[float, float, float]:
    """A voxel index (i, j, k) -> its LPS position in mm."""
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    scaled = np.asarray(volume.spacing, dtype=float) * np.asarray(index_ijk, dtype=float)
    point = np.asarray(volume.origin, dtype=float) + direction @ scaled
    return float(point[0]), float(point[1]), float(point[2])


def parse_numbers(text: str, counts: tuple[int, ...], option: str, example: str) -> list[float]:
    """Comma-separated finite numbers, as many as one of ``counts``.

    Raises:
        PromptError: anything else, with ``example`` as the form to write.
    """
    parts = str(text).split(",")
    values = []
    for part in parts:
        match = re.fullmatch(_NUMBER, part)
        if not match:
            values = None
            break
        values.append(float(match.group(1)))
    if values is None or len(values) not in counts or not all(math.isfinite(v) for v in values):
        raise PromptError(f"cannot read {option} '{text}': write it as {example}")
    return values


def _to_lps(point: list[float], ras: bool) -> tuple[float, float, float]:
    x, y, z = point
    return (-x, -y, z) if ras else (x, y, z)


def _frame_position(volume: Volume, axis: str, point: list[float], ras: bool) -> tuple[float, float, float]:
    if len(point) == 2:  # a 2D image: its plane is z = 0
        point = [*point, volume.origin[2]]
    return index_to_frame(voxel_axis(axis, volume.direction), physical_to_index(volume, _to_lps(point, ras)))


def box_from_mm(text: str, volume: Volume, axis: str = "axial", ras: bool = False) -> Box:
    """``--box-mm X0,Y0,Z0,X1,Y1,Z1``: two opposite corners in mm (LPS, or RAS with ``ras``) -> a
    voxel :class:`Box` on the slice along ``axis`` that both corners lie on (nearest voxel centres).
    A 2D image takes ``X0,Y0,X1,Y1``.

    Raises:
        PromptError: unreadable numbers, or corners on different slices (more than half a voxel apart
            along the slicing axis).
    """
    space = "RAS" if ras else "LPS"
    values = parse_numbers(text, (4, 6), "--box-mm", f"X0,Y0,Z0,X1,Y1,Z1 (two opposite corners in {space} mm)")
    half = len(values) // 2
    if half == 2 and not volume.is_2d:
        raise PromptError(f"--box-mm '{text}' has 4 numbers; a 3D scan needs X0,Y0,Z0,X1,Y1,Z1 (two corners in {space} mm)")
    first = _frame_position(volume, axis, values[:half], ras)
    second = _frame_position(volume, axis, values[half:], ras)
    slice_a, slice_b = round(first[0]), round(second[0])
    if slice_a != slice_b:
        raise PromptError(
            f"--box-mm '{text}': the corners lie on slices {slice_a} and {slice_b} along the {axis} axis; "
            "a box lies on one slice (give both corners the slice's coordinate)"
        )
    x0, x1 = sorted((round(first[1]), round(second[1])))
    y0, y1 = sorted((round(first[2]), round(second[2])))
    return Box(int(slice_a), float(x0), float(y0), float(x1), float(y1))


def point_from_mm(text: str, volume: Volume, axis: str = "axial", ras: bool = False) -> Point:
    """``--point-mm X,Y,Z[,1|0]`` (LPS mm, or RAS with ``ras``) -> a :class:`Point` at the nearest
    voxel centre, foreground (1, default) or background (0). A 2D image takes ``X,Y[,1|0]``.

    Raises:
        PromptError: unreadable numbers or a label other than 0 or 1.
    """
    space = "RAS" if ras else "LPS"
    flat = volume.is_2d
    example = f"X,Y or X,Y,1 or X,Y,0 ({space} mm on the image)" if flat else f"X,Y,Z or X,Y,Z,1 or X,Y,Z,0 ({space} mm)"
    values = parse_numbers(text, (2, 3) if flat else (3, 4), "--point-mm", example)
    coords = 2 if flat else 3
    label = values[coords] if len(values) > coords else 1.0
    if label not in (0.0, 1.0):
        raise PromptError(f"--point-mm '{text}' ends with {label:g}; a point's label is 1 (foreground) or 0 (background)")
    frame, x, y = _frame_position(volume, axis, values[:coords], ras)
    return Point(int(round(frame)), float(round(x)), float(round(y)), positive=label == 1.0)
