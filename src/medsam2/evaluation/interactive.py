"""The ``interactive-N`` protocol of ``medsam2 evaluate``: a simulated annotator corrects the worst
slice N times, through a :class:`~medsam2.engine.session.Session`.

Round 0 is the ``box-mid`` prompt propagated through the volume. Each later round, for each
structure: the slice with the most wrong voxels (prediction XOR reference) is corrected, with
- ``box``: the reference's bounding box on that slice (a slice where the reference has no
  structure is erased instead; a slice already corrected with its box is passed over), or
- ``click``: one click at the deepest point (largest distance to its border) of the largest
  error region on that slice: foreground where tissue was missed, background where it was
  wrongly added.
Dice is recorded after every round. The CVPR 2025 challenge on interactive 3D segmentation reports
the final Dice and the area under the Dice-per-round curve the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medsam2.engine.adapt import MIN_ADAPT_SLICES
from medsam2.engine.session import Session
from medsam2.engine.view_passes import mask_box
from medsam2.evaluation.metrics import dice
from medsam2.io.slicing import to_frames

_INTERACTIVE = re.compile(r"^interactive-(\d+)$")
CORRECTIONS = ("box", "click")
MAX_ROUNDS = 10
#: a round "fell" for a structure when its Dice went down by more than this (a rounding-level
#: change: a few boundary voxels of a small structure)
FALL_TOLERANCE = 0.005


def fell(dice_per_round: list[float], tolerance: float = FALL_TOLERANCE) -> list[bool]:
    """For rounds 1..N: whether the Dice fell below the round before by more than ``tolerance``."""
    return [after < before - tolerance for before, after in zip(dice_per_round, dice_per_round[1:])]


def interactive_rounds(protocol: str) -> int | None:
    """N of ``interactive-N`` (None for another protocol)."""
    match = _INTERACTIVE.match(protocol)
    return int(match.group(1)) if match else None


@dataclass
class InteractiveTrace:
    """One structure through the rounds.

    Attributes:
        dice_per_round: Dice after round 0 (the first propagation) and after each correction round.
        corrected_slices: the slice corrected in each round (None where nothing was left to correct).
        seconds: wall time of each correction, from ``correct()`` to the updated label map.
        redecoded: slices decoded again by each correction (the corrected slice excluded).
        encoded: slices each correction had to encode (not in the feature cache).
    """

    dice_per_round: list[float] = field(default_factory=list)
    corrected_slices: list[int | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    redecoded: list[int] = field(default_factory=list)
    encoded: list[int] = field(default_factory=list)


def dice_auc(dice_per_round: list[float]) -> float:
    """Area under the Dice-per-round curve (trapezoids, one unit per round): 0..N for N rounds."""
    values = np.asarray(dice_per_round, dtype=float)
    return float(((values[1:] + values[:-1]) / 2).sum()) if len(values) > 1 else 0.0


def _deepest(region: np.ndarray) -> tuple[int, int]:
    """(row, col) of the point farthest from the border of a 2D bool region."""
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(row), int(col)


def _click_for(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(x, y, 1|0): the click at the deepest point of the largest error region of one slice."""
    missed, extra = truth & ~predicted, predicted & ~truth
    best: tuple[int, np.ndarray, int] | None = None
    for positive, errors in ((1, missed), (0, extra)):
        labelled, count = ndimage.label(errors)
        if count == 0:
            continue
        sizes = ndimage.sum(errors, labelled, range(1, count + 1))
        largest = int(np.argmax(sizes))
        if best is None or sizes[largest] > best[0]:
            best = (int(sizes[largest]), labelled == largest + 1, positive)
    assert best is not None, "a slice with errors has an error region"
    row, col = _deepest(best[1])
    return col, row, best[2]


def run_interactive(
    session: Session, reference_frames: np.ndarray, labels: list[int], rounds: int, correction: str, adapt: bool = False,
) -> dict[int, InteractiveTrace]:
    """Correct every structure ``rounds`` times; the session's objects must be added (not yet propagated).

    Arguments:
        session: the session (its axis is the reference's frame axis).
        reference_frames: (frames, rows, cols) reference labels along the session's axis.
        labels: the structures to correct.
        rounds: N.
        correction: "box" or "click".
        adapt: after each round's correction, learn from the object's corrected slices
            (:meth:`Session.adapt`, from the round where it has two); its seconds count in the correction's.

    Returns:
        label -> :class:`InteractiveTrace`.
    """
    for _ in session.propagate():
        pass
    traces = {label: InteractiveTrace() for label in labels}
    boxed: dict[int, set[int]] = {label: set() for label in labels}

    def score(predicted_frames: np.ndarray) -> None:
        for label in labels:
            traces[label].dice_per_round.append(round(dice(predicted_frames == label, reference_frames == label), 5))

    predicted = to_frames(session.result().labels, session.voxel_axis)
    score(predicted)
    for _ in range(rounds):
        for label in labels:
            truth, mine = reference_frames == label, predicted == label
            wrong = (truth != mine).reshape(len(truth), -1).sum(axis=1)
            if correction == "box":
                wrong[list(boxed[label])] = 0
            target = int(np.argmax(wrong))
            trace = traces[label]
            if wrong[target] == 0:
                trace.corrected_slices.append(None)
                continue
            began = time.perf_counter()
            if correction == "click":
                summary = session.correct(label, target, points=[_click_for(mine[target], truth[target])])
            elif truth[target].any():
                reference_box = mask_box(truth, target)  # widened where the structure is one voxel wide there
                box = (reference_box.x0, reference_box.y0, reference_box.x1, reference_box.y1)
                summary = session.correct(label, target, box=box)
                boxed[label].add(target)
            else:
                summary = session.correct(label, target, erase=mine[target])
            if adapt and len(session.prompted_slices(label)) >= MIN_ADAPT_SLICES:
                session.adapt(label)
            predicted = to_frames(session.result().labels, session.voxel_axis)
            trace.seconds.append(round(time.perf_counter() - began, 4))
            trace.redecoded.append(len(summary.decoded_slices))
            trace.encoded.append(summary.encoded_slices)
            trace.corrected_slices.append(target)
        score(predicted)
    return traces
