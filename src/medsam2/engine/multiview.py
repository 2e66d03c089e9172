"""Multi-view segmentation: propagate along the user's axis, re-prompt along the two other axes
from that result, and fuse the three label maps by majority.

A structure that is thin or changes shape quickly along one axis (a hippocampus sliced axially)
is often followed well along another. The user prompts along one axis (``axis``, as
:meth:`Segmenter.segment`); for each of the two other axes and each object found on the first pass,
the first pass's mask is read along that axis, boxed on one slice (``start``: the slice where the
object's area is largest, or the middle slice of its extent) and propagated from that box. A voxel
is the object's where at least two of the three passes say so.

Arrays are in the volume's (z, y, x) = (k, j, i) order throughout; boxes follow
:mod:`medsam2.io.slicing`'s frame layout (columns x, rows y of a frame along the axis) and
:class:`~medsam2.prompts.types.Box`'s inclusive voxel convention.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from medsam2.engine.results import SegmentationResult
from medsam2.engine.view_passes import STARTS, fuse_majority, other_passes
from medsam2.errors import UsageError
from medsam2.io.slicing import check_axis, other_axes, to_frames, voxel_axis
from medsam2.prompts.parse import ObjectPrompts

if TYPE_CHECKING:
    from medsam2.engine.segmenter import Segmenter
    from medsam2.io.volume import Volume

def segment_multiview(
    segmenter: Segmenter,
    volume: Volume,
    objects: ObjectPrompts | Sequence[ObjectPrompts],
    axis: str = "axial",
    window: str = "auto",
    start: str = "largest",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Segment ``objects`` along ``axis``, then along the two other axes from boxes on the first
    result, and fuse the three passes by majority.

    Arguments:
        segmenter: the :class:`~medsam2.engine.segmenter.Segmenter` that runs each pass.
        volume: the scan; (z, y, x) array, at least two voxels along every axis.
        objects: the user's prompts, in frame coordinates along ``axis`` (as :meth:`Segmenter.segment`).
        axis: the prompts' axis: "axial", "coronal", "sagittal" (the patient's, resolved with the
            volume's direction) or "k", "j", "i"; the two other passes use the two other axes named
            the same way.
        window: intensity window of every pass.
        start: which slice of the first pass's mask each re-prompt is boxed on along an other axis:
            "largest" (most foreground; the default) or "middle" (middle of the extent).

    Returns:
        ``(labels, per_axis)``: ``labels`` is the fused (z, y, x) label map in the volume's array
        order; ``per_axis`` maps each axis name (``axis`` and the two others) to that pass's
        (z, y, x) label map. An object with no voxel on the first pass is not re-prompted and is
        absent from ``labels``.

    Raises:
        UsageError: an unknown axis or start, or a volume one voxel thin along an axis.
        PromptError, ArgumentTypeError: as :meth:`Segmenter.segment` for the user's prompts.
    """
    check_axis(axis)
    if start not in STARTS:
        raise UsageError(f"unknown start '{start}'; choose {' or '.join(STARTS)}")
    if min(volume.array.shape[:3]) < 2:
        raise UsageError(f"multi-view segmentation needs a 3D volume; this one is {volume.array.shape[:3]} (z, y, x)")
    items = [objects] if isinstance(objects, ObjectPrompts) else list(objects)
    first = segmenter.segment(volume, items, axis=axis, window=window).labels
    along = lambda prompts, other: segmenter.segment(volume, prompts, axis=other, window=window).labels  # noqa: E731
    per_axis = {axis: first, **other_passes(along, first, items, axis, volume.direction, start)}
    found = [obj.label for obj in items if (first == obj.label).any()]
    return fuse_majority(list(per_axis.values()), found), per_axis


def fuse_views(
    segmenter: Segmenter, volume: Volume, first: SegmentationResult, objects: Sequence[ObjectPrompts], axis: str,
    window: str = "auto", start: str = "largest",
) -> SegmentationResult:
    """``first`` (the user's prompts along ``axis``) fused with the two other axes' passes, as
    :func:`segment_multiview` does, with its report brought up to date: each object's slices
    (along ``axis``), voxels and volume are the fused map's; its confidences stay the first
    pass's; the other passes' slices and seconds are added; a line in ``warnings`` says so.

    Raises:
        UsageError: a volume one voxel thin along an axis.
    """
    if min(volume.array.shape[:3]) < 2:
        raise UsageError(f"multi-view segmentation needs a 3D volume; this one is {volume.array.shape[:3]} (z, y, x)")
    passes: list[SegmentationResult] = []

    def along(prompts: list[ObjectPrompts], other: str) -> np.ndarray:
        passes.append(segmenter.segment(volume, prompts, axis=other, window=window))
        return passes[-1].labels

    per_axis = {axis: first.labels, **other_passes(along, first.labels, objects, axis, volume.direction, start)}
    found = [obj.label for obj in objects if (first.labels == obj.label).any()]
    labels = fuse_majority(list(per_axis.values()), found)
    report = copy.deepcopy(first.report)
    frames = to_frames(labels, voxel_axis(axis, volume.direction))
    for obj in report.objects:
        mask = frames == obj.label
        obj.slices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)).tolist()
        obj.first_slice, obj.last_slice = (obj.slices[0], obj.slices[-1]) if obj.slices else (None, None)
        obj.voxels = int(mask.sum())
        obj.volume_ml = round(obj.voxels * volume.voxel_volume_ml, 3)
    for other in passes:
        for name in ("preprocess_seconds", "encode_seconds", "decode_seconds", "total_seconds"):
            setattr(report.timings, name, round(getattr(report.timings, name) + getattr(other.report.timings, name), 3))
        report.slices_encoded += other.report.slices_encoded
    names = " and ".join(other_axes(axis))
    report.warnings.append(
        f"multi-view: the {axis} result fused with {names} passes boxed on it (a voxel where 2 of 3 agree); "
        "slices and volumes are the fused map's, confidences the first pass's"
    )
    return SegmentationResult(labels=labels, report=report)
