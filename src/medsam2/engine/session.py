"""An interactive session over one volume: prompt, propagate, correct, propagate again, undo, redo
(a walk-through: docs/python-api.md).

Every slice is encoded at most once while its features stay in the session's feature cache (a
memory budget, least recently used out), so a correction costs decoding only. A correction pins
its slice and, on the LiteMedSAM engine, propagates outward from it only as far as it changes the
answer (see :meth:`medsam2.engine.litemedsam_step.LiteMedSAMStep.repropagate`); on the SAM 2 engine the corrected
object is tracked again through the volume from all its prompts (features cached).

The session holds the state and the public calls; the edits that need no model (remove, rename,
fill between slices, islands) are :class:`medsam2.engine.session_edits.ObjectEdits`; undo and redo
are :class:`medsam2.engine.session_history.SessionHistory`; the corrections are made in
:mod:`medsam2.engine.corrections`, the result is built in :mod:`medsam2.engine.session_results`,
and the per-object state they share is :mod:`medsam2.engine.session_state`. The engine that opens
sessions is :class:`medsam2.engine.engine.Engine`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from medsam2.engine.adapt import AdaptSettings, AdaptSummary, repropagate_adapted
from medsam2.engine.corrections import CorrectionSummary, check_correction, make_correction
from medsam2.engine.feature_cache import CachedBackbone, CacheStats
from medsam2.engine.feature_disk import FeatureFolder
from medsam2.engine.label_import import opened_objects
from medsam2.engine.litemedsam_step import LiteMedSAMStep
from medsam2.engine.results import SegmentationResult
from medsam2.engine.sanity import ObjectEvidence
from medsam2.engine.session_edits import ObjectEdits
from medsam2.engine.session_history import SessionHistory
from medsam2.engine.session_input import ModelInput
from medsam2.engine.session_multiview import MultiView
from medsam2.engine.session_results import label_map, object_evidence, object_reports, session_report, session_timings
from medsam2.engine.session_state import (
    DEFAULT_FEATURE_CACHE_MB,
    EngineView,
    ObjectState,
    absorb,
    copy_prompts,
    many_objects_note,
    new_tracker,
    on_frame,
)
from medsam2.engine.tracks import ObjectTrack, PropagationStats
from medsam2.errors import ArgumentTypeError, PromptError
from medsam2.io.slicing import check_axis, from_frames, to_frames, voxel_axis
from medsam2.io.volume import Volume
from medsam2.prompts.parse import Box, MaskPrompt, ObjectPrompts, Point, object_label, validate_prompts

#: medsam2 exports these from here (CorrectionSummary is defined in medsam2.engine.corrections)
__all__ = ["CorrectionSummary", "PropagationUpdate", "Session"]


@dataclass(frozen=True)
class PropagationUpdate:
    """One decoded slice while propagating.

    Attributes:
        label: the object decoded.
        slice: the slice index along the session's axis.
        done: slices decoded so far in this call (all objects).
        total: an upper bound of ``done``: slices in the scan x objects propagated (an object ends
            where its structure ends, usually well before).
    """

    label: int
    slice: int
    done: int
    total: int
    #: (rows, cols) bool, the object's answer on that slice, where asked for (``propagate(masks=True)``)
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


class Session(ObjectEdits, ModelInput, MultiView):
    """Segmentation of one volume that keeps its features, prompts and answers between calls.

    Made by :meth:`medsam2.Segmenter.open`; see the module docstring for a walk-through.

    Arguments:
        engine: the backbone, memory rule and settings (a :class:`CachedBackbone` is used as the
            session's cache as it is).
        volume: the scan.
        axis: "axial", "coronal", "sagittal" (the patient's, from the direction cosines) or a
            voxel axis "k", "j", "i": slices are taken along this axis (:mod:`medsam2.io.slicing`).
        window: intensity window (see :func:`medsam2.io.windows.choose_window`).
        feature_cache_mb: memory budget of the feature cache.
        feature_folder: features kept on disk (a project's): read before encoding, written after.
        max_undo: how many steps back :meth:`undo` can go.
    """

    def __init__(
        self,
        engine: EngineView,
        volume: Volume,
        axis: str = "axial",
        window: str = "auto",
        feature_cache_mb: float | None = DEFAULT_FEATURE_CACHE_MB,
        max_undo: int = 50,
        feature_folder: FeatureFolder | None = None,
    ) -> None:
        began = time.perf_counter()
        check_axis(axis)
        self.volume = volume
        self.axis = axis
        #: the voxel axis ("k", "j" or "i") that ``axis`` names on this volume
        self.voxel_axis = voxel_axis(axis, volume.direction)
        self.engine = engine
        backbone = engine.backbone
        raw = to_frames(volume.array, self.voxel_axis)
        self.shape = (int(raw.shape[0]), int(raw.shape[1]), int(raw.shape[2]))
        self.cache = (backbone if isinstance(backbone, CachedBackbone)
                      else CachedBackbone(backbone, feature_cache_mb, disk=feature_folder))
        #: the intensity window the session was opened with (``window`` is the model input's)
        self.scan_window = window
        self._see(volume, window)  # intensity, window, frames and the box probes
        self._objects: dict[int, ObjectState] = {}
        #: the objects and corrections before each step and of the steps undone; ``revision`` counts changes
        self.history: SessionHistory[tuple[dict[int, ObjectState], int]] = SessionHistory(max_undo)
        self._stats = PropagationStats()
        self._corrections = 0
        self._notes = list(self.intensity.warnings) + list(backbone.plan.notes)
        self._notes.extend(volume.warnings)
        #: add sanity warnings (a result that looks like the answer to a mistaken prompt) to the report
        self.sanity = True
        self._preprocess_seconds = time.perf_counter() - began
        self._work_seconds = 0.0

    # -- state --------------------------------------------------------------------------------
    @property
    def labels(self) -> list[int]:
        """The objects' labels, in the order they were added."""
        return list(self._objects)

    def cache_stats(self) -> CacheStats:
        """The feature cache's hits, misses (slices encoded), evictions and size."""
        return self.cache.stats()

    def _snapshot(self) -> dict[int, ObjectState]:
        return dict(self._objects)

    def _step(self, changes: dict[int, ObjectState | None]) -> None:
        """One undoable step: each label's new state (None: the object goes)."""
        before = self._snapshot()
        for label, state in changes.items():
            if state is None:
                del self._objects[label]
            else:
                self._objects[label] = state
        self.history.record((before, self._corrections))

    def _state_of(self, label: int, hint: str = "") -> ObjectState:
        """The object ``label``; PromptError for a label that is no object of the session."""
        state = self._objects.get(object_label(label))
        if state is None:
            known = ", ".join(str(k) for k in self._objects) or "none"
            raise PromptError(f"no object with label {label} in the session (labels: {known}){hint}")
        return state

    def undo(self) -> None:
        """Go back to the state before the last add, propagate, correct, adapt or remove (the
        report's count of corrections included); :meth:`redo` comes back.

        Raises:
            UsageError: there is nothing to undo.
        """
        self._objects, self._corrections = self.history.undo((self._snapshot(), self._corrections))

    def redo(self) -> None:
        """Make again the step the last :meth:`undo` took back, exactly (nothing is decoded again).
        Any new step since that undo forgets what was undone.

        Raises:
            UsageError: there is nothing to redo.
        """
        self._objects, self._corrections = self.history.redo((self._snapshot(), self._corrections))

    # -- prompts and propagation ----------------------------------------------------------------
    def add(self, obj: ObjectPrompts) -> None:
        """Add an object with its prompts; it is segmented by the next :meth:`propagate`.

        Raises:
            PromptError: a label already in the session or out of 1..65535, or prompts that do not fit the volume.
        """
        if not isinstance(obj, ObjectPrompts):
            example = "ObjectPrompts(1, 'liver', boxes=[Box(42, 10, 20, 80, 90)])"
            raise ArgumentTypeError(f"add takes ObjectPrompts, e.g. {example}; got {type(obj).__name__}")
        object_label(obj.label)  # checked again: ObjectPrompts' fields can change after it was made
        if obj.label in self._objects:
            raise PromptError(f"label {obj.label} is already in the session; correct it (correct({obj.label}, ...)) or pick another label")
        validate_prompts([obj], *self.shape, axis=self.axis)
        self._step({int(obj.label): ObjectState(copy_prompts(obj))})

    def add_prompts(
        self,
        label: int,
        name: str | None = None,
        boxes: Sequence[Box] = (),
        points: Sequence[Point] = (),
        masks: Sequence[MaskPrompt] = (),
    ) -> None:
        """Add prompts to an object that is not propagated yet, creating it if the label is new
        (what a viewer does while a person draws a box, then clicks + and - on it before propagating).

        A box replaces the box given before on the same slice; clicks and masks add to what is there.

        Raises:
            PromptError: the object is propagated already (correct it instead), no prompt is given,
                or the prompts do not fit the volume; the session is left as it was.
        """
        label = object_label(label)
        state = self._objects.get(label)
        if state is not None and state.track is not None:
            raise PromptError(f"label {label} is segmented already; correct it (a correction re-propagates) or undo")
        merged = copy_prompts(state.prompts) if state is not None else ObjectPrompts(label)
        if name is not None:
            merged.name = name
        given = ObjectPrompts(label, merged.name, list(boxes), list(points), list(masks))
        if given.is_empty():
            raise PromptError(f"no prompt given for label {label}")
        validate_prompts([given], *self.shape, axis=self.axis)
        for box in given.boxes:
            merged.boxes = [b for b in merged.boxes if b.frame != box.frame]
        merged.merge(given)
        self._step({label: ObjectState(merged)})

    def open_labels(self, labels: np.ndarray, names: Mapping[int, str] | None = None) -> list[int]:
        """Lay a label map on the scan: each label becomes an object whose answer on every slice is
        the map's mask, exactly, ready to correct (a correction fills what the map left empty and
        keeps its other slices; see :mod:`medsam2.engine.label_import`). One step of :meth:`undo`.

        Arguments:
            labels: (z, y, x) integers on the scan's voxel grid (:func:`medsam2.io.readers.read_mask`).
            names: structure names by label value.

        Returns:
            The labels opened, rising.

        Raises:
            PromptError: another grid, no structure, a value that is no label, or a label the session has.
        """
        array = np.asarray(labels)
        if array.shape != tuple(self.volume.array.shape[:3]):
            raise PromptError(f"the label map has {array.shape} voxels (z, y, x) and the scan {tuple(self.volume.array.shape[:3])}")
        opened = opened_objects(to_frames(array, self.voxel_axis), self._geometry(), names, set(self._objects))
        self._step({state.prompts.label: state for state in opened})
        return [state.prompts.label for state in opened]

    def pending_labels(self) -> list[int]:
        """Labels added (or given prompts) but not propagated yet."""
        return [label for label, state in self._objects.items() if state.track is None]

    def propagate(
        self, progress: bool = False, labels: Sequence[int] | None = None, masks: bool = False
    ) -> Iterator[PropagationUpdate]:
        """Segment every object added since the last propagation through the volume.

        Returns an iterator: iterate it (``for update in session.propagate(): ...`` or ``list(...)``);
        it yields one :class:`PropagationUpdate` per decoded slice and commits the answers when it
        ends. Stopped early, it changes nothing. :meth:`result` runs whatever is still pending.
        ``labels`` are checked when it is called, before anything is decoded.

        Arguments:
            progress: show a progress bar.
            labels: propagate only these of the pending objects (None: all of them).
            masks: give each update the object's (rows, cols) answer on its slice.

        Raises:
            PromptError: a label in ``labels`` that is not in the session.
        """
        pending = [state for state in self._objects.values() if state.track is None]
        if labels is not None:
            wanted = [object_label(v) for v in labels]
            unknown = [str(v) for v in wanted if v not in self._objects]
            if unknown:
                known = ", ".join(str(k) for k in self._objects) or "none"
                raise PromptError(f"no object with label {', '.join(unknown)} in the session (labels: {known})")
            pending = [state for state in pending if state.prompts.label in wanted]
        return self._propagate(pending, progress, masks)

    def _propagate(self, pending: list[ObjectState], progress: bool, masks: bool) -> Iterator[PropagationUpdate]:
        if not pending:
            return
        note = many_objects_note(len(pending), self.shape[0])
        if note is not None and note not in self._notes:
            self._notes.append(note)
        began = time.perf_counter()
        tracker = new_tracker(self.engine, self.cache, self.frames, progress)
        total, done = self.shape[0] * len(pending), 0
        index_of = {state.prompts.label: index for index, state in enumerate(pending)}
        geometry = self._geometry()
        for label, frame in tracker.iter_run([state.prompts for state in pending]):
            done += 1
            mask = None
            if masks and tracker.tracks:
                answer = tracker.tracks[index_of[label]].frames.get(frame)
                mask = None if answer is None else on_frame(answer, geometry)[0].numpy()
            yield PropagationUpdate(label, frame, min(done, total), total, mask)
        lite = isinstance(tracker.step, LiteMedSAMStep)
        self._step({state.prompts.label: ObjectState(state.prompts, track, tracker.step.pinned[index] if lite else {}, state.clicks)
                    for index, (state, track) in enumerate(zip(pending, tracker.tracks))})
        absorb(self._stats, tracker.stats)
        self._work_seconds += time.perf_counter() - began

    def correct(
        self,
        label: int,
        slice: int,
        box: Sequence[float] | None = None,
        points: Sequence[Point | Sequence[float]] | None = None,
        mask: np.ndarray | None = None,
        erase: np.ndarray | None = None,
    ) -> CorrectionSummary:
        """Correct one object on one slice, and propagate the change.

        Arguments:
            label: the object.
            slice: index along the session's axis.
            box: (x0, y0, x1, y1) inclusive voxel box: it replaces the slice's prompts.
            points: clicks (x, y) or (x, y, 1|0) (1 foreground, 0 background) or :class:`Point`;
                they add to the clicks given on this slice before.
            mask: (rows, cols) the slice's corrected mask (it replaces the answer there).
            erase: (rows, cols) voxels to remove from the slice's answer.

        Exactly one of ``box``, ``points``, ``mask``, ``erase``. A corrected slice is pinned: later
        propagations keep its answer. On a slice where the object was absent, a correction creates it.

        Returns:
            :class:`CorrectionSummary`.

        Raises:
            PromptError: an unknown label, a slice outside the volume, not exactly one kind of
                correction, a box or click outside the frame, an empty or mis-sized mask or erase,
                an erase where the object is absent; the session is left as it was.
        """
        began = time.perf_counter()
        label = object_label(label)
        state = self._state_of(label, "; add it first")
        slice = check_correction(slice, self.shape[0], self.axis, box=box, points=points, mask=mask, erase=erase)
        cache_before = self.cache.stats().misses
        correction = make_correction(self, state, slice, box=box, points=points, mask=mask, erase=erase)
        if correction.stats is not None:
            absorb(self._stats, correction.stats)
        self._step({label: correction.state})
        self._corrections += 1
        self._work_seconds += time.perf_counter() - began
        return CorrectionSummary(label, slice, correction.decoded, correction.removed, self.cache.stats().misses - cache_before,
                                 round(time.perf_counter() - began, 4))

    def prompted_slices(self, label: int) -> list[int]:
        """The slices an object was prompted or corrected on, sorted.

        Raises:
            PromptError: an unknown label.
        """
        return sorted(self._state_of(label).prompts.prompted_frames())

    def adapt(self, label: int, settings: AdaptSettings | None = None) -> AdaptSummary:
        """Learn from an object's prompted and corrected slices: fine-tune a copy of LiteMedSAM's
        mask heads on them (their features are cached: seconds) and propagate the object again
        with it. The prompted slices keep their answers; no old answer is dropped. One undo step.

        Raises:
            PromptError: an unknown label, an object not propagated yet, or fewer than two
                prompted or corrected slices with a mask.
            UsageError: the backbone is not LiteMedSAM's.
        """
        began = time.perf_counter()
        label = object_label(label)
        state = self._objects.get(label)
        if state is None or state.track is None:
            raise PromptError(f"label {label} is not a propagated object of the session; propagate it, then correct it")
        frames, learned, decoded = repropagate_adapted(self.cache, self.engine, self.frames, state.prompts, state.track, settings)
        new = state.copy()  # its track's prompted slices copied too
        self._step({label: replace(new, track=replace(new.track, frames=frames))})
        self._work_seconds += time.perf_counter() - began
        return AdaptSummary(label, learned, decoded, round(time.perf_counter() - began, 4))

    # -- the result -------------------------------------------------------------------------------
    def _geometry(self):
        return self.cache.frame_geometry(self.shape[1], self.shape[2])

    def _evidence(self, label: int, labels_frames: np.ndarray, per_slice: dict[int, float]) -> ObjectEvidence:
        # the swapped box is tried on LiteMedSAM only: one decoder call on a cached frame
        probe = self._probes if self.engine.kind.local_corrections else None
        return object_evidence(self._objects[label].prompts, labels_frames == label, per_slice, self, probe)

    def evidence(self) -> list[ObjectEvidence]:
        """What the sanity warnings were judged from, per object (propagating what is pending)."""
        result = self.result()
        frames = to_frames(result.labels, self.voxel_axis)
        return [self._evidence(obj.label, frames, obj.confidence_per_slice) for obj in result.report.objects]

    def result(self, propagate_pending: bool = True, sanity: bool | None = None) -> SegmentationResult:
        """The label map of every object and its report.

        Arguments:
            propagate_pending: propagate the objects that are still pending first (the default);
                False: leave them out (a viewer showing what is segmented so far; with nothing
                segmented, the label map is all zeros).
            sanity: add the sanity warnings (which may decode a probe on the model); None: as
                ``self.sanity`` says. With False and nothing pending, the model is not used.

        Raises:
            PromptError: no object in the session (with ``propagate_pending``).
        """
        if propagate_pending:
            for _ in self.propagate():
                pass
            if not self._objects:
                raise PromptError("no object in the session; add one with session.add(ObjectPrompts(...))")
        tracks: list[ObjectTrack] = [state.track for state in self._objects.values() if state.track is not None]
        labels_frames, confidences = label_map(tracks, self.shape, self._geometry(), self.locked_labels())
        checked = self.sanity if sanity is None else sanity
        objects, notes = object_reports(tracks, labels_frames, confidences, self.volume, self._evidence if checked else None)
        timings = session_timings(self._stats, self._preprocess_seconds, self._work_seconds)
        report = session_report(self, objects, list(self._notes) + notes, self._stats, timings, self._corrections)
        return SegmentationResult(labels=from_frames(labels_frames, self.voxel_axis), report=report)
