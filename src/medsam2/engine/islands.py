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

from medsam2.engine.object_volume import object_volume, with_volume
from medsam2.engine.session_state import ObjectState
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
    if min_voxels is not None and min_voxels < 1:
        raise PromptError(f"min_voxels is a size in voxels (1 or more), not {min_voxels}")
    volume = object_volume(state, n_frames, geometry)
    kept, removed, islands = kept_islands(volume, min_voxels)
    if removed == 0:
        raise PromptError(f"label {label} is one island{'' if min_voxels is None else ' of that size or more'}: nothing to remove")
    new = with_volume(state, volume, kept, geometry)
    return new, IslandsSummary(label, removed, int(volume.sum() - kept.sum()), islands)
