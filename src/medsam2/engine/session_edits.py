"""The edits of a session's objects that need no model: remove, rename, lock, fill between slices
and remove small islands. Mixed into :class:`medsam2.engine.session.Session`, which provides
``_state_of`` (a checked object), ``_step`` (one undoable change), ``_geometry``, ``shape``,
``volume`` and ``voxel_axis``; each edit is one step of ``undo``."""

from __future__ import annotations

from medsam2.engine.fill_between import FillSummary, filled_state
from medsam2.engine.islands import IslandsSummary, without_islands
from medsam2.io.slicing import frame_spacing
from medsam2.prompts.types import object_label


class ObjectEdits:
    """Remove, rename, lock, fill between slices, remove islands (each one undo step; PromptError for
    a label that is no object of the session)."""

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
