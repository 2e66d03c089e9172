"""An interactive session over one volume: prompt, propagate, correct, propagate again, undo.

Every slice is encoded at most once while its features stay in the session's feature cache (a
memory budget, least recently used out), so a correction costs decoding only. A correction pins
its slice and, on the LiteMedSAM engine, propagates outward from it only as far as it changes the
answer (see :meth:`medsam2.engine.litemedsam_step.LiteMedSAMStep.repropagate`); on the SAM 2 engine the corrected
object is tracked again through the volume from all its prompts (features cached).

    session = Segmenter().open(volume, axis="axial", window="auto")   # nothing encoded yet
    session.add(ObjectPrompts(1, "liver", boxes=[Box(42, 10, 20, 80, 90)]))
    for update in session.propagate():        # one update per decoded slice
        ...
    session.correct(1, slice=57, box=(12, 22, 70, 80))   # or points=, mask=, erase=
    session.undo()
    result = session.result()                 # SegmentationResult, as Segmenter.segment gives
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from medsam2._version import __version__
from medsam2.backbones.base import Backbone
from medsam2.engine.adapt import AdaptSettings, AdaptSummary, repropagate_adapted
from medsam2.engine.feature_cache import CachedBackbone, CacheStats
from medsam2.engine.litemedsam_step import LiteMedSAMStep, PropagationSettings
from medsam2.engine.memory import MemoryEntry, check_memory_kind, make_memory
from medsam2.engine.results import ObjectReport, SegmentationReport, SegmentationResult, Timings
from medsam2.engine.sam2_step import Sam2Step, Sam2TrackingSettings
from medsam2.engine.sanity import ObjectEvidence, gather_evidence, sanity_warnings
from medsam2.engine.sweep import Step, Tracker
from medsam2.engine.tracks import FeatureStore, FramePrediction, ObjectTrack, PropagationStats
from medsam2.errors import ArgumentTypeError, PromptError, UsageError
from medsam2.io.slicing import check_axis, from_frames, to_frames, voxel_axis
from medsam2.io.volume import Volume
from medsam2.io.windows import WindowedFrames, choose_window
from medsam2.prompts.parse import Box, MaskPrompt, ObjectPrompts, Point, coordinate, frame_index, object_label, validate_prompts

#: default memory budget of a session's feature cache: about 300 LiteMedSAM slices (6.6 MB each),
#: or 60 SAM 2 slices at 1024 input (34 MB each)
DEFAULT_FEATURE_CACHE_MB = 2048.0
#: a correction stops propagating where this many slices in a row agree with the old answer...
AGREE_RUN = 2
#: ...with at least this Dice
AGREE_DICE = 0.97
#: the largest label a label map holds (uint16)
MAX_LABEL = 65535


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


@dataclass(frozen=True)
class CorrectionSummary:
    """What one correction did.

    Attributes:
        label: the corrected object.
        slice: the corrected slice.
        decoded_slices: slices decoded again besides the corrected one, in visiting order.
        removed_slices: slices where the object's old answer was dropped: only an erase that
            empties a slice drops any (the object ends there); a box, click or mask never does.
        encoded_slices: slices encoded for it (not in the feature cache).
        seconds: wall time of the correction.
    """

    label: int
    slice: int
    decoded_slices: list[int]
    removed_slices: list[int]
    encoded_slices: int
    seconds: float


@dataclass
class _ObjectState:
    """One object in a session. Replaced, never changed in place, so that undo snapshots stay valid.

    Attributes:
        prompts: every prompt of the object (corrections included).
        track: its answers per slice; None until propagated.
        pinned: LiteMedSAM: the memory entries of its prompted slices (a correction reuses them).
        clicks: clicks given by corrections, per slice (they accumulate on a slice).
    """

    prompts: ObjectPrompts
    track: ObjectTrack | None = None
    pinned: dict[int, MemoryEntry] = field(default_factory=dict)
    clicks: dict[int, list[Point]] = field(default_factory=dict)

    def copy(self) -> _ObjectState:
        track = None
        if self.track is not None:
            track = ObjectTrack(self.track.label, self.track.name, list(self.track.prompted_frames), dict(self.track.frames))
        return _ObjectState(_copy_prompts(self.prompts), track, dict(self.pinned), {f: list(c) for f, c in self.clicks.items()})


def _copy_prompts(prompts: ObjectPrompts) -> ObjectPrompts:
    """A copy whose prompt lists can change without touching the original (the prompts are shared)."""
    return ObjectPrompts(int(prompts.label), prompts.name, list(prompts.boxes), list(prompts.points), list(prompts.masks))


class Session:
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
        max_undo: how many steps back :meth:`undo` can go.
    """

    def __init__(
        self,
        engine: Engine,
        volume: Volume,
        axis: str = "axial",
        window: str = "auto",
        feature_cache_mb: float | None = DEFAULT_FEATURE_CACHE_MB,
        max_undo: int = 50,
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
        self.intensity = choose_window(raw, window, volume.modality)
        self.intensity.require_structure(volume.source)
        self.frames = WindowedFrames(raw, self.intensity)
        self.cache = backbone if isinstance(backbone, CachedBackbone) else CachedBackbone(backbone, feature_cache_mb)
        self._objects: dict[int, _ObjectState] = {}
        #: the states to go back to: the objects and the number of corrections made before each step
        self._history: list[tuple[dict[int, _ObjectState], int]] = []
        self._max_undo = max_undo
        self._stats = PropagationStats()
        self._corrections = 0
        self._notes = list(self.intensity.warnings) + list(backbone.plan.notes)
        self._notes.extend(volume.warnings)
        #: add sanity warnings (a result that looks like the answer to a mistaken prompt) to the report
        self.sanity = True
        self._probes: dict[tuple, tuple[float, np.ndarray]] = {}
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

    def _snapshot(self) -> dict[int, _ObjectState]:
        return dict(self._objects)

    def _commit(self, before: dict[int, _ObjectState]) -> None:
        self._history.append((before, self._corrections))
        del self._history[: -self._max_undo]

    def undo(self) -> None:
        """Go back to the state before the last add, propagate or correct (the report's count of
        corrections included).

        Raises:
            UsageError: there is nothing to undo.
        """
        if not self._history:
            raise UsageError("nothing to undo: no add, propagate or correct since the session opened")
        self._objects, self._corrections = self._history.pop()

    # -- prompts and propagation ----------------------------------------------------------------
    def add(self, obj: ObjectPrompts) -> None:
        """Add an object with its prompts; it is segmented by the next :meth:`propagate`.

        Raises:
            PromptError: a label already in the session or out of 1..65535, or prompts that do not fit the volume.
        """
        if not isinstance(obj, ObjectPrompts):
            example = "ObjectPrompts(1, 'liver', boxes=[Box(42, 10, 20, 80, 90)])"
            raise ArgumentTypeError(f"add takes ObjectPrompts, e.g. {example}; got {type(obj).__name__}")
        if not isinstance(obj.label, (int, np.integer)) or isinstance(obj.label, bool) or not 1 <= int(obj.label) <= MAX_LABEL:
            raise PromptError(f"label {obj.label!r} is not an integer in 1..{MAX_LABEL}")
        if obj.label in self._objects:
            raise PromptError(f"label {obj.label} is already in the session; correct it (correct({obj.label}, ...)) or pick another label")
        validate_prompts([obj], *self.shape, axis=self.axis)
        before = self._snapshot()
        self._objects[int(obj.label)] = _ObjectState(_copy_prompts(obj))
        self._commit(before)

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
        merged = _copy_prompts(state.prompts) if state is not None else ObjectPrompts(label)
        if name is not None:
            merged.name = name
        given = ObjectPrompts(label, merged.name, list(boxes), list(points), list(masks))
        if given.is_empty():
            raise PromptError(f"no prompt given for label {label}")
        validate_prompts([given], *self.shape, axis=self.axis)
        for box in given.boxes:
            merged.boxes = [b for b in merged.boxes if b.frame != box.frame]
        merged.merge(given)
        before = self._snapshot()
        self._objects[label] = _ObjectState(merged)
        self._commit(before)

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

    def _propagate(self, pending: list[_ObjectState], progress: bool, masks: bool) -> Iterator[PropagationUpdate]:
        if not pending:
            return
        note = many_objects_note(len(pending), self.shape[0])
        if note is not None and note not in self._notes:
            self._notes.append(note)
        began = time.perf_counter()
        tracker = self._tracker(progress)
        total, done = self.shape[0] * len(pending), 0
        index_of = {state.prompts.label: index for index, state in enumerate(pending)}
        geometry = self._geometry()
        for label, frame in tracker.iter_run([state.prompts for state in pending]):
            done += 1
            mask = None
            if masks and tracker.tracks:
                answer = tracker.tracks[index_of[label]].frames.get(frame)
                mask = None if answer is None else _on_frame(answer, geometry)[0].numpy()
            yield PropagationUpdate(label, frame, min(done, total), total, mask)
        before = self._snapshot()
        for index, (state, track) in enumerate(zip(pending, tracker.tracks)):
            pinned = tracker.step.pinned[index] if isinstance(tracker.step, LiteMedSAMStep) else {}
            self._objects[state.prompts.label] = _ObjectState(state.prompts, track, pinned, state.clicks)
        self._commit(before)
        self._absorb(tracker.stats)
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
        state = self._objects.get(label)
        if state is None:
            known = ", ".join(str(k) for k in self._objects) or "none"
            raise PromptError(f"no object with label {label} in the session (labels: {known}); add it first")
        n, rows, cols = self.shape
        slice = frame_index(slice, "correction")
        if not 0 <= slice < n:
            raise PromptError(f"slice {slice} is out of range: the scan has {n} slices along the {self.axis} axis (0..{n - 1})")
        slice = int(slice)
        given = [name for name, value in (("box", box), ("points", points), ("mask", mask), ("erase", erase)) if value is not None]
        if len(given) != 1:
            raise PromptError(f"give exactly one of box, points, mask or erase to a correction (got {', '.join(given) or 'none'})")
        new = state.copy()
        current = self._frame_mask(state, slice)
        cache_before = self.cache.stats().misses
        if box is not None:
            if isinstance(box, (str, bytes)) or not isinstance(box, Sequence | np.ndarray):
                raise ArgumentTypeError(f"a correction box is (x0, y0, x1, y1), not {box!r}")
            values = [coordinate(v, "box") for v in box]
            if len(values) != 4:
                raise PromptError(f"a correction box is (x0, y0, x1, y1); got {len(values)} values")
            corrected = Box(slice, *values)
            validate_prompts([ObjectPrompts(label, boxes=[corrected])], n, rows, cols, self.axis)
            _replace_slice_prompts(new.prompts, slice, boxes=[corrected])
            new.clicks.pop(slice, None)
        elif points is not None:
            if isinstance(points, (str, bytes, Point)) or not isinstance(points, Sequence | np.ndarray):
                raise ArgumentTypeError(f"points is a list of clicks [(x, y), (x, y, 0), ...], not {points!r}")
            clicks = new.clicks.get(slice, []) + [_as_point(slice, p) for p in points]
            if not clicks:
                raise PromptError(f"no click given for label {label} on slice {slice}")
            inside = [Point(slice, c.x, c.y) for c in clicks]  # checked as foreground clicks: inside the frame
            validate_prompts([ObjectPrompts(label, points=inside)], n, rows, cols, self.axis)
            if not any(c.positive for c in clicks) and current is None:
                raise PromptError(f"label {label} is absent on slice {slice}: give a foreground click or a box there first")
            new.clicks[slice] = clicks
        else:
            drawn = self._check_drawn(mask if mask is not None else erase, "mask" if mask is not None else "erase", label, slice)
            if erase is not None:
                if current is None or not (current & drawn).any():
                    raise PromptError(f"nothing to erase: label {label} has no voxel under the erase mask on slice {slice}")
                drawn = current & ~drawn
            if drawn.any():
                _replace_slice_prompts(new.prompts, slice, masks=[MaskPrompt(slice, drawn)])
                new.clicks.pop(slice, None)
        if new.track is None:  # not propagated yet: the prompt waits for propagate()
            if points is not None:
                _replace_slice_prompts(new.prompts, slice, points=new.clicks[slice])
            outcome: tuple[list[int], list[int]] = ([], [])
        elif erase is not None and not drawn.any():
            outcome = ([], self._cut(new, slice))
        elif not self.engine.kind.local_corrections:
            if points is not None:
                boxes = [b for b in new.prompts.boxes if b.frame == slice]
                _replace_slice_prompts(new.prompts, slice, boxes=boxes[:1], points=new.clicks[slice])
            outcome = self._retrack(new)
        else:
            outcome = self._repropagate(new, slice, current, points is not None)
        before = self._snapshot()
        self._objects[label] = new
        self._commit(before)
        self._corrections += 1
        self._work_seconds += time.perf_counter() - began
        return CorrectionSummary(label, slice, outcome[0], outcome[1], self.cache.stats().misses - cache_before,
                                 round(time.perf_counter() - began, 4))

    def prompted_slices(self, label: int) -> list[int]:
        """The slices an object was prompted or corrected on, sorted.

        Raises:
            PromptError: an unknown label.
        """
        state = self._objects.get(object_label(label))
        if state is None:
            raise PromptError(f"no object with label {label} in the session (labels: {', '.join(map(str, self._objects)) or 'none'})")
        return sorted(state.prompts.prompted_frames())

    def adapt(self, label: int, settings: AdaptSettings | None = None) -> AdaptSummary:
        """Learn from an object's prompted and corrected slices: fine-tune a copy of LiteMedSAM's
        mask heads on them (their features are cached: seconds) and propagate the object again
        with it. The prompted slices keep their answers; no old answer is dropped. One step of
        :meth:`undo`.

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
        new = state.copy()
        new.track = ObjectTrack(state.track.label, state.track.name, list(state.track.prompted_frames), frames)
        before = self._snapshot()
        self._objects[label] = new
        self._commit(before)
        self._work_seconds += time.perf_counter() - began
        return AdaptSummary(label, learned, decoded, round(time.perf_counter() - began, 4))

    # -- engines ----------------------------------------------------------------------------------
    def _tracker(self, progress: bool = False) -> Tracker:
        """The sweep with this backbone's step (a fresh step: its memories are per run)."""
        engine = self.engine
        return Tracker(engine.kind.make_step(self.cache, engine.memory, engine.settings), self.frames, progress)

    def _absorb(self, stats: PropagationStats) -> None:
        """Add a run's statistics to the session's."""
        self._stats.encode_seconds += stats.encode_seconds
        self._stats.decode_seconds += stats.decode_seconds
        self._stats.decode_calls += stats.decode_calls
        self._stats.encoded_frames |= stats.encoded_frames

    def _repropagate(self, state: _ObjectState, slice: int, current: np.ndarray | None, clicked: bool) -> tuple[list[int], list[int]]:
        """LiteMedSAM: pin the corrected slice, then walk outward while the answer changes."""
        tracker = self._tracker()
        step = tracker.step
        features = FeatureStore(self.frames, self.cache, set(), tracker.stats).get(slice)
        if clicked:
            clicks = state.clicks[slice]
            geometry = features.geometry
            points = geometry.points_to_model(np.array([[c.x, c.y] for c in clicks]))
            labels = np.array([1 if c.positive else 0 for c in clicks])
            present = None if current is None else geometry.frame_to_model(current.astype(np.float32), size=self.cache.input_size) > 0.5
            prediction = step.decode_clicks(features, points, labels, present)
            drawn = geometry.model_to_frame(prediction.logits).numpy() > 0
            if not drawn.any():
                raise PromptError(f"the clicks on slice {slice} give label {state.prompts.label} an empty mask; add a foreground click")
            _replace_slice_prompts(state.prompts, slice, masks=[MaskPrompt(slice, drawn)])
        previous = None
        if current is not None and not clicked:
            previous = features.geometry.frame_to_model(current.astype(np.float32), size=self.cache.input_size) > 0.5
        result, entry = step.pin(state.prompts, slice, features, previous)
        track = state.track
        assert track is not None
        old = {f: p for f, p in track.frames.items() if f != slice}
        state.pinned[slice] = entry
        track.frames[slice] = result
        track.prompted_frames = state.prompts.prompted_frames()
        for _ in step.repropagate(self.frames, state.pinned, slice, old, AGREE_DICE, AGREE_RUN):
            pass
        change = step.repropagation
        for frame in change.removed:
            track.frames.pop(frame, None)
        track.frames.update(change.frames)
        self._absorb(tracker.stats)
        return change.decoded, sorted(change.removed)

    def _retrack(self, state: _ObjectState) -> tuple[list[int], list[int]]:
        """SAM 2: track the object again from all its prompts (features come from the cache)."""
        tracker = self._tracker()
        decoded = [frame for _, frame in tracker.iter_run([state.prompts])]
        old = set(state.track.frames)
        state.track = tracker.tracks[0]
        self._absorb(tracker.stats)
        return decoded, sorted(old - set(state.track.frames))

    def _cut(self, state: _ObjectState, slice: int) -> list[int]:
        """An erase that empties a slice: the object ends before it, on the side away from its
        nearest prompted slice (answers up to the next prompted slice that way are dropped)."""
        track = state.track
        assert track is not None
        _replace_slice_prompts(state.prompts, slice)
        state.pinned.pop(slice, None)
        state.clicks.pop(slice, None)
        prompted = state.prompts.prompted_frames()
        if not prompted:
            raise PromptError(f"erasing slice {slice} would leave label {track.label} with no prompt; correct another slice first")
        nearest = min(prompted, key=lambda f: abs(f - slice))
        direction = 1 if slice > nearest else -1
        limit = next((f for f in sorted(prompted, key=lambda f: f * direction) if (f - slice) * direction > 0), None)
        removed = sorted(f for f in track.frames if (f - slice) * direction >= 0 and (limit is None or (limit - f) * direction > 0))
        for frame in removed:
            del track.frames[frame]
        track.prompted_frames = prompted
        return removed

    # -- masks ----------------------------------------------------------------------------------
    def _check_drawn(self, drawn: np.ndarray, what: str, label: int, slice: int) -> np.ndarray:
        array = np.asarray(drawn)
        if array.dtype.kind not in "biuf":
            raise ArgumentTypeError(f"the {what} for label {label} is a NumPy array (rows, cols) of 0/1, not {type(drawn).__name__}")
        rows, cols = self.shape[1:]
        if array.shape != (rows, cols):
            raise PromptError(f"the {what} for label {label} on slice {slice} has shape {array.shape}, expected {(rows, cols)}")
        binary = array > 0
        if not binary.any():
            raise PromptError(f"the {what} for label {label} on slice {slice} is empty")
        return binary

    def _frame_mask(self, state: _ObjectState, slice: int) -> np.ndarray | None:
        """The object's (rows, cols) mask on a slice, None where it is absent."""
        if state.track is None or slice not in state.track.frames:
            return None
        mask = _on_frame(state.track.frames[slice], self._geometry())[0].numpy()
        return mask if mask.any() else None

    def _geometry(self):
        return self.cache.frame_geometry(self.shape[1], self.shape[2])

    # -- sanity -----------------------------------------------------------------------------------
    def _probe(self, box: Box) -> tuple[float, np.ndarray]:
        """The model's answer to one box on its frame alone (features from the cache): (confidence,
        mask); kept, so that a result asked for again (each round of a correction loop) decodes nothing."""
        key = (box.frame, *box.as_tuple())
        if key not in self._probes:
            features = self.cache.encode([self.frames[box.frame]])[0]
            geometry = self._geometry()
            prediction = self.cache.decode(features, box=geometry.box_to_model(box.as_tuple()))
            mask = geometry.model_to_frame(torch.sigmoid(prediction.logits)).numpy() > 0.5
            self._probes[key] = (float(prediction.confidence), mask)
        return self._probes[key]

    def _evidence(self, label: int, labels_frames: np.ndarray, per_slice: dict[int, float]) -> ObjectEvidence:
        state = self._objects[label]
        # the swapped box is tried on LiteMedSAM only: one decoder call on a cached frame
        probe = self._probe if self.engine.kind.local_corrections else None
        return gather_evidence(
            state.prompts, labels_frames == label, per_slice, self.frames,
            None if self.volume.is_2d else self.volume.voxel_volume_ml, probe=probe,
        )

    def evidence(self) -> list[ObjectEvidence]:
        """What the sanity warnings were judged from, per object (propagating what is pending)."""
        result = self.result()
        frames = to_frames(result.labels, self.voxel_axis)
        return [self._evidence(obj.label, frames, obj.confidence_per_slice) for obj in result.report.objects]

    # -- the result -------------------------------------------------------------------------------
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
        n, rows, cols = self.shape
        tracks = [state.track for state in self._objects.values() if state.track is not None]
        labels_frames, confidences = label_map(tracks, self.shape, self._geometry())
        reports = []
        notes = list(self._notes)
        flat = self.volume.is_2d
        pixel_mm2 = float(self.volume.spacing[0] * self.volume.spacing[1])
        for track in tracks:
            present = np.flatnonzero((labels_frames == track.label).reshape(n, -1).any(axis=1)).tolist()
            voxels = int((labels_frames == track.label).sum())
            per_slice = {f: confidences[track.label][f] for f in present}
            values = list(per_slice.values())
            reports.append(
                ObjectReport(
                    label=track.label,
                    name=track.name,
                    slices=present,
                    first_slice=present[0] if present else None,
                    last_slice=present[-1] if present else None,
                    voxels=voxels,
                    volume_ml=None if flat else round(voxels * self.volume.voxel_volume_ml, 3),
                    mean_confidence=round(float(np.mean(values)), 4) if values else None,
                    min_confidence=round(float(np.min(values)), 4) if values else None,
                    confidence_per_slice=per_slice,
                    prompted_slices=track.prompted_frames,
                    area_mm2=round(voxels * pixel_mm2, 3) if flat and self.volume.spacing_known else None,
                    area_pixels=voxels if flat else None,
                )
            )
            if not present:
                notes.append(f"label {track.label}: nothing was segmented")
            if self.sanity if sanity is None else sanity:
                evidence = self._evidence(track.label, labels_frames, per_slice)
                notes.extend(sanity_warnings(evidence))
        stats = self._stats
        encoded = len(stats.encoded_frames)
        timings = Timings(
            preprocess_seconds=round(self._preprocess_seconds, 3),
            encode_seconds=round(stats.encode_seconds, 3),
            decode_seconds=round(stats.decode_seconds, 3),
            total_seconds=round(self._preprocess_seconds + self._work_seconds, 3),
            seconds_per_encoded_slice=round(stats.encode_seconds / max(encoded, 1), 4),
        )
        plan = self.cache.plan
        volume = self.volume
        report = SegmentationReport(
            medsam2_version=__version__,
            backbone=self.cache.name,
            checkpoint=str(self.cache.checkpoint) if self.cache.checkpoint else None,
            device=str(self.cache.device),
            runtime=plan.runtime,
            precision=plan.precision,
            memory=self.engine.memory,
            axis=self.axis,
            window=self.intensity.name,
            input=volume.source,
            size_xyz=list(reversed(volume.shape)),
            spacing_xyz=[float(s) for s in volume.spacing],
            slices_total=n,
            slices_encoded=encoded,
            decode_calls=stats.decode_calls,
            objects=reports,
            timings=timings,
            warnings=notes,
            feature_cache=self.cache.stats(),
            corrections=self._corrections,
            voxel_axis=self.voxel_axis,
            settings=asdict(self.engine.settings),
        )
        return SegmentationResult(labels=from_frames(labels_frames, self.voxel_axis), report=report)


@dataclass(frozen=True)
class StepKind:
    """One backbone family's engine step.

    Attributes:
        settings: the settings type the step takes.
        make_step: (backbone, memory rule, settings) -> a fresh :class:`~medsam2.engine.sweep.Step`.
        local_corrections: a correction re-propagates outward from its slice only while the answer
            changes (LiteMedSAM); otherwise the object is tracked again from all its prompts (SAM 2,
            whose memory is per pass).
    """

    settings: type
    make_step: Callable[[Backbone, str, object], Step]
    local_corrections: bool


#: the engine step of each backbone, by the backbone's ``name``
STEP_KINDS: dict[str, StepKind] = {
    "litemedsam": StepKind(
        PropagationSettings,
        lambda backbone, memory, settings: LiteMedSAMStep(backbone, lambda: make_memory(memory, settings.bank), settings),
        local_corrections=True,
    ),
    "sam2": StepKind(
        Sam2TrackingSettings,
        lambda backbone, memory, settings: Sam2Step(backbone, memory, settings),
        local_corrections=False,
    ),
}


#: above this many objects a run warns how long decoding will take
MANY_OBJECTS = 20
#: decoder seconds per object per slice it covers, measured here (50 objects on a 5-slice CT crop,
#: 2 cores, OpenVINO fp32 decoder: 17.7 s of decoding, about 1.3 decoder calls per object-slice)
DECODE_SECONDS_PER_OBJECT_SLICE = 0.07


def many_objects_note(n_objects: int, n_frames: int) -> str | None:
    """A warning with the expected decoding time when there are more than :data:`MANY_OBJECTS`
    objects (their features are shared, but each object is decoded on every slice it covers)."""
    if n_objects <= MANY_OBJECTS:
        return None
    seconds = n_objects * n_frames * DECODE_SECONDS_PER_OBJECT_SLICE
    return (
        f"{n_objects} objects: each is decoded on every slice it covers, so decoding may take up to about "
        f"{seconds:.0f} s on a 2-core CPU ({DECODE_SECONDS_PER_OBJECT_SLICE} s per object per slice); "
        "encoding is shared by all objects"
    )


@dataclass(frozen=True)
class Engine:
    """A backbone with its memory rule and settings: what opens sessions and segments volumes.

    Arguments:
        backbone: the network.
        memory: "confidence", "fifo" or "none" (:data:`medsam2.engine.memory.MEMORY_KINDS`).
        settings: :class:`PropagationSettings` for litemedsam, :class:`Sam2TrackingSettings` for
            sam2; None: the measured defaults.

    Raises:
        UsageError: an unknown memory rule, or settings of the other backbone.
    """

    backbone: Backbone
    memory: str = "confidence"
    settings: PropagationSettings | Sam2TrackingSettings | None = None

    def __post_init__(self) -> None:
        check_memory_kind(self.memory)
        kind = STEP_KINDS.get(self.backbone.name)
        if kind is None:
            raise UsageError(f"no engine step for backbone '{self.backbone.name}'; known: {', '.join(STEP_KINDS)}")
        expected = kind.settings
        if self.settings is None:
            object.__setattr__(self, "settings", expected())
        elif not isinstance(self.settings, expected):
            raise UsageError(f"the {self.backbone.name} backbone takes {expected.__name__}, not {type(self.settings).__name__}")

    @property
    def kind(self) -> StepKind:
        """What this backbone's engine step is (its settings type, how it is made, how it corrects)."""
        return STEP_KINDS[self.backbone.name]

    def open(self, volume: Volume, axis: str = "axial", window: str = "auto",
             feature_cache_mb: float | None = DEFAULT_FEATURE_CACHE_MB) -> Session:
        """A :class:`Session` over ``volume`` (nothing encoded yet)."""
        return Session(self, volume, axis=axis, window=window, feature_cache_mb=feature_cache_mb)

    def segment(
        self, volume: Volume, prompts: Sequence[ObjectPrompts], axis: str = "axial", window: str = "auto", progress: bool = False
    ) -> SegmentationResult:
        """Every object through the volume in one go: a session that adds them all, propagates
        and gives the result. Every prompt is checked (as it is added) before anything is encoded.

        Raises:
            PromptError: no object, or prompts that do not fit the volume.
        """
        if not prompts:
            raise PromptError("no prompt given; add --box, --point, --mask or --prompts")
        session = self.open(volume, axis=axis, window=window)
        for obj in prompts:
            session.add(obj)
        for _ in session.propagate(progress=progress):
            pass
        return session.result()


def _as_point(slice: int, value: Point | Sequence[float]) -> Point:
    if isinstance(value, Point):
        return Point(slice, value.x, value.y, value.positive)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray):
        raise ArgumentTypeError(f"a click is (x, y) or (x, y, 1|0) or a Point, not {value!r}")
    values = list(value)
    if len(values) not in (2, 3) or (len(values) == 3 and values[2] not in (0, 1)):
        raise PromptError(f"a click is (x, y) or (x, y, 1|0); got {value!r}")
    try:
        x, y = float(values[0]), float(values[1])
    except (TypeError, ValueError) as exc:
        raise PromptError(f"a click is (x, y) or (x, y, 1|0) with numbers; got {value!r}") from exc
    if not (np.isfinite(x) and np.isfinite(y)):
        raise PromptError(f"a click's coordinates must be finite numbers; got {value!r}")
    return Point(slice, x, y, positive=len(values) == 2 or values[2] == 1)


def _replace_slice_prompts(
    prompts: ObjectPrompts,
    slice: int,
    boxes: Sequence[Box] = (),
    points: Sequence[Point] = (),
    masks: Sequence[MaskPrompt] = (),
) -> None:
    """Drop every prompt of ``prompts`` on ``slice`` and put the given ones there instead."""
    prompts.boxes = [b for b in prompts.boxes if b.frame != slice] + list(boxes)
    prompts.points = [p for p in prompts.points if p.frame != slice] + list(points)
    prompts.masks = [m for m in prompts.masks if m.frame != slice] + list(masks)


def _on_frame(result: FramePrediction, geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """One answer on its (rows, cols) frame: (foreground mask, probability). SAM 2 answers keep SAM 2's
    own rule (logits resized to the frame, > 0); the others are probability > 0.5."""
    if result.logits is not None:
        logits = geometry.model_to_frame(result.logits)
        return logits > 0, torch.sigmoid(logits)
    probability = geometry.model_to_frame(result.probability_float())
    return probability > 0.5, probability


def label_map(tracks: Sequence[ObjectTrack], shape: tuple[int, int, int], geometry) -> tuple[np.ndarray, dict[int, dict[int, float]]]:
    """The frames' label map (uint8, uint16 past label 255) and each object's confidence per frame.

    Where objects overlap, the one with the higher probability x confidence wins.
    """
    n_frames, rows, cols = shape
    max_label = max((t.label for t in tracks), default=0)
    labels = np.zeros(shape, dtype=np.uint8 if max_label < 256 else np.uint16)
    confidences: dict[int, dict[int, float]] = {t.label: {} for t in tracks}
    for frame in sorted({f for t in tracks for f in t.frames}):
        best = torch.zeros((rows, cols))
        for track in tracks:
            result = track.frames.get(frame)
            if result is None:
                continue
            foreground, probability = _on_frame(result, geometry)
            score = torch.where(foreground, probability.clamp(min=1e-6) * max(result.confidence, 1e-3), torch.zeros(()))
            win = score > best
            labels[frame][win.numpy()] = track.label
            best = torch.maximum(best, score)
            confidences[track.label][frame] = round(result.confidence, 4)
    return labels, confidences
