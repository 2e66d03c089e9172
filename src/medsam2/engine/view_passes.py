"""The mechanics of multi-view, with no model of their own: where a re-prompt along another axis
is boxed (the slice of a mask read along that axis, ``largest`` or ``middle``, and the mask's
inclusive box on it), the passes along the two other axes (run by a callable the caller gives) and
their fusion by majority. Shared by multi-view runs (:mod:`medsam2.engine.multiview`), one
object's multi-view in a session (:mod:`medsam2.engine.session_multiview`) and the evaluation's
reference boxes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from medsam2.errors import UsageError
from medsam2.io.slicing import other_axes, to_frames, voxel_axis
from medsam2.prompts.parse import Box, ObjectPrompts

#: where the other axes' boxes are taken from the first pass's mask
STARTS = ("largest", "middle")


def start_frame(mask: np.ndarray, start: str = "largest") -> int:
    """The frame a re-prompt is boxed on, for a (frames, rows, cols) bool mask with foreground.

    Arguments:
        mask: one object's mask along an axis, (frames, rows, cols).
        start: "largest" (the frame with the most foreground voxels; the first of ties) or
            "middle" (the middle of the extent, or the nearest frame holding foreground where the
            extent has a gap there).

    Raises:
        UsageError: an unknown ``start``, or a mask with no foreground.
    """
    if start not in STARTS:
        raise UsageError(f"unknown start '{start}'; choose {' or '.join(STARTS)}")
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    held = np.flatnonzero(areas)
    if held.size == 0:
        raise UsageError("internal: a re-prompt needs a mask with foreground")
    if start == "largest":
        return int(np.argmax(areas))
    middle = int((held[0] + held[-1]) // 2)
    return middle if areas[middle] else int(held[np.argmin(np.abs(held - middle))])


def mask_box(mask: np.ndarray, frame: int) -> Box:
    """The inclusive bounding box of ``mask[frame]`` (a (frames, rows, cols) bool mask) as a
    :class:`Box` (x = column, y = row), widened by one voxel where it is one voxel wide or tall,
    as the evaluation's reference boxes are, so that the box has an area."""
    rows, cols = np.nonzero(mask[frame])
    x0, y0, x1, y1 = int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())
    height, width = mask.shape[1:3]
    if x1 == x0:
        x0, x1 = (x0, x0 + 1) if x0 + 1 < width else (max(x0 - 1, 0), x0)
    if y1 == y0:
        y0, y1 = (y0, y0 + 1) if y0 + 1 < height else (max(y0 - 1, 0), y0)
    return Box(frame, x0, y0, x1, y1)


def other_passes(
    segment_along: Callable[[list[ObjectPrompts], str], np.ndarray], first: np.ndarray, items: Sequence[ObjectPrompts],
    axis: str, direction: tuple[float, ...], start: str = "largest",
) -> dict[str, np.ndarray]:
    """The two other axes' (z, y, x) label maps, each from boxes on ``first`` read along it.

    Arguments:
        segment_along: (prompts along an axis, that axis) -> the (z, y, x) label map a pass gives.
        first: the (z, y, x) label map along ``axis``; only objects of ``items`` it holds are re-prompted.
        direction: the volume's direction cosines (to resolve the axes' names).
    """
    per_axis: dict[str, np.ndarray] = {}
    found = [obj for obj in items if (first == obj.label).any()]
    for other in other_axes(axis):
        frames = to_frames(first, voxel_axis(other, direction))
        prompts = []
        for obj in found:
            mask = frames == obj.label
            prompts.append(ObjectPrompts(obj.label, name=obj.name, boxes=[mask_box(mask, start_frame(mask, start))]))
        per_axis[other] = segment_along(prompts, other) if prompts else np.zeros_like(first)
    return per_axis


def fuse_majority(maps: Sequence[np.ndarray], labels: Sequence[int]) -> np.ndarray:
    """Per object, the voxels that at least two of three label maps give it.

    Arguments:
        maps: three (z, y, x) integer label maps of one shape.
        labels: the objects' labels to fuse (others are left out).

    Returns:
        (z, y, x) label map of the first map's dtype. With three voters and one label per voxel in
        each map, at most one label reaches two votes, so objects never compete for a voxel.
    """
    if len(maps) != 3:
        raise UsageError(f"internal: majority fusion takes three label maps, not {len(maps)}")
    fused = np.zeros_like(maps[0])
    for label in labels:
        votes = sum((m == label).astype(np.uint8) for m in maps)
        fused[votes >= 2] = label
    return fused
