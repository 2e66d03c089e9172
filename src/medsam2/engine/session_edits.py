"""The edits of a session's objects that need no model: remove, rename, lock, fill between slices,
remove small islands, smooth and the spherical 3D brush. Mixed into :class:`medsam2.engine.session.Session`, which provides
``_state_of`` (a checked object), ``_step`` (one undoable change), ``_geometry``, ``shape``,
``volume`` and ``voxel_axis``; each edit is one step of ``undo``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medsam2.engine.brush import BrushSummary, brushed_state, sphere_footprint, within_range
from medsam2.engine.fill_between import FillSummary, filled_state
from medsam2.engine.islands import IslandsSummary, without_islands
from medsam2.engine.smoothing import SmoothSummary, smoothed_state
from medsam2.errors import PromptError
from medsam2.io.slicing import frame_spacing, to_frames
from medsam2.prompts.types import object_label


class ObjectEdits:
    """Remove, rename, lock, fill between slices, remove islands, paint with a 3D brush (each one
    undo step; PromptError for a label that is no object of the session)."""

    def remove(self, label: int) -> None:
        """Remove an object: its prompts, corrections and answers."""
        label = object_label(label)
        self._state_of(label)
        self._step({label: None})

    def rename(self, label: int, name: str | None) -> None:
        """Give an object another name (None: none)."""
        label = object_label(label)
        renamed = self._state_of(label).copy()
        renamed.prompts.name = name
        if renamed.track is not None:
            renamed.track.name = name
        self._step({label: renamed})

    def lock(self, label: int, locked: bool = True) -> None:
        """Lock an object (or unlock it, ``locked=False``): a locked object wins every voxel it
        shares with another in the label map, so another's propagation never takes its voxels."""
        label = object_label(label)
        changed = self._state_of(label).copy()
        changed.locked = bool(locked)
        self._step({label: changed})

    def locked_labels(self) -> frozenset[int]:
        """The locked objects' labels."""
        return frozenset(label for label, state in self._objects.items() if state.locked)

    def fill_between(self, label: int) -> FillSummary:
        """Fill the empty slices between the object's slices (its answers, or before propagating
        its painted masks) by shape-based interpolation (:mod:`medsam2.engine.fill_between`); its
        other slices stay. PromptError also for fewer than two slices with the structure, or no gap."""
        spacing = frame_spacing(self.volume.spacing, self.voxel_axis)[1:]
        new, summary = filled_state(self._state_of(label), self.shape[0], self._geometry(), spacing)
        self._step({summary.label: new})
        return summary

    def remove_islands(self, label: int, min_voxels: int | None = None) -> IslandsSummary:
        """Keep the object's largest 3D island (``min_voxels`` None) or every island of at least
        ``min_voxels`` voxels, and take the rest out (:mod:`medsam2.engine.islands`). PromptError
        also for an object not propagated yet, or one with nothing to remove."""
        new, summary = without_islands(self._state_of(label), self.shape[0], self._geometry(), min_voxels)
        self._step({summary.label: new})
        return summary

    def smooth(self, label: int, method: str = "median", kernel_mm: float | None = None) -> SmoothSummary:
        """Smooth the object in 3D (:mod:`medsam2.engine.smoothing`): ``median`` (edges, small
        extrusions and holes), ``opening`` (removes extrusions) or ``closing`` (fills holes), with
        a kernel ``kernel_mm`` wide (None: three voxels of the slice's finer spacing). PromptError
        also for an object not propagated yet, an unknown method, a kernel under two voxels along
        every axis, or nothing to change."""
        spacing = frame_spacing(self.volume.spacing, self.voxel_axis)
        new, summary = smoothed_state(self._state_of(object_label(label)), self.shape[0], self._geometry(), spacing, method, kernel_mm)
        self._step({summary.label: new})
        return summary

    def paint_sphere(
        self,
        label: int,
        slice: int,
        stroke: np.ndarray,
        radius_mm: float,
        erase: bool = False,
        within: Sequence[float] | None = None,
        name: str | None = None,
    ) -> BrushSummary:
        """Paint (or ``erase``) a stroke with a ball brush: every voxel within ``radius_mm`` of the
        stroke in 3D (:mod:`medsam2.engine.brush`). The changed slices' answers become the painted
        masks, exactly; nothing propagates. A new label creates the object (``name`` its name).

        Arguments:
            label: the object.
            slice: the stroke's slice along the session's axis.
            stroke: (rows, cols) bool, the stroke as the 2D brush drew it.
            radius_mm: the brush's radius in mm (0: this slice only).
            erase: take the voxels out of the object instead.
            within: (low, high): only voxels whose scan intensity lies within it (threshold-limited).

        Raises:
            PromptError: a slice outside the scan, a mis-sized or empty stroke, a negative radius,
                a range with low above high, an object with prompts not propagated yet, an erase
                on a new label, or a stroke that changes nothing; the session is left as it was.
        """
        label = object_label(label)
        n_frames, rows, cols = self.shape
        if not 0 <= int(slice) < n_frames:
            raise PromptError(f"slice {slice} is outside the scan's {n_frames} slices along the {self.axis} axis")
        stroke = np.asarray(stroke, bool)
        if stroke.shape != (rows, cols):
            raise PromptError(f"the stroke is {stroke.shape} (rows, cols); slices here are ({rows}, {cols})")
        if not np.isfinite(radius_mm) or radius_mm < 0:
            raise PromptError(f"the brush radius is a size in mm (0 or more), not {radius_mm}")
        footprint = sphere_footprint(stroke, int(slice), n_frames, frame_spacing(self.volume.spacing, self.voxel_axis), radius_mm)
        if within is not None:
            low, high = (float(v) for v in within)
            if not low <= high:
                raise PromptError(f"the intensity range {low:g}..{high:g} is empty (low above high)")
            intensities = to_frames(self.volume.array, self.voxel_axis)
            footprint = within_range(footprint, intensities if intensities.ndim == 3 else intensities.mean(axis=-1), low, high)
        state = self._objects.get(label)
        new, summary = brushed_state(state, label, footprint, erase, n_frames, self._geometry(), name)
        self._step({label: new})
        return summary
