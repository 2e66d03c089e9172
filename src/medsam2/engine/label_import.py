"""A label map laid on a session as objects that can be edited: last week's work, another model's
output, a project's saved version.

Each label value becomes one object whose answer on every slice is the map's own mask, exactly
(not the model's 256 x 256 rendering of it), with confidence 1. The object counts as prompted by a
mask on its largest slice: that is where a later re-propagation or :meth:`Session.adapt` starts.
Corrections treat the opened slices as reviewed work: a correction changes its own slice and fills
slices the map left empty, and keeps every opened slice it does not touch (an opened answer is
never less confident than the model's); only an erase removes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from medsam2.engine.session_state import ObjectState
from medsam2.engine.tracks import FramePrediction, ObjectTrack, quantise_probability
from medsam2.errors import PromptError
from medsam2.prompts.parse import MaskPrompt, ObjectPrompts, object_label

#: the side of the model-space masks both backbones answer (LiteMedSAM's input, SAM 2's low-res
#: logits): an opened mask is kept there too, for what compares answers in model space
MODEL_MASK_SIZE = 256


def opened_prediction(frame: int, mask: np.ndarray, geometry) -> FramePrediction:
    """A slice's opened mask ((rows, cols) bool) as an answer: exact on the frame, confidence 1."""
    model = geometry.frame_to_model(mask.astype(np.float32), size=MODEL_MASK_SIZE)
    return FramePrediction(frame, quantise_probability(model), 1.0, 1.0, 1.0, prompted=False,
                           exact=torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)))


def label_values(labels_frames: np.ndarray) -> list[int]:
    """The object labels a (frames, rows, cols) label map holds, rising (0 is background).

    Raises:
        PromptError: a map with no structure, or a value that is no object label (negative,
            fractional, over 65535).
    """
    array = np.asarray(labels_frames)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise PromptError("a label map holds whole numbers; this one has fractional or non-finite values")
    values = [int(v) for v in np.unique(array) if v != 0]
    if not values:
        raise PromptError("the label map holds no structure (every voxel is 0)")
    return [object_label(v) for v in values]


def opened_objects(
    labels_frames: np.ndarray, geometry, names: Mapping[int, str] | None = None, taken: set[int] = frozenset()
) -> list[ObjectState]:
    """One object per label of a (frames, rows, cols) label map, in rising label order.

    Arguments:
        labels_frames: the map along the session's axis (:func:`medsam2.io.slicing.to_frames`).
        geometry: the session's frame geometry (``cache.frame_geometry(rows, cols)``).
        names: structure names by label value (a label without one has none).
        taken: labels already in the session: the map may not hold them.

    Raises:
        PromptError: see :func:`label_values`; a label the session has already.
    """
    values = label_values(labels_frames)
    clash = sorted(set(values) & set(taken))
    if clash:
        raise PromptError(f"label {', '.join(map(str, clash))} is already in the session; undo it or open the map in a new session")
    names = names or {}
    objects = []
    for value in values:
        present = labels_frames == value
        area = present.reshape(present.shape[0], -1).sum(axis=1)
        frames = [int(f) for f in np.flatnonzero(area)]
        largest = int(frames[int(np.argmax(area[frames]))])
        prompts = ObjectPrompts(value, names.get(value), masks=[MaskPrompt(largest, present[largest].copy())])
        track = ObjectTrack(value, names.get(value), [largest], {f: opened_prediction(f, present[f], geometry) for f in frames})
        objects.append(ObjectState(prompts, track))
    return objects
