"""Prompts simulated as the engine sends them, in model space (256 x 256 pixel edges).

* the reference box of the slice, its edges moved by up to ``jitter`` frame pixels (evaluate's
  jitter);
* on 3D data, the propagation's own prompt: the box of the neighbouring slice's mask grown by the
  engine's margin (``PropagationSettings.box_margin``), which is what every propagated slice gets;
* one positive click at a point deep inside the structure.

Every draw comes from a generator seeded by (seed, epoch, target index), so that one process and
several processes draw the same prompts for the same targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medsam2.engine.litemedsam_settings import PropagationSettings
from medsam2.engine.tracks import box_of_mask
from medsam2.evaluation.protocols import deepest_point, inside_depth
from medsam2.train.samples import CaseFeatures, Target

#: the share of 3D box prompts that are the propagation's neighbour box
PROPAGATION_SHARE = 1 / 3
ENGINE_MARGIN = PropagationSettings().box_margin


@dataclass(frozen=True)
class PromptBatch:
    """A batch's prompts: boxes (B, 1, 4) or clicks ((B, 1, 2) coordinates, (B, 1) labels)."""

    boxes: torch.Tensor | None = None
    points: tuple[torch.Tensor, torch.Tensor] | None = None


def target_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def reference_box(mask: np.ndarray, jitter_model: float, rng: np.random.Generator | None, limit: float) -> np.ndarray:
    """The mask's box (x0, y0, x1, y1, pixel edges), edges moved by up to ``jitter_model`` at random."""
    box = box_of_mask(mask, 0.0, limit)
    if rng is not None and jitter_model > 0:
        box = box + rng.uniform(-jitter_model, jitter_model, size=4).astype(np.float32)
    box = np.clip(box, 0, limit)
    box[2] = max(box[2], box[0] + 1)
    box[3] = max(box[3], box[1] + 1)
    return box


def neighbour_box(case: CaseFeatures, target: Target, rng: np.random.Generator, limit: float) -> np.ndarray | None:
    """The box the propagation would send: an adjacent slice's mask, grown by the engine's margin."""
    frame = case.frames[target.index]
    masks = case.masks[target.label]
    options = []
    for step in (-1, 1):
        other = target.index + step
        if 0 <= other < len(case.frames) and case.frames[other] == frame + step and bool(masks[other].any()):
            options.append(other)
    if not options:
        return None
    chosen = options[int(rng.integers(len(options)))]
    return box_of_mask(masks[chosen].numpy(), ENGINE_MARGIN, limit)


def deep_click(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(x, y) of a pixel drawn among those at least half as deep inside the mask as its deepest."""
    depth = inside_depth(mask)
    rows, cols = np.nonzero(depth >= depth.max() / 2)
    pick = int(rng.integers(len(rows)))
    return np.array([cols[pick], rows[pick]], dtype=np.float32)


def batch_kind(prompt: str, seed: int, epoch: int, batch: int) -> str:
    """"box" or "click" for one global batch (a batch holds one kind: the prompt encoder takes one)."""
    if prompt != "mixed":
        return prompt
    return "click" if np.random.default_rng([seed, epoch, batch, 7]).random() < 0.5 else "box"


def make_prompts(
    cases: dict[str, CaseFeatures], targets: list[Target], indices: list[int], kind: str, jitter: int, seed: int, epoch: int,
    limit: float, training: bool = True,
) -> PromptBatch:
    """The prompts of ``targets[i]`` for i in ``indices``; validation (``training`` False) uses
    the reference box, or the deepest click, with no randomness."""
    boxes, points = [], []
    for i in indices:
        target = targets[i]
        case = cases[target.case]
        mask = case.masks[target.label][target.index].numpy()
        rng = target_rng(seed, epoch, i)
        if kind == "click":
            points.append(deep_click(mask, rng) if training else np.array(deepest_point(mask)[::-1], dtype=np.float32))
            continue
        box = None
        if training and rng.random() < PROPAGATION_SHARE:
            box = neighbour_box(case, target, rng, limit)
        if box is None:
            box = reference_box(mask, jitter * case.scale if training else 0.0, rng if training else None, limit)
        boxes.append(box)
    if kind == "click":
        coords = torch.as_tensor(np.stack(points))[:, None, :]
        return PromptBatch(points=(coords, torch.ones((len(points), 1), dtype=torch.int64)))
    return PromptBatch(boxes=torch.as_tensor(np.stack(boxes))[:, None, :])

