"""A session's corrections: a box, clicks, a mask or an erase on one slice of one object, checked,
made into the object's new state and propagated.

A correction pins its slice and, on the LiteMedSAM engine, propagates outward from it only as far
as it changes the answer (:func:`repropagate`); on the SAM 2 engine the corrected object is tracked
again through the volume from all its prompts (:func:`retrack`). An erase that empties a slice ends
the object there (:func:`cut`). :meth:`medsam2.engine.session.Session.correct` commits the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from medsam2.engine.session_state import ObjectState, SessionView, frame_mask, new_tracker, replace_slice_prompts
from medsam2.engine.tracks import FeatureStore, PropagationStats
from medsam2.errors import ArgumentTypeError, PromptError
from medsam2.prompts.parse import Box, MaskPrompt, ObjectPrompts, Point, coordinate, frame_index, validate_prompts

if TYPE_CHECKING:
    from medsam2.engine.litemedsam_step import LiteMedSAMStep

#: a correction stops propagating where this many slices in a row agree with the old answer...
AGREE_RUN = 2
#: ...with at least this Dice
AGREE_DICE = 0.97


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
class Correction:
    """A correction made, not yet committed: the object's new state, the slices decoded again and
    dropped (as :class:`CorrectionSummary` gives them), and what its run cost (None: nothing ran)."""

    state: ObjectState
    decoded: list[int]
    removed: list[int]
    stats: PropagationStats | None = None


def check_correction(slice: int, n_slices: int, axis: str, **given: object) -> int:
    """The corrected slice's index, once the slice is in the volume and exactly one kind of
    correction (box, points, mask or erase) is given.

    Raises:
        PromptError: a slice outside the volume, or not exactly one kind of correction.
    """
    slice = frame_index(slice, "correction")
    if not 0 <= slice < n_slices:
        raise PromptError(f"slice {slice} is out of range: the scan has {n_slices} slices along the {axis} axis (0..{n_slices - 1})")
    slice = int(slice)
    named = [name for name, value in given.items() if value is not None]
    if len(named) != 1:
        raise PromptError(f"give exactly one of box, points, mask or erase to a correction (got {', '.join(named) or 'none'})")
    return slice


def make_correction(
    session: SessionView,
    state: ObjectState,
    slice: int,
    box: Sequence[float] | None = None,
    points: Sequence[Point | Sequence[float]] | None = None,
    mask: np.ndarray | None = None,
    erase: np.ndarray | None = None,
) -> Correction:
    """The object corrected on one slice (exactly one of ``box``, ``points``, ``mask``, ``erase``,
    see :func:`check_correction`) and the change propagated; ``state`` is left as it was.

    Raises:
        PromptError: a box or click outside the frame, an empty or mis-sized mask or erase, an
            erase where the object is absent, clicks that leave the object empty.
    """
    label = state.prompts.label
    new = state.copy()
    current = frame_mask(state, slice, session.cache.frame_geometry(session.shape[1], session.shape[2]))
    emptied = False
    if box is not None:
        _set_box(new, slice, box, session.shape, session.axis)
    elif points is not None:
        _add_clicks(new, slice, points, current, session.shape, session.axis)
    else:
        drawn = _check_drawn(mask if mask is not None else erase, "mask" if mask is not None else "erase", label, slice, session.shape)
        if erase is not None:
            if current is None or not (current & drawn).any():
                raise PromptError(f"nothing to erase: label {label} has no voxel under the erase mask on slice {slice}")
            drawn = current & ~drawn
        if drawn.any():
            replace_slice_prompts(new.prompts, slice, masks=[MaskPrompt(slice, drawn)])
            new.clicks.pop(slice, None)
        emptied = erase is not None and not drawn.any()
    return _propagate_correction(session, new, slice, current, points is not None, emptied)


def _set_box(state: ObjectState, slice: int, box: Sequence[float], shape: tuple[int, int, int], axis: str) -> None:
    """A correction box: it replaces the slice's prompts (and clicks)."""
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence | np.ndarray):
        raise ArgumentTypeError(f"a correction box is (x0, y0, x1, y1), not {box!r}")
    values = [coordinate(v, "box") for v in box]
    if len(values) != 4:
        raise PromptError(f"a correction box is (x0, y0, x1, y1); got {len(values)} values")
    corrected = Box(slice, *values)
    validate_prompts([ObjectPrompts(state.prompts.label, boxes=[corrected])], *shape, axis)
    replace_slice_prompts(state.prompts, slice, boxes=[corrected])
    state.clicks.pop(slice, None)


def _add_clicks(
    state: ObjectState,
    slice: int,
    points: Sequence[Point | Sequence[float]],
    current: np.ndarray | None,
    shape: tuple[int, int, int],
    axis: str,
) -> None:
    """Correction clicks: they add to the clicks given on the slice before."""
    label = state.prompts.label
    if isinstance(points, (str, bytes, Point)) or not isinstance(points, Sequence | np.ndarray):
        raise ArgumentTypeError(f"points is a list of clicks [(x, y), (x, y, 0), ...], not {points!r}")
    clicks = state.clicks.get(slice, []) + [as_point(slice, p) for p in points]
    if not clicks:
        raise PromptError(f"no click given for label {label} on slice {slice}")
    inside = [Point(slice, c.x, c.y) for c in clicks]  # checked as foreground clicks: inside the frame
    validate_prompts([ObjectPrompts(label, points=inside)], *shape, axis)
    if not any(c.positive for c in clicks) and current is None:
        raise PromptError(f"label {label} is absent on slice {slice}: give a foreground click or a box there first")
    state.clicks[slice] = clicks


def _check_drawn(drawn: np.ndarray, what: str, label: int, slice: int, shape: tuple[int, int, int]) -> np.ndarray:
    """A drawn mask or erase as a (rows, cols) bool array."""
    array = np.asarray(drawn)
    if array.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"the {what} for label {label} is a NumPy array (rows, cols) of 0/1, not {type(drawn).__name__}")
    rows, cols = shape[1:]
    if array.shape != (rows, cols):
        raise PromptError(f"the {what} for label {label} on slice {slice} has shape {array.shape}, expected {(rows, cols)}")
    binary = array > 0
    if not binary.any():
        raise PromptError(f"the {what} for label {label} on slice {slice} is empty")
    return binary


def _propagate_correction(
    session: SessionView, state: ObjectState, slice: int, current: np.ndarray | None, clicked: bool, emptied: bool
) -> Correction:
    """Carry a corrected slice through the object's answers, as the object's state and the engine say."""
    if state.track is None:  # not propagated yet: the prompt waits for propagate()
        if clicked:
            replace_slice_prompts(state.prompts, slice, points=state.clicks[slice])
        return Correction(state, [], [])
    if emptied:
        return Correction(state, [], cut(state, slice))
    if not session.engine.kind.local_corrections:
        if clicked:
            boxes = [b for b in state.prompts.boxes if b.frame == slice]
            replace_slice_prompts(state.prompts, slice, boxes=boxes[:1], points=state.clicks[slice])
        return retrack(session, state)
    return repropagate(session, state, slice, current, clicked)


def repropagate(session: SessionView, state: ObjectState, slice: int, current: np.ndarray | None, clicked: bool) -> Correction:
    """LiteMedSAM: pin the corrected slice, then walk outward while the answer changes."""
    cache = session.cache
    tracker = new_tracker(session.engine, cache, session.frames)
    step = tracker.step
    features = FeatureStore(session.frames, cache, set(), tracker.stats).get(slice)
    if clicked:
        _decode_clicks(step, features, state, slice, current, cache.input_size)
    previous = None
    if not clicked:
        if current is not None:
            previous = features.geometry.frame_to_model(current.astype(np.float32), size=cache.input_size) > 0.5
        else:
            previous = _beside(state, slice)
    result, entry = step.pin(state.prompts, slice, features, previous)
    track = state.track
    assert track is not None
    old = {f: p for f, p in track.frames.items() if f != slice}
    state.pinned[slice] = entry
    track.frames[slice] = result
    track.prompted_frames = state.prompts.prompted_frames()
    for _ in step.repropagate(session.frames, state.pinned, slice, old, AGREE_DICE, AGREE_RUN):
        pass
    change = step.repropagation
    for frame in change.removed:
        track.frames.pop(frame, None)
    track.frames.update(change.frames)
    return Correction(state, change.decoded, sorted(change.removed), tracker.stats)


def _beside(state: ObjectState, slice: int) -> torch.Tensor | None:
    """Where the object has no answer on a corrected slice: the union of its answers on the
    adjacent slices ((S, S) bool, model space), None where it has neither. A box there is answered
    with them as with an old answer on the slice (one slice away, the structure is much where it
    was; :func:`~medsam2.engine.litemedsam_records.box_answer_with_previous`)."""
    track = state.track
    assert track is not None
    masks = [track.frames[f].probability > 127 for f in (slice - 1, slice + 1) if f in track.frames]
    union = torch.stack(masks).any(dim=0) if masks else None
    return union if union is not None and bool(union.any()) else None


def _decode_clicks(step: LiteMedSAMStep, features, state: ObjectState, slice: int, current: np.ndarray | None, input_size) -> None:
    """LiteMedSAM: the slice's clicks decoded into a mask, which becomes the slice's prompt."""
    clicks = state.clicks[slice]
    geometry = features.geometry
    points = geometry.points_to_model(np.array([[c.x, c.y] for c in clicks]))
    labels = np.array([1 if c.positive else 0 for c in clicks])
    present = None if current is None else geometry.frame_to_model(current.astype(np.float32), size=input_size) > 0.5
    prediction = step.decode_clicks(features, points, labels, present)
    drawn = geometry.model_to_frame(prediction.logits).numpy() > 0
    if not drawn.any():
        raise PromptError(f"the clicks on slice {slice} give label {state.prompts.label} an empty mask; add a foreground click")
    replace_slice_prompts(state.prompts, slice, masks=[MaskPrompt(slice, drawn)])


def retrack(session: SessionView, state: ObjectState) -> Correction:
    """SAM 2: track the object again from all its prompts (features come from the cache)."""
    tracker = new_tracker(session.engine, session.cache, session.frames)
    decoded = [frame for _, frame in tracker.iter_run([state.prompts])]
    old = set(state.track.frames)
    state.track = tracker.tracks[0]
    return Correction(state, decoded, sorted(old - set(state.track.frames)), tracker.stats)


def cut(state: ObjectState, slice: int) -> list[int]:
    """An erase that empties a slice: the object ends before it, on the side away from its
    nearest prompted slice (answers up to the next prompted slice that way are dropped). Slices of
    an opened label map stay (they did not come from the erased one): there only the erased slice
    goes, and an object whose opened anchor slice is erased is anchored on its largest other one."""
    track = state.track
    assert track is not None
    replace_slice_prompts(state.prompts, slice)
    state.pinned.pop(slice, None)
    state.clicks.pop(slice, None)
    prompted = state.prompts.prompted_frames()
    if not prompted:
        prompted = _reanchor(state, slice)
    nearest = min(prompted, key=lambda f: abs(f - slice))
    direction = 1 if slice > nearest else -1
    limit = next((f for f in sorted(prompted, key=lambda f: f * direction) if (f - slice) * direction > 0), None)
    removed = sorted(f for f in track.frames if (f - slice) * direction >= 0 and (limit is None or (limit - f) * direction > 0)
                     and (f == slice or track.frames[f].exact is None))
    for frame in removed:
        del track.frames[frame]
    track.prompted_frames = prompted
    return removed


def _reanchor(state: ObjectState, erased: int) -> list[int]:
    """An opened object whose only prompted slice was erased: a mask prompt on its largest other
    opened slice instead (the prompted slices then).

    Raises:
        PromptError: no opened slice is left (the object would have no prompt).
    """
    track = state.track
    assert track is not None
    opened = {f: p.exact for f, p in track.frames.items() if p.exact is not None and f != erased}
    if not opened:
        raise PromptError(f"erasing slice {erased} would leave label {track.label} with no prompt; correct another slice first")
    largest = max(opened, key=lambda f: (int(opened[f].sum()), -f))
    state.prompts.masks.append(MaskPrompt(largest, opened[largest].numpy().copy()))
    return [largest]


def as_point(slice: int, value: Point | Sequence[float]) -> Point:
    """One correction click on ``slice``: a :class:`Point`, (x, y) (foreground) or (x, y, 1|0)."""
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
