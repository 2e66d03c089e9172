"""What every engine step shares: an object's answers per frame (tracks), frame features fetched
on demand, frame keys and mask prototypes for the memory bank, and run statistics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from medsam2.backbones.base import Backbone, FrameFeatures
from medsam2.prompts.parse import ObjectPrompts


@dataclass
class FramePrediction:
    """One object's answer on one frame.

    ``probability`` is (S, S) in model space, stored as uint8 (value / 255) to keep memory low.
    ``logits`` (SAM 2 only) are the (S, S) float32 mask logits, kept so that the output mask is
    exactly SAM 2's (logits resized to the frame, > 0). ``exact`` (an opened label map's slice,
    :mod:`medsam2.engine.label_import`) is the (rows, cols) bool mask on the frame itself, which
    the output is then, voxel for voxel.
    """

    frame: int
    probability: torch.Tensor
    iou: float
    presence: float
    confidence: float
    prompted: bool = False
    logits: torch.Tensor | None = None
    exact: torch.Tensor | None = None

    def probability_float(self) -> torch.Tensor:
        return self.probability.float() / 255.0


@dataclass
class ObjectTrack:
    """All frames where an object was found."""

    label: int
    name: str | None
    prompted_frames: list[int]
    frames: dict[int, FramePrediction] = field(default_factory=dict)


@dataclass
class PropagationStats:
    """What a run cost: decoder calls, seconds encoding and decoding, and the frames whose features
    it asked for (encoded, or served by a cache)."""

    decode_calls: int = 0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    encoded_frames: set[int] = field(default_factory=set)


class FeatureStore:
    """Encodes frames on demand; keeps only the frames that a later sweep will visit again."""

    def __init__(self, frames01: Sequence[np.ndarray], backbone: Backbone, keep: set[int], stats: PropagationStats) -> None:
        self.frames01 = frames01
        self.backbone = backbone
        self.keep = keep
        self.stats = stats
        self._cache: dict[int, FrameFeatures] = {}

    def get(self, frame: int) -> FrameFeatures:
        if frame in self._cache:
            return self._cache[frame]
        start = time.perf_counter()
        features = self.backbone.encode([self.frames01[frame]])[0]
        self.stats.encode_seconds += time.perf_counter() - start
        self.stats.encoded_frames.add(frame)
        # the current frame stays until the next one is asked for; kept frames stay for good
        self._cache = {f: v for f, v in self._cache.items() if f in self.keep}
        self._cache[frame] = features
        return features


def frames_between_prompts(objects: Sequence[ObjectPrompts]) -> set[int]:
    """Frames from the first to the last prompted frame of any object: the sweeps in both directions
    visit them, so a FeatureStore keeps their features rather than encoding them twice."""
    prompted = sorted({f for o in objects for f in o.prompted_frames()})
    return set(range(prompted[0], prompted[-1] + 1))


def frame_key(features: FrameFeatures, grid: int) -> torch.Tensor:
    """(D,) L2-normalised frame descriptor: features average-pooled to grid x grid."""
    pooled = F.adaptive_avg_pool2d(features.embedding.float()[None], grid).flatten().cpu()
    return pooled / pooled.norm().clamp(min=1e-8)


def mask_prototype(features: FrameFeatures, probability: torch.Tensor) -> torch.Tensor:
    """(C,) L2-normalised mean feature inside the mask (probability > 0.5) of a (S, S) map."""
    embedding = features.embedding.float().cpu()
    weight = F.interpolate((probability > 0.5).float()[None, None], size=embedding.shape[-2:], mode="area")[0, 0]
    total = weight.sum()
    if total <= 0:
        return torch.zeros(embedding.shape[0])
    proto = (embedding * weight).sum(dim=(1, 2)) / total
    return proto / proto.norm().clamp(min=1e-8)


def intensity_histogram(features: FrameFeatures, probability: torch.Tensor, bins: int = 16) -> torch.Tensor | None:
    """(bins,) histogram, summing to 1, of the frame's windowed values (``features.intensity``)
    inside a (S, S) mask (probability > 0.5); None when the features keep no intensity map or the
    mask is empty."""
    if features.intensity is None:
        return None
    values = features.intensity[probability > 0.5].float()
    if values.numel() == 0:
        return None
    counts = torch.histc(values, bins=bins, min=0.0, max=255.0)
    return counts / counts.sum()


def box_of_mask(mask: np.ndarray, margin: float, limit: float) -> np.ndarray:
    """(x0, y0, x1, y1) pixel-edge box around a (rows, cols) mask, grown by ``margin``, clipped to [0, limit]."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = np.array([cols[0] - margin, rows[0] - margin, cols[-1] + 1 + margin, rows[-1] + 1 + margin], dtype=np.float32)
    return np.clip(box, 0, limit)


def quantise_probability(probability: torch.Tensor) -> torch.Tensor:
    """A [0, 1] map as uint8 (value x 255, rounded): how FramePrediction stores probabilities."""
    return (probability.clamp(0, 1) * 255).round().to(torch.uint8)
