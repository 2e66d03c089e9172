"""*Fill between slices* (3D Slicer's name): an object drawn or answered on some slices gets the
empty slices between them filled by shape-based interpolation (Raya and Udupa's: the zero level
of the linear blend of the two nearest filled slices' signed distance maps, in millimetres, each
map from SimpleITK's Maurer distance transform).

Filled slices keep their masks; only the empty slices strictly between two filled ones change,
each from its nearest filled slice on either side. The filled masks are the object's answers
there, exactly, with confidence 1 (as an opened label map's slices are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from medsam2.engine.label_import import opened_prediction
from medsam2.engine.session_state import ObjectState, frame_mask
from medsam2.engine.tracks import ObjectTrack
from medsam2.errors import PromptError


@dataclass(frozen=True)
class FillSummary:
    """What a fill did: the object, the slices it filled (sorted) and the filled slices it read."""

    label: int
    filled_slices: list[int]
    from_slices: list[int]


def signed_distance(mask: np.ndarray, spacing_rows_cols: tuple[float, float]) -> np.ndarray:
    """(rows, cols) signed distance to the mask's edge in mm: negative inside, positive outside."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing((float(spacing_rows_cols[1]), float(spacing_rows_cols[0])))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    # Maurer's map is 0 on the inside boundary pixels: half a pixel moves its zero to the edge
    # between inside and outside, so that a blend neither shrinks nor grows the shapes
    return sitk.GetArrayFromImage(distance) - 0.25 * (spacing_rows_cols[0] + spacing_rows_cols[1])


def interpolate_gaps(masks: dict[int, np.ndarray], spacing_rows_cols: tuple[float, float]) -> dict[int, np.ndarray]:
    """The empty slices between filled ones: {slice: (rows, cols) bool}, from the slices of
    ``masks`` (each non-empty) by shape-based interpolation."""
    keys = sorted(masks)
    filled: dict[int, np.ndarray] = {}
    for low, high in zip(keys, keys[1:]):
        if high - low < 2:
            continue
        below, above = signed_distance(masks[low], spacing_rows_cols), signed_distance(masks[high], spacing_rows_cols)
        for frame in range(low + 1, high):
            t = (frame - low) / (high - low)
            filled[frame] = (1 - t) * below + t * above <= 0
    return filled


def filled_state(state: ObjectState, n_frames: int, geometry, spacing_rows_cols: tuple[float, float]) -> tuple[ObjectState, FillSummary]:
    """The object with its gaps filled: its current answers (or, before it is propagated, its
    drawn masks) on the filled slices, and the interpolated ones between.

    Raises:
        PromptError: fewer than two filled slices, or none empty between them.
    """
    if state.track is not None:
        masks = {f: m for f in range(n_frames) if (m := frame_mask(state, f, geometry)) is not None}
    else:
        masks = {p.frame: np.asarray(p.mask, bool) for p in state.prompts.masks if np.asarray(p.mask).any()}
    label = state.prompts.label
    if len(masks) < 2:
        raise PromptError(f"label {label}: fill between slices needs the structure on two or more slices (paint them first)")
    gaps = interpolate_gaps(masks, spacing_rows_cols)
    gaps = {f: m for f, m in gaps.items() if m.any()}
    if not gaps:
        raise PromptError(f"label {label} has no empty slice between its slices {min(masks)}-{max(masks)}: nothing to fill")
    new = state.copy()
    frames = dict(new.track.frames) if new.track is not None else {f: opened_prediction(f, m, geometry) for f, m in masks.items()}
    frames.update({f: opened_prediction(f, m, geometry) for f, m in gaps.items()})
    prompted = list(new.track.prompted_frames) if new.track is not None else sorted(masks)
    new.track = ObjectTrack(label, state.prompts.name, prompted, dict(sorted(frames.items())))
    return new, FillSummary(label, sorted(gaps), sorted(masks))
