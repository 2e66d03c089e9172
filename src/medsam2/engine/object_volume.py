"""An object's answers as one 3D mask, and the answers of a 3D mask laid back on the object: what
the model-free edits over the whole object (islands, smoothing) read and write."""

from __future__ import annotations

import numpy as np

from medsam2.engine.label_import import opened_prediction
from medsam2.engine.session_state import ObjectState, frame_mask
from medsam2.engine.tracks import ObjectTrack
from medsam2.errors import PromptError


def object_volume(state: ObjectState, n_frames: int, geometry) -> np.ndarray:
    """The object's answers as a (frames, rows, cols) bool mask along the session's axis.

    Raises:
        PromptError: an object not segmented yet, or one with no voxel.
    """
    label = state.prompts.label
    if state.track is None:
        raise PromptError(f"label {label} is not segmented yet; propagate it first")
    masks = {f: m for f in range(n_frames) if (m := frame_mask(state, f, geometry)) is not None}
    if not masks:
        raise PromptError(f"label {label} has no voxel")
    rows, cols = next(iter(masks.values())).shape
    volume = np.zeros((n_frames, rows, cols), bool)
    for frame, mask in masks.items():
        volume[frame] = mask
    return volume


def with_volume(state: ObjectState, before: np.ndarray, after: np.ndarray, geometry) -> ObjectState:
    """The object whose slices that differ between ``before`` and ``after`` ((frames, rows, cols)
    bool) answer ``after`` there (:func:`with_masks`); the other slices keep the model's answers."""
    changed = np.flatnonzero((before != after).reshape(len(after), -1).any(axis=1))
    return with_masks(state, {int(frame): after[frame] for frame in changed}, geometry)


def with_masks(state: ObjectState, masks: dict[int, np.ndarray], geometry) -> ObjectState:
    """The object answering ``masks`` ({frame: (rows, cols) bool}) on those frames, exactly, with
    confidence 1; a frame given an empty mask has no answer. The other frames stay."""
    frames = dict(state.track.frames)
    for frame, mask in masks.items():
        if mask.any():
            frames[frame] = opened_prediction(frame, mask, geometry)
        else:
            frames.pop(frame, None)
    new = state.copy()
    new.track = ObjectTrack(state.prompts.label, state.track.name, list(state.track.prompted_frames), dict(sorted(frames.items())))
    return new
