"""The prompt types: a box, a click and a mask on one frame, and an object's prompts.

Coordinates are 0-based voxel indices (IJK). A prompt's ``frame`` is the slice index along the
slicing axis; ``x`` is the frame's column and ``y`` its row (see :mod:`medsam2.io.slicing`). Boxes are
inclusive. Every type checks its fields on construction. Parsing and validation against a volume
are in :mod:`medsam2.prompts.parse`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real

import numpy as np

from medsam2.errors import ArgumentTypeError, PromptError
from medsam2.io.volume import MAX_LABEL_VALUE


def frame_index(value: object, what: str) -> int:
    """A slice index as an int.

    Raises:
        ArgumentTypeError: not an integer (bools and floats included).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"the slice of a {what} is an integer index, not {value!r}")
    return int(value)


def coordinate(value: object, what: str) -> float:
    """A finite coordinate as a float.

    Raises:
        ArgumentTypeError: not a real number.
        PromptError: NaN or infinite.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.integer, np.floating)):
        raise ArgumentTypeError(f"a {what} coordinate is a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise PromptError(f"a {what} coordinate must be a finite number, not {number}")
    return number


def object_label(value: object) -> int:
    """An object's label as an int in 1..65535.

    Raises:
        ArgumentTypeError: not an integer; PromptError: outside 1..65535.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"a label is an integer from 1 to {MAX_LABEL_VALUE}, not {value!r}")
    if not 1 <= int(value) <= MAX_LABEL_VALUE:
        raise PromptError(f"label {int(value)}: labels are integers from 1 to {MAX_LABEL_VALUE} (0 is the background)")
    return int(value)


@dataclass(frozen=True)
class Box:
    """An inclusive box on one frame: columns x0..x1, rows y0..y1.

    Raises:
        ArgumentTypeError: a non-integer frame or a non-numeric coordinate.
        PromptError: a NaN or infinite coordinate.
    """

    frame: int
    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", frame_index(self.frame, "box"))
        for name in ("x0", "y0", "x1", "y1"):
            object.__setattr__(self, name, coordinate(getattr(self, name), "box"))

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(frozen=True)
class Point:
    """A click on one frame at column x, row y; positive (foreground) or negative (background)."""

    frame: int
    x: float
    y: float
    positive: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", frame_index(self.frame, "point"))
        object.__setattr__(self, "x", coordinate(self.x, "point"))
        object.__setattr__(self, "y", coordinate(self.y, "point"))
        if not isinstance(self.positive, (bool, np.bool_)):
            raise ArgumentTypeError(f"a point's positive is True (foreground) or False (background), not {self.positive!r}")
        object.__setattr__(self, "positive", bool(self.positive))


@dataclass
class MaskPrompt:
    """A mask on one frame: (rows, cols) bool. It is that frame's answer and pins the object."""

    frame: int
    mask: np.ndarray

    def __post_init__(self) -> None:
        self.frame = frame_index(self.frame, "mask")
        if not isinstance(self.mask, np.ndarray) or self.mask.dtype.kind not in "biuf":
            raise ArgumentTypeError(f"a mask prompt is a NumPy array (rows, cols), not {type(self.mask).__name__}")
        if self.mask.ndim != 2:
            raise PromptError(f"a mask prompt is one slice (rows, cols); got shape {self.mask.shape}")


@dataclass
class ObjectPrompts:
    """All prompts of one object (one output label).

    Raises:
        ArgumentTypeError: a label that is not an integer, a name that is not a string, or boxes,
            points or masks that are not lists of :class:`Box`, :class:`Point`, :class:`MaskPrompt`.
        PromptError: a label outside 1..65535.
    """

    label: int
    name: str | None = None
    boxes: list[Box] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    masks: list[MaskPrompt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.label = object_label(self.label)
        if self.name is not None and not isinstance(self.name, str):
            raise ArgumentTypeError(f"an object's name is a string, not {self.name!r}")
        for attribute, kind, example in (
            ("boxes", Box, "Box(slice, x0, y0, x1, y1)"),
            ("points", Point, "Point(slice, x, y)"),
            ("masks", MaskPrompt, "MaskPrompt(slice, mask)"),
        ):
            items = getattr(self, attribute)
            if isinstance(items, (str, bytes, kind)) or not isinstance(items, (list, tuple)):
                raise ArgumentTypeError(f"ObjectPrompts.{attribute} is a list of {kind.__name__}, e.g. [{example}]; got {items!r:.60}")
            for item in items:
                if not isinstance(item, kind):
                    raise ArgumentTypeError(f"ObjectPrompts.{attribute} holds {kind.__name__} items, e.g. {example}; got {item!r:.60}")
            setattr(self, attribute, list(items))

    def prompted_frames(self) -> list[int]:
        frames = {b.frame for b in self.boxes} | {p.frame for p in self.points} | {m.frame for m in self.masks}
        return sorted(frames)

    def is_empty(self) -> bool:
        return not (self.boxes or self.points or self.masks)

    def merge(self, other: ObjectPrompts) -> None:
        self.boxes.extend(other.boxes)
        self.points.extend(other.points)
        self.masks.extend(other.masks)
        self.name = self.name or other.name
