"""Multi-view for one object of a session (the page's *Multi-view*): its answer along the session's
axis, re-prompted along the two other axes from boxes on it, and the three fused by majority, as
``segment --multiview`` does for a whole run (:mod:`medsam2.engine.multiview`). Mixed into
:class:`medsam2.engine.session.Session`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from medsam2.engine.object_volume import object_volume, with_volume
from medsam2.engine.view_passes import fuse_majority, other_passes
from medsam2.errors import PromptError
from medsam2.io.slicing import from_frames, to_frames
from medsam2.prompts.types import ObjectPrompts, object_label


@dataclass(frozen=True)
class MultiviewSummary:
    """What a fusion did: the object, the two other axes, the voxels added and removed, seconds."""

    label: int
    axes: tuple[str, str]
    added_voxels: int
    removed_voxels: int
    seconds: float


class MultiView:
    """:meth:`fuse_views` (the session provides ``engine``, ``cache``, ``volume``, ``model_image``, ``window``,
    ``axis``, ``voxel_axis``, ``shape``, ``_state_of``, ``_geometry`` and ``_step``)."""

    def fuse_views(self, label: int, start: str = "largest") -> MultiviewSummary:
        """Fuse the object's answer with passes along the two other axes, each boxed on its
        ``start`` slice of the answer read along that axis ("largest" or "middle"); a voxel is the
        object's where two of the three say so. The answers that change become exact (confidence
        1); one step of undo. The passes see what the model sees (:meth:`use_image`).

        Raises:
            PromptError: an object not propagated yet, or with no voxel; a scan one voxel thin
                along an axis.
        """
        began = time.perf_counter()
        label = object_label(label)
        state = self._state_of(label)
        if min(self.volume.array.shape[:3]) < 2:
            raise PromptError(f"multi-view needs a 3D scan; this one is {self.volume.array.shape[:3]} voxels (z, y, x)")
        before = object_volume(state, self.shape[0], self._geometry())
        first = from_frames(before, self.voxel_axis)  # (z, y, x)
        source = self.model_image if self.model_image is not None else self.volume

        def along(prompts: list[ObjectPrompts], other: str) -> np.ndarray:  # a pass: a session along another axis
            passing = type(self)(self.engine, source, axis=other, window=self.window, feature_cache_mb=self.cache.budget_mb)
            for obj in prompts:
                passing.add(obj)
            return passing.result(sanity=False).labels

        first_labels = first.astype(np.uint8) * label if label < 256 else first.astype(np.uint16) * label
        per_axis = other_passes(along, first_labels, [ObjectPrompts(label)], self.axis, self.volume.direction, start)
        after = to_frames(fuse_majority([first_labels, *per_axis.values()], [label]) == label, self.voxel_axis)
        if not after.any():
            raise PromptError(f"label {label}: the two other axes found none of it; the answer stays as it is")
        self._step({label: with_volume(state, before, after, self._geometry())})
        seconds = time.perf_counter() - began
        self._work_seconds += seconds
        return MultiviewSummary(label, tuple(per_axis), int((after & ~before).sum()), int((before & ~after).sum()), round(seconds, 3))
