"""Multi-view for one object of a session (the page's *Multi-view*): its answer along the session's
axis, re-prompted along the two other axes from boxes on it, and the three fused by majority, as
``segment --multiview`` does for a whole run (:mod:`medsam2.engine.multiview`). Mixed into
:class:`medsam2.engine.session.Session`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from medsam2.engine.object_volume import object_volume, with_volume
from medsam2.engine.view_boxes import mask_box, start_frame
from medsam2.errors import PromptError
from medsam2.io.slicing import from_frames, other_axes, to_frames
from medsam2.prompts.types import object_label


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
        votes = first.astype(np.uint8)
        axes = other_axes(self.axis)
        for other in axes:
            passing = type(self)(self.engine, source, axis=other, window=self.window, feature_cache_mb=self.cache.budget_mb)
            mask = to_frames(first, passing.voxel_axis)
            passing.add_prompts(label, boxes=[mask_box(mask, start_frame(mask, start))])
            votes += passing.result(sanity=False).labels == label
        after = to_frames(votes >= 2, self.voxel_axis)
        if not after.any():
            raise PromptError(f"label {label}: the two other axes found none of it; the answer stays as it is")
        self._step({label: with_volume(state, before, after, self._geometry())})
        seconds = time.perf_counter() - began
        self._work_seconds += seconds
        return MultiviewSummary(label, axes, int((after & ~before).sum()), int((before & ~after).sum()), round(seconds, 3))
