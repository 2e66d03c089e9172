"""*Remove small islands* (3D Slicer's *Islands* effect): an object's pieces that are not connected
to its largest one in 3D (face-connected voxels, SimpleITK's connected components), or that are
smaller than a size, are taken out of its answers.

Only the slices that change get new answers (their masks exactly, confidence 1, as an opened label
map's); the others keep the model's.
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
class IslandsSummary:
    """What a removal did: the object, the islands and voxels it removed, the islands it kept."""

    label: int
    removed_islands: int
    removed_voxels: int
    kept_islands: int


def kept_islands(mask: np.ndarray, min_voxels: int | None) -> tuple[np.ndarray, int, int]:
    """(the kept voxels, islands removed, islands kept) of a (frames, rows, cols) bool mask: the
    largest island (``min_voxels`` None) or every island of at least ``min_voxels`` voxels."""
    components = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), False),
                                       sortByObjectSize=True)
    numbered = sitk.GetArrayFromImage(components)
    count = int(numbered.max())
    if min_voxels is None:
        keep = 1 if count else 0
    else:
        sizes = np.bincount(numbered.ravel())[1:]
        keep = int((sizes >= min_voxels).sum())  # numbered by size: the kept ones come first
    return (numbered >= 1) & (numbered <= keep), count - keep, keep


def without_islands(state: ObjectState, n_frames: int, geometry, min_voxels: int | None) -> tuple[ObjectState, IslandsSummary]:
    """The object with its small islands taken out.

    Raises:
        PromptError: an object not segmented yet, or one with nothing to remove.
    """
    label = state.prompts.label
    if state.track is None:
        raise PromptError(f"label {label} is not segmented yet; propagate it first")
    if min_voxels is not None and min_voxels < 1:
        raise PromptError(f"min_voxels is a size in voxels (1 or more), not {min_voxels}")
    masks = {f: m for f in range(n_frames) if (m := frame_mask(state, f, geometry)) is not None}
    if not masks:
        raise PromptError(f"label {label} has no voxel to keep")
    rows, cols = next(iter(masks.values())).shape
    volume = np.zeros((n_frames, rows, cols), bool)
    for frame, mask in masks.items():
        volume[frame] = mask
    kept, removed, islands = kept_islands(volume, min_voxels)
    if removed == 0:
        raise PromptError(f"label {label} is one island{'' if min_voxels is None else ' of that size or more'}: nothing to remove")
    frames = dict(state.track.frames)
    for frame, mask in masks.items():
        if not np.array_equal(kept[frame], mask):
            if kept[frame].any():
                frames[frame] = opened_prediction(frame, kept[frame], geometry)
            else:
                del frames[frame]
    new = state.copy()
    new.track = ObjectTrack(label, state.track.name, list(state.track.prompted_frames), frames)
    return new, IslandsSummary(label, removed, int(volume.sum() - kept.sum()), islands)
