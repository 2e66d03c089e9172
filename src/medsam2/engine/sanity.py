"""Sanity warnings: say when a result looks like the answer to a mistaken prompt.

A segmentation model answers every prompt with some mask, and often a confident one. The
plausible mistakes of a new user (x and y swapped, a box on the wrong slice, a box on background,
clicks that stay on one slice) give wrong masks with nothing to show for it. This module looks at
each object's result against its prompts and the image and returns warnings (not errors) that say
what to check. The thresholds were measured on the shared data's correct prompts (no warning on
any of them) and on mistaken ones (see ``benchmarks/sanity.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from medsam2.io.slicing import other_axes
from medsam2.prompts.parse import Box, ObjectPrompts

#: a box's contents are "background" where this fraction of it is near the window's low end...
BACKGROUND_FRACTION = 0.6
#: ...below this windowed value (air on a CT window, the empty field of an MR or ultrasound)
BACKGROUND_LEVEL = 0.03
#: the prompted slice's mask fills less than this fraction of its box
SMALL_FILL = 0.15
#: the prompted slice's mask lies more than this fraction outside its box
OUTSIDE_FRACTION = 0.35
#: the model answers the box with x and y swapped at least this much more confidently...
SWAP_GAIN = 0.1
#: ...with a mask that fills at least this fraction of the swapped box
SWAP_FILL = 0.3
#: the model's own predicted IoU on the prompted slice below this
LOW_CONFIDENCE = 0.5
#: an object that reaches an end of the scan is a likely leak when the model's confidence on its
#: last slices there is below this...
END_CONFIDENCE = 0.55
#: ...and its area there is below this fraction of its prompted slice's (a structure cut by the
#: scan's end keeps its size there; a leak into a neighbour measured here was 0.2-0.5 of it, while
#: vessels that truly run out of the scan at low confidence kept 1.2-2.3 of theirs)
END_SHRINK = 1.0

#: generous volume ranges in mL of organs by name (adult; a scan's crop may hold less, so the lower
#: bound is used only where the object does not reach an end of the scan)
ORGAN_VOLUME_ML: dict[str, tuple[float, float]] = {
    "liver": (300.0, 4500.0),
    "spleen": (20.0, 1500.0),
    "kidney": (25.0, 600.0),
    "stomach": (20.0, 3000.0),
    "pancreas": (8.0, 300.0),
    "gallbladder": (3.0, 250.0),
    "urinary_bladder": (10.0, 1500.0),
    "bladder": (10.0, 1500.0),
    "heart": (150.0, 1600.0),
    "aorta": (15.0, 800.0),
    "lung": (400.0, 6000.0),
    "brain": (700.0, 2200.0),
    "prostate": (8.0, 250.0),
    "thyroid": (3.0, 150.0),
    "adrenal_gland": (1.0, 30.0),
    "hippocampus": (1.0, 8.0),
    "caudate": (1.0, 10.0),
    "putamen": (2.0, 12.0),
    "thalamus": (3.0, 16.0),
}


@dataclass(frozen=True)
class BoxEvidence:
    """What the result looks like on a prompted box's slice (areas in pixels of that frame)."""

    frame: int
    box: tuple[int, int, int, int]
    mask_area: int
    fill: float  # mask area inside the box / box area
    outside: float  # fraction of the slice's mask outside the box (grown by a tenth of its size)
    background: float  # fraction of the box near the window's low end
    confidence: float | None
    #: the box with x and y swapped (pixels), where it fits the frame and differs from the box
    swapped_box: tuple[int, int, int, int] | None = None
    #: the swapped box's share of near-black pixels
    swapped_background: float | None = None
    #: the model's answer to the swapped box: (its confidence, the fraction of that box its mask
    #: fills), where the session tried it
    swapped: tuple[float, float] | None = None


@dataclass(frozen=True)
class ObjectEvidence:
    """One object's result, as the sanity rules see it."""

    label: int
    name: str | None
    n_frames: int
    present: list[int]
    prompted: list[int]
    boxes: list[BoxEvidence]
    confidence: dict[int, float]
    areas: dict[int, int]
    volume_ml: float | None
    #: the axis the scan was sliced along (as the user named it), where the result came from a
    #: volume; the warnings of a result that is small or ends early name the two others to try
    axis: str | None = None


def _box_pixels(box: Box, rows: int, cols: int) -> tuple[int, int, int, int]:
    x0, y0 = max(0, int(np.floor(box.x0))), max(0, int(np.floor(box.y0)))
    x1, y1 = min(cols - 1, int(np.ceil(box.x1))), min(rows - 1, int(np.ceil(box.y1)))
    return x0, y0, x1, y1


def box_background(frame01: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Fraction of a box's pixels near the window's low end (a colour frame: its mean channel)."""
    x0, y0, x1, y1 = box
    patch = frame01[y0 : y1 + 1, x0 : x1 + 1]
    if patch.ndim == 3:
        patch = patch.mean(axis=-1)
    return float((patch <= BACKGROUND_LEVEL).mean()) if patch.size else 1.0


def swapped_box(box: Box, rows: int, cols: int) -> Box | None:
    """The box with x and y swapped, where it fits the frame and differs from the box by more than a
    few pixels; else None."""
    if box.y1 > cols - 1 or box.x1 > rows - 1:
        return None
    if max(abs(box.x0 - box.y0), abs(box.x1 - box.y1)) < 4:
        return None
    return Box(box.frame, box.y0, box.x0, box.y1, box.x1)


def gather_evidence(
    obj: ObjectPrompts, mask_frames: np.ndarray, confidence: dict[int, float], frame01, voxel_ml: float | None,
    probe=None, axis: str | None = None,
) -> ObjectEvidence:
    """The evidence of one object.

    Arguments:
        obj: the object's prompts (frame coordinates).
        mask_frames: (frames, rows, cols) bool, the object's result along the slicing axis.
        confidence: the model's confidence per frame where the object is.
        frame01: callable or indexable giving a frame in [0, 1] (the session's windowed frames).
        voxel_ml: millilitres of one voxel, or None for a 2D image.
        probe: (Box) -> (confidence, mask (rows, cols) bool): the model's answer to one box on its
            frame alone, to try the swapped box; None: not tried.
        axis: the slicing axis as the user named it ("axial", ..., or "k", "j", "i"); None for a 2D image.
    """
    n, rows, cols = mask_frames.shape
    areas_all = mask_frames.reshape(n, -1).sum(axis=1)
    present = np.flatnonzero(areas_all).tolist()
    boxes = []
    for box in obj.boxes:
        x0, y0, x1, y1 = _box_pixels(box, rows, cols)
        mask = mask_frames[box.frame]
        inside = int(mask[y0 : y1 + 1, x0 : x1 + 1].sum())
        area = int(mask.sum())
        gy, gx = max(1, (y1 - y0) // 10), max(1, (x1 - x0) // 10)
        grown = int(mask[max(0, y0 - gy) : y1 + 1 + gy, max(0, x0 - gx) : x1 + 1 + gx].sum())
        box_area = (x1 - x0 + 1) * (y1 - y0 + 1)
        frame = frame01[box.frame]  # windowed once per box
        other = swapped_box(box, rows, cols)
        other_pixels = _box_pixels(other, rows, cols) if other is not None else None
        swapped = None
        if other is not None and probe is not None:
            other_confidence, other_mask = probe(other)
            sx0, sy0, sx1, sy1 = other_pixels
            other_fill = float(other_mask[sy0 : sy1 + 1, sx0 : sx1 + 1].sum()) / max((sx1 - sx0 + 1) * (sy1 - sy0 + 1), 1)
            swapped = (float(other_confidence), other_fill)
        boxes.append(
            BoxEvidence(
                frame=box.frame,
                box=(x0, y0, x1, y1),
                mask_area=area,
                fill=inside / max(box_area, 1),
                outside=(area - grown) / area if area else 0.0,
                background=box_background(frame, (x0, y0, x1, y1)),
                confidence=confidence.get(box.frame),
                swapped_box=other_pixels,
                swapped_background=box_background(frame, other_pixels) if other_pixels is not None else None,
                swapped=swapped,
            )
        )
    total = int(areas_all.sum())
    return ObjectEvidence(
        label=obj.label,
        name=obj.name,
        n_frames=n,
        present=present,
        prompted=obj.prompted_frames(),
        boxes=boxes,
        confidence=dict(confidence),
        areas={int(f): int(areas_all[f]) for f in present},
        volume_ml=None if voxel_ml is None else total * voxel_ml,
        axis=axis,
    )


def organ_key(name: str | None) -> str | None:
    """The :data:`ORGAN_VOLUME_ML` key a structure's name means ("Kidney_Left" -> "kidney"), or None."""
    if not name:
        return None
    words = re.sub(r"[^a-z]+", "_", name.lower()).strip("_")
    words = re.sub(r"(^|_)(left|right|l|r|lt|rt)(_|$)", "_", words).strip("_")
    if words in ORGAN_VOLUME_ML:
        return words
    singular = words[:-1] if words.endswith("s") else words
    return singular if singular in ORGAN_VOLUME_ML else None


def _who(evidence: ObjectEvidence) -> str:
    return f"label {evidence.label}" + (f" ({evidence.name})" if evidence.name else "")


def _box_text(frame: int, box: tuple[int, int, int, int]) -> str:
    return f"{frame}:{box[0]},{box[1]},{box[2]},{box[3]}"


def sanity_warnings(evidence: ObjectEvidence) -> list[str]:
    """The warnings for one object (empty when nothing looks wrong). Each says what to check."""
    who = _who(evidence)
    notes: list[str] = []
    if not evidence.present:
        return notes  # "nothing was segmented" is said by the session
    suspicious_box = False
    for box in evidence.boxes:
        where = f"the box {_box_text(box.frame, box.box)}"
        problems = []
        if box.background >= BACKGROUND_FRACTION:
            problems.append(f"{box.background:.0%} of it looks like background (outside the body or an empty field)")
        if box.mask_area == 0:
            problems.append("nothing was found in it")
        elif box.fill < SMALL_FILL:
            problems.append(f"the mask fills only {box.fill:.0%} of it")
        if box.outside > OUTSIDE_FRACTION:
            problems.append(f"{box.outside:.0%} of the mask on slice {box.frame} lies outside it")
        if box.confidence is not None and box.confidence < LOW_CONFIDENCE and box.mask_area:
            problems.append(f"the model's confidence there is low ({box.confidence:.2f})")
        swap = box.swapped is not None and box.swapped[0] >= (box.confidence or 0.0) + SWAP_GAIN and box.swapped[1] >= SWAP_FILL
        if problems or swap:
            suspicious_box = True
            hint = _swap_hint(box, swap)
            if swap:
                problems.append(
                    f"the model is more confident with x and y swapped ({box.swapped[0]:.2f} against {box.confidence or 0:.2f})"
                )
            notes.append(f"{who}: {where}: " + "; ".join(problems) + f". {hint}")
    if evidence.n_frames > 1 and len(evidence.present) == 1 and len(evidence.prompted) == 1:
        notes.append(
            f"{who}: found on its prompted slice {evidence.present[0]} only, on none of the {evidence.n_frames - 1} others; "
            "check that the prompt is on the structure (x and y not swapped, the right slice) or prompt a slice where it is larger"
            + _axis_hint(evidence)
        )
    elif evidence.n_frames > 1 and len(evidence.present) > 1:
        notes.extend(_end_warnings(evidence, who))
    if not suspicious_box:
        notes.extend(_volume_warnings(evidence, who))
    return notes


def _swap_hint(box: BoxEvidence, swap: bool) -> str:
    """"x and y may be swapped ... did you mean ...?" where the swapped box fits and holds tissue."""
    x0, y0, x1, y1 = box.box
    if box.swapped_box is not None and (swap or (box.swapped_background or 1.0) < BACKGROUND_FRACTION / 2):
        return (
            f"x and y may be swapped: the box is x {x0}..{x1}, y {y0}..{y1} (x is the column, y the row); "
            f"did you mean {_box_text(box.frame, box.swapped_box)}?"
        )
    return "Check that the box is on the structure, on the right slice, as x0,y0,x1,y1 (x is the column, y the row)."


@dataclass(frozen=True)
class EndEvidence:
    """An object that reaches an end slice of the scan: how it looks on the last slices there."""

    end: int
    near: tuple[int, int]  # the slices looked at (the end and up to two before it)
    growth: float  # their largest area / the prompted slice's area
    confidence: float  # their lowest confidence
    prompted: bool  # the end slice itself is prompted


def end_evidence(evidence: ObjectEvidence) -> list[EndEvidence]:
    """One entry per end slice of the scan (first, last) that the object reaches."""
    out = []
    prompted_area = max((evidence.areas.get(f, 0) for f in evidence.prompted), default=0) or max(evidence.areas.values())
    for end in sorted({0, evidence.n_frames - 1}):
        if end not in evidence.areas:
            continue
        near = [f for f in evidence.present if abs(f - end) <= 2]
        growth = max(evidence.areas[f] for f in near) / max(prompted_area, 1)
        confidence = min((evidence.confidence.get(f, 1.0) for f in near), default=1.0)
        out.append(EndEvidence(end, (min(near), max(near)), growth, confidence, end in evidence.prompted))
    return out


def _end_warnings(evidence: ObjectEvidence, who: str) -> list[str]:
    notes = []
    for item in end_evidence(evidence):
        end, grown, confidence, near = item.end, item.growth, item.confidence, item.near
        name = "first" if end == 0 else "last"
        if item.prompted or confidence >= END_CONFIDENCE or grown >= END_SHRINK:
            continue
        notes.append(
            f"{who}: runs to the {name} slice of the scan ({end}), thinning out ({grown:.1f} of its area on the prompted "
            f"slice) at low confidence ({confidence:.2f}): a likely leak into a neighbouring structure; check slices "
            f"{near[0]}-{near[1]} and correct or erase where it goes wrong"
        )
    return notes


def _volume_warnings(evidence: ObjectEvidence, who: str) -> list[str]:
    key = organ_key(evidence.name)
    if key is None or evidence.volume_ml is None:
        return []
    low, high = ORGAN_VOLUME_ML[key]
    reaches_end = 0 in evidence.areas or (evidence.n_frames - 1) in evidence.areas
    volume = evidence.volume_ml
    if volume > high or (volume < low and not reaches_end):
        side = "more" if volume > high else "less"
        return [
            f"{who}: {volume:.1f} mL is {side} than a {key.replace('_', ' ')} usually holds ({low:g}-{high:g} mL); "
            "check the prompt and the scan's spacing" + (_axis_hint(evidence) if side == "less" else "")
        ]
    return []


def _axis_hint(evidence: ObjectEvidence) -> str:
    """For a result that is small or ends early: the two other slicing axes, which can hold a
    structure better (a left hippocampus measured Dice 0.20 from an axial box, 0.66 from a coronal one)."""
    if evidence.axis is None or evidence.n_frames < 2:
        return ""
    first, second = other_axes(evidence.axis)
    return f"; propagation along another axis may hold it: try --axis {first} or --axis {second}"
