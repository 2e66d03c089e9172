"""Simulated prompts: the protocols of ``medsam2 evaluate`` and the settings a run measures with.

Protocols (the prompts a simulated user gives, per structure, from its reference mask):

* ``box-mid``: the bounding box on the slice in the middle of the structure's extent;
* ``box-largest``: the bounding box on the slice where the structure is largest;
* ``click-mid``: one foreground click at the point deepest inside the structure (largest
  distance to its border) on the middle slice;
* ``box-every-K``: a box every K slices of the extent, starting at its first slice;
* ``oneprompt``: the first case is the annotated support (its whole reference mask of each
  structure); every other case is a query segmented with no prompt (``medsam2 oneprompt``). Methods:
  ``confidence`` (the bank admits confident answers), ``none`` (the support alone) and ``oracle``
  (box on every slice of each query).
* ``interactive-N`` (N = 1..10): ``box-mid``, then N rounds in which a simulated annotator corrects
  each structure on its worst slice (``--correction box|click``, see :mod:`medsam2.evaluation.interactive`);
  Dice is recorded after every round (``dice_round_0..N``), with the area under that curve.

``--jitter P`` moves every box edge by a random whole number of pixels in [-P, P] (seeded).

Methods: ``confidence`` (the confidence memory bank), ``fifo`` (prompted frames plus the last
six), ``none`` (previous slice only) and ``oracle`` (the reference box on every slice of the
structure and nothing on the others: the model's answer to each box, an upper bound that costs one
prompt per slice).
"""


from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medsam2.errors import UsageError
from medsam2.evaluation.interactive import CORRECTIONS, MAX_ROUNDS, interactive_rounds
from medsam2.prompts.parse import Box, ObjectPrompts, Point

#: the methods evaluate compares: a memory rule (confidence, fifo, none), a box on every slice
#: (oracle), or the confidence rule learning from each round's corrections (adapt, interactive-N)
METHODS = ("confidence", "fifo", "none", "oracle", "adapt")
#: the memory rule a method that is not one runs with
MEMORY_OF_METHOD = {"oracle": "confidence", "adapt": "confidence"}
_EVERY = re.compile(r"^box-every-(\d+)$")
@dataclass(frozen=True)
class EvaluationConfig:
    """What a run measures; a resumed run must have the same."""

    protocol: str = "box-mid"
    methods: tuple[str, ...] = ("confidence", "oracle")
    labels: tuple[int, ...] | None = None
    cases: int | None = None
    seed: int = 0
    jitter: int = 0
    nsd_tolerance_mm: float = 2.0
    axis: str = "axial"
    window: str = "auto"
    correction: str = "box"
    #: what --save-predictions writes: auto (.nii.gz, .png for 2D), seg-nrrd, dicom-seg or rtstruct (.dcm)
    prediction_format: str = "auto"
    #: the LiteMedSAM engine's intensity stop rule as the run was asked for (None: the engine's default);
    #: kept here so that results.json records it and a resumed run must use the same
    stop_intensity_overlap: float | None = None


def check_config(config: EvaluationConfig) -> None:
    """Raises UsageError for an unknown protocol or method."""
    known = config.protocol in ("box-mid", "box-largest", "click-mid", "oneprompt") or _EVERY.match(config.protocol)
    rounds = interactive_rounds(config.protocol)
    if not known and rounds is None:
        raise UsageError(
            f"unknown protocol '{config.protocol}'; choose box-mid, box-largest, click-mid, box-every-K, oneprompt or interactive-N"
        )
    if rounds is not None and not 1 <= rounds <= MAX_ROUNDS:
        raise UsageError(f"--protocol interactive-N takes N from 1 to {MAX_ROUNDS} (got {rounds})")
    if config.correction not in CORRECTIONS:
        raise UsageError(f"unknown correction '{config.correction}'; choose {' or '.join(CORRECTIONS)}")
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise UsageError(f"unknown method {unknown[0] if unknown else '(none)'}; choose from {', '.join(METHODS)}")
    if config.protocol == "oneprompt" and "fifo" in config.methods:
        raise UsageError("method fifo does not apply to --protocol oneprompt; choose from confidence, none, oracle")
    if "adapt" in config.methods and rounds is None:
        raise UsageError("method adapt learns from corrections: use it with --protocol interactive-N")
    if config.jitter < 0:
        raise UsageError("--jitter must be 0 or more pixels")


def structure_slices(reference: np.ndarray) -> np.ndarray:
    """Indices of the frames of a (frames, rows, cols) mask that hold foreground."""
    return np.flatnonzero(reference.reshape(reference.shape[0], -1).any(axis=1))


def _box_on(reference: np.ndarray, frame: int, rng: np.random.Generator, jitter: int) -> Box:
    rows, cols = np.nonzero(reference[frame])
    x0, y0, x1, y1 = (int(v) for v in (cols.min(), rows.min(), cols.max(), rows.max()))
    if jitter:
        x0, y0, x1, y1 = (v + int(rng.integers(-jitter, jitter + 1)) for v in (x0, y0, x1, y1))
    height, width = reference.shape[1:3]
    x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1, 0), width - 1)))
    y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1, 0), height - 1)))
    if x1 == x0:
        x1, x0 = (x0 + 1, x0) if x0 + 1 < width else (x0, x0 - 1)
    if y1 == y0:
        y1, y0 = (y0 + 1, y0) if y0 + 1 < height else (y0, y0 - 1)
    return Box(frame, x0, y0, x1, y1)


def simulate_prompts(reference: np.ndarray, protocol: str, rng: np.random.Generator, jitter: int = 0, label: int = 1) -> ObjectPrompts:
    """Prompts for one structure (object ``label``) from its (frames, rows, cols) bool reference."""
    slices = structure_slices(reference)
    middle = int((slices[0] + slices[-1]) // 2)
    if not reference[middle].any():  # a structure with a gap at its middle: nearest slice holding it
        middle = int(slices[np.argmin(np.abs(slices - middle))])
    if protocol == "box-mid" or interactive_rounds(protocol) is not None:
        return ObjectPrompts(label, boxes=[_box_on(reference, middle, rng, jitter)])
    if protocol == "box-largest":
        areas = reference.reshape(reference.shape[0], -1).sum(axis=1)
        return ObjectPrompts(label, boxes=[_box_on(reference, int(np.argmax(areas)), rng, jitter)])
    if protocol == "click-mid":
        row, col = deepest_point(reference[middle])
        return ObjectPrompts(label, points=[Point(middle, float(col), float(row))])
    if protocol == "oracle":
        return ObjectPrompts(label, boxes=[_box_on(reference, int(z), rng, 0) for z in slices])
    match = _EVERY.match(protocol)
    if match:
        step = max(1, int(match.group(1)))
        frames = [int(z) for z in range(int(slices[0]), int(slices[-1]) + 1, step) if reference[z].any()]
        return ObjectPrompts(label, boxes=[_box_on(reference, z, rng, jitter) for z in frames])
    raise UsageError(f"unknown protocol '{protocol}'")


def inside_depth(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the mask's border (0 outside; the image edge counts as border)."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def deepest_point(mask: np.ndarray) -> tuple[int, int]:
    """(row, col) of the pixel deepest inside a 2D mask: where a simulated user clicks."""
    depth = inside_depth(mask)
    row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(row), int(col)


def middle_slice_box(reference: np.ndarray) -> Box:
    """The ``box-mid`` prompt without jitter: the reference's bounding box on the middle slice of
    its extent. ``reference`` is (frames, rows, cols) bool with at least one foreground voxel."""
    return simulate_prompts(reference, "box-mid", np.random.default_rng(0)).boxes[0]


