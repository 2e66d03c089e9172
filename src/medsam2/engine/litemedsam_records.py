"""The records of LiteMedSAM's step (one frame's step, one direction's pass, what a correction
changed) and the mask comparisons its corrections decide with. Model-space masks are square
(S, S) at the model's input size; boxes are (x0, y0, x1, y1) in model pixels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medsam2.backbones.base import Prediction
from medsam2.engine.memory import Memory, MemoryEntry
from medsam2.engine.sweep import Advance
from medsam2.engine.tracks import FramePrediction, box_of_mask


@dataclass
class TrackStep:
    """One propagated frame of one object: the answer, what it would leave in memory, and whether
    the mask looks absent (presence, predicted IoU or area too low)."""

    result: FramePrediction
    entry: MemoryEntry
    absent: bool


@dataclass
class Repropagation:
    """What a correction changed in one object's track.

    Attributes:
        frames: new answers, frame -> prediction (they replace the old ones).
        removed: frames whose old answer is dropped (the structure ends before them now).
        decoded: frames decoded again, in the order they were visited (the corrected frame excluded).
    """

    frames: dict[int, FramePrediction] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    decoded: list[int] = field(default_factory=list)


@dataclass
class DirectionPass:
    """One object's pass in one direction: its memory, the largest mask area it remembers, and the
    absent-looking answers held back until the object shows again (dropped if it ends there).

    ``ended_from`` is the first frame of the run where the object ended, once it has."""

    memory: Memory
    max_area: float
    held: list[FramePrediction] = field(default_factory=list)
    ended_from: int | None = None

    def take(self, frame: int, step: TrackStep | None, patience: int) -> Advance:
        """The sweep's :class:`Advance` for one decoded frame, and the pass's memory updated."""
        if step is None:  # nothing left in the memory's prior
            self.ended_from = self.held[0].frame if self.held else frame
            self.held = []
            return Advance(ended=True)
        if step.absent:
            self.held.append(step.result)
            if len(self.held) >= patience:
                self.ended_from = self.held[0].frame
                self.held = []
                return Advance(ended=True)
            return Advance()
        commit = self.held + [step.result]
        self.held = []
        if self.memory.add(step.entry):
            self.max_area = max(self.max_area, step.entry.area)
        return Advance(commit=commit)


#: a box correction keeps the previous answer (inside the box) where its bounding box agrees with
#: the drawn box by this much more (IoU of boxes) than the box's decoded mask does
KEEP_PREVIOUS_MARGIN = 0.1
#: ...and answers with the union of the two where they agree by this Dice
UNION_AGREEMENT = 0.8


def box_agreement(mask: np.ndarray, box: np.ndarray, limit: float) -> float:
    """IoU of a mask's bounding box with a box (x0, y0, x1, y1), model pixels; 0 for an empty mask."""
    if not mask.any():
        return 0.0
    own = box_of_mask(mask, 0.0, limit)
    ix = max(0.0, min(own[2], box[2]) - max(own[0], box[0]))
    iy = max(0.0, min(own[3], box[3]) - max(own[1], box[1]))
    inter = ix * iy
    union = (own[2] - own[0]) * (own[3] - own[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_answer_with_previous(decoded: Prediction, previous: torch.Tensor, box: np.ndarray, limit: float) -> Prediction:
    """A box correction's answer from the box's decoded mask and the previous answer cut to the box:
    - the previous answer (cut) where it spans the drawn box clearly better (LiteMedSAM sometimes
      answers a box with a small structure inside it, confidently; the annotator's box says the
      object fills it);
    - their union where the two agree (Dice >= :data:`UNION_AGREEMENT`): both are evidence of the
      structure inside the box, and the box adds to what was there rather than trading a few of
      its voxels for others (the decoder's answer to a box moves by a few voxels on small, faint
      structures, and a round could lose them);
    - else the box's decoded mask."""
    size = previous.shape[-1]
    cols, rows = np.arange(size)[None, :] + 0.5, np.arange(size)[:, None] + 0.5
    inside = previous.numpy() & (cols >= box[0]) & (cols <= box[2]) & (rows >= box[1]) & (rows <= box[3])
    if not inside.any():
        return decoded
    mine = (decoded.logits > 0).numpy()
    if box_agreement(inside, box, limit) > box_agreement(mine, box, limit) + KEEP_PREVIOUS_MARGIN:
        answer = inside
    elif dice_of(inside, mine) >= UNION_AGREEMENT:
        answer = inside | mine
    else:
        return decoded
    probability = torch.from_numpy(answer.astype(np.float32)).clamp(1e-4, 1 - 1e-4)
    return Prediction(logits=torch.logit(probability), iou=decoded.iou)


def dice_of(a, b) -> float:
    """Dice of two bool masks of one shape (NumPy arrays or tensors); 1 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def mask_dice(a: FramePrediction, b: FramePrediction) -> float:
    """Dice of two answers' masks (probability > 0.5) in model space; 1 when both are empty."""
    return dice_of(a.probability > 127, b.probability > 127)


def values_at(logits: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """The logits (S, S) at points (N, 2) as (x, y) model pixels, rounded and clipped to the grid: (N,)."""
    if len(points) == 0:
        return np.zeros(0)
    size = logits.shape[-1]
    idx = np.clip(np.round(points).astype(int), 0, size - 1)
    return logits[idx[:, 1], idx[:, 0]].numpy()
