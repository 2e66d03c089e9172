"""The spherical 3D brush (3D Slicer's *Paint* with *Sphere brush*): a stroke drawn on one slice
paints (or erases) every voxel within the brush's radius of it in 3D, so the slices above and
below get the stroke's footprint shrunk as a ball's cross-section shrinks.

The stroke is what the page's 2D brush drew on its slice (its width is the brush's diameter). On
a slice ``d`` mm away the footprint is the stroke eroded by ``r - sqrt(r^2 - d^2)`` mm (``r`` the
brush radius), in millimetres from SimpleITK's signed Maurer distance map, so anisotropic voxels
give a round ball in the patient, not in voxel counts. A threshold range, when given, keeps only
the voxels whose scan intensity lies within it (threshold-limited painting, in 3D).

The painted slices become the object's answers there, exactly, with confidence 1 (as an opened
label map's); the brush never propagates, and a later correction keeps them as it keeps opened work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medsam2.engine.fill_between import signed_distance
from medsam2.engine.label_import import opened_objects
from medsam2.engine.object_volume import with_masks
from medsam2.engine.session_state import ObjectState, frame_mask
from medsam2.errors import PromptError


@dataclass(frozen=True)
class BrushSummary:
    """What a 3D brush stroke did: the object, the slices it changed (sorted), the voxels it
    painted or erased, and whether it created the object."""

    label: int
    changed_slices: list[int]
    changed_voxels: int
    created: bool


def sphere_footprint(
    stroke: np.ndarray, slice: int, n_frames: int, spacing_frames: tuple[float, float, float], radius_mm: float
) -> dict[int, np.ndarray]:
    """The voxels a stroke with a ball brush covers: {slice: (rows, cols) bool}, non-empty ones only.

    Arguments:
        stroke: (rows, cols) bool, the stroke on ``slice`` (the 2D brush's footprint).
        slice: the stroke's slice.
        n_frames: slices along the axis.
        spacing_frames: (between slices, rows, cols) in mm.
        radius_mm: the brush's radius.
    """
    stroke = np.asarray(stroke, bool)
    footprint = {slice: stroke} if stroke.any() else {}
    if not footprint or radius_mm <= 0:
        return footprint
    depth = -signed_distance(stroke, spacing_frames[1:])  # mm inside the stroke's edge (>= 0 inside)
    reach = int(math.floor(radius_mm / spacing_frames[0]))
    for offset in range(1, reach + 1):
        away = offset * spacing_frames[0]
        shrink = radius_mm - math.sqrt(max(radius_mm**2 - away**2, 0.0))
        mask = depth >= shrink
        if not mask.any():
            break
        for frame in (slice - offset, slice + offset):
            if 0 <= frame < n_frames:
                footprint[frame] = mask
    return dict(sorted(footprint.items()))


def within_range(footprint: dict[int, np.ndarray], intensities_frames: np.ndarray, low: float, high: float) -> dict[int, np.ndarray]:
    """The footprint's voxels whose intensity ((frames, rows, cols), the scan's own values) is
    within [low, high]; slices left empty are dropped."""
    kept = {f: m & (intensities_frames[f] >= low) & (intensities_frames[f] <= high) for f, m in footprint.items()}
    return {f: m for f, m in kept.items() if m.any()}


def brushed_state(
    state: ObjectState | None, label: int, footprint: dict[int, np.ndarray], erase: bool, n_frames: int, geometry,
    name: str | None = None,
) -> tuple[ObjectState, BrushSummary]:
    """The object with the footprint painted in (or erased from) its answers.

    ``state`` None creates the object from the painted voxels (an erase cannot).

    Raises:
        PromptError: an empty footprint, an object with prompts not propagated yet, an erase on a
            new object, or a stroke that changes nothing.
    """
    if not footprint:
        raise PromptError(f"label {label}: the stroke covers no voxel (within the range, where one is given)")
    if state is None:
        if erase:
            raise PromptError(f"no object with label {label} to erase from")
        labels = np.zeros((n_frames, *next(iter(footprint.values())).shape), np.int32)
        for frame, mask in footprint.items():
            labels[frame][mask] = label
        created = opened_objects(labels, geometry, {label: name} if name else None)[0]
        return created, BrushSummary(label, sorted(footprint), int(sum(m.sum() for m in footprint.values())), True)
    if state.track is None:
        raise PromptError(f"label {label} is not segmented yet; propagate it first (the 3D brush edits its answers)")
    masks: dict[int, np.ndarray] = {}
    voxels = 0
    for frame, stroke in footprint.items():
        current = frame_mask(state, frame, geometry)
        current = np.zeros_like(stroke) if current is None else current
        new = current & ~stroke if erase else current | stroke
        if difference := int((new != current).sum()):
            masks[frame] = new
            voxels += difference
    if not masks:
        raise PromptError(f"label {label}: the stroke {'erases' if erase else 'paints'} nothing "
                          f"({'no voxel of the object' if erase else 'every voxel is painted already'})")
    return with_masks(state, masks, geometry), BrushSummary(label, sorted(masks), voxels, False)
