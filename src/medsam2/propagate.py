"""Propagation of prompted objects through a stack of frames, both ways, through a memory.

For each direction, one sweep visits the frames in order and encodes each frame once for all the
objects that are active there. An object becomes active at its first prompted frame in the sweep's
direction, is pinned again at each further prompted frame, and stops where its structure ends: when
a few consecutive frames look absent (object presence, predicted IoU or area too low).

On a box-only backbone (LiteMedSAM) the memory's readout becomes boxes: the similarity-weighted
prior of the remembered masks gives one box per connected component (and the union box, when there
are several; the decoder's predicted IoU picks between them). Measured choices are in DESIGN.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from medsam2.backbones.base import Backbone, FrameFeatures, Prediction
from medsam2.memory import Memory, MemoryEntry
from medsam2.prompts import ObjectPrompts


@dataclass(frozen=True)
class PropagationSettings:
    """Tuning of the propagation engine (defaults measured on CT organs; see DESIGN.md).

    Attributes:
        box_margin: model pixels added around each box taken from the memory's prior.
        component_fraction: prior components smaller than this fraction of the largest get no box.
        stop_presence: a frame looks absent when its mask's feature prototype has a cosine
            similarity below this to the memory's reference prototypes...
        stop_iou: ...or when the predicted IoU is below this...
        stop_area_fraction: ...or when the mask is smaller than this fraction of the largest mask
            remembered for the object.
        patience: consecutive absent-looking frames after which the object ends in that direction.
        key_grid: frame keys are image features average-pooled to key_grid x key_grid.
    """

    box_margin: float = 4.0
    component_fraction: float = 0.1
    stop_presence: float = 0.5
    stop_iou: float = 0.6
    stop_area_fraction: float = 0.02
    patience: int = 2
    key_grid: int = 16


@dataclass
class FramePrediction:
    """One object's answer on one frame.

    ``probability`` is (S, S) in model space, stored as uint8 (value / 255) to keep memory low.
    ``logits`` (SAM 2 only) are the (S, S) float32 mask logits, kept so that the output mask is
    exactly SAM 2's (logits resized to the frame, > 0).
    """

    frame: int
    probability: torch.Tensor
    iou: float
    presence: float
    confidence: float
    prompted: bool = False
    logits: torch.Tensor | None = None

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
    frames_total: int = 0
    frames_encoded: int = 0
    encode_calls: int = 0
    decode_calls: int = 0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    #: (label, frame, iou, presence, area, absent) for every propagated decode, for diagnostics
    trace: list[tuple[int, int, float, float, float, bool]] = field(default_factory=list)


class FeatureStore:
    """Encodes frames on demand; keeps only the frames that a later sweep will visit again."""

    def __init__(self, frames01: Sequence[np.ndarray], backbone: Backbone, keep: set[int], stats: PropagationStats) -> None:
        self.frames01 = frames01
        self.backbone = backbone
        self.keep = keep
        self.stats = stats
        self._cache: dict[int, FrameFeatures] = {}
        self._encoded: set[int] = set()

    def get(self, frame: int) -> FrameFeatures:
        if frame in self._cache:
            return self._cache[frame]
        start = time.perf_counter()
        features = self.backbone.encode([self.frames01[frame]])[0]
        self.stats.encode_seconds += time.perf_counter() - start
        self.stats.encode_calls += 1
        self._encoded.add(frame)
        self.stats.frames_encoded = len(self._encoded)
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


def box_of_mask(mask: np.ndarray, margin: float, limit: float) -> np.ndarray:
    """(x0, y0, x1, y1) pixel-edge box around a (rows, cols) mask, grown by ``margin``, clipped to [0, limit]."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = np.array([cols[0] - margin, rows[0] - margin, cols[-1] + 1 + margin, rows[-1] + 1 + margin], dtype=np.float32)
    return np.clip(box, 0, limit)


class Propagator:
    """Runs the sweeps for a set of objects over one stack of frames.

    Arguments:
        frames01: n frames, each (H, W) or (H, W, 3) with values in [0, 1], with a ``shape``
            attribute (an array, or :class:`medsam2.preprocess.WindowedFrames` that windows
            each frame when it is asked for).
        backbone: the segmentation network.
        memory_factory: makes a fresh memory for each object and sweep.
        settings: engine settings.
        progress: show a tqdm bar.
    """

    def __init__(
        self,
        frames01: Sequence[np.ndarray],
        backbone: Backbone,
        memory_factory: Callable[[], Memory],
        settings: PropagationSettings | None = None,
        progress: bool = False,
    ) -> None:
        self.frames01 = frames01
        self.backbone = backbone
        self.memory_factory = memory_factory
        self.settings = settings or PropagationSettings()
        self.progress = progress
        self.stats = PropagationStats(frames_total=len(frames01))

    # -- decoding helpers -------------------------------------------------------------------
    def _decode(self, features: FrameFeatures, box=None, points=None, labels=None) -> Prediction:
        start = time.perf_counter()
        prediction = self.backbone.decode(features, box=box, points=points, point_labels=labels)
        self.stats.decode_seconds += time.perf_counter() - start
        self.stats.decode_calls += 1
        return prediction

    def _decode_from_prior(self, features: FrameFeatures, prior: torch.Tensor) -> Prediction | None:
        """Boxes from the prior's components (and their union); the best predicted IoU wins."""
        mask = (prior > 0.5).numpy()
        if not mask.any():
            return None
        limit = self.backbone.input_size
        labels, count = ndimage.label(mask)
        sizes = ndimage.sum(mask, labels, range(1, count + 1))
        keep = [i + 1 for i, s in enumerate(sizes) if s >= self.settings.component_fraction * sizes.max()]
        kept = np.isin(labels, keep)
        union = self._decode(features, box=box_of_mask(kept, self.settings.box_margin, limit))
        if len(keep) == 1:
            return union
        probs, weighted_iou, area = [], 0.0, 0.0
        for component in keep:
            part = labels == component
            prediction = self._decode(features, box=box_of_mask(part, self.settings.box_margin, limit))
            probs.append(torch.sigmoid(prediction.logits))
            weighted_iou += prediction.iou * float(part.sum())
            area += float(part.sum())
        split_iou = weighted_iou / area
        if union.iou >= split_iou:
            return union
        merged = torch.stack(probs).max(dim=0).values.clamp(1e-6, 1 - 1e-6)
        return Prediction(logits=torch.logit(merged), iou=split_iou)

    def _box_for_clicks(self, features: FrameFeatures, points: np.ndarray, labels: np.ndarray) -> Prediction:
        """Box-only weights need a box for a click: try boxes of several sizes around the
        foreground clicks and keep the mask with the best predicted IoU that holds every
        foreground click and no background click."""
        positive = points[labels == 1]
        negative = points[labels == 0]
        limit = self.backbone.input_size
        low = positive.min(axis=0)
        high = positive.max(axis=0)
        centre = (low + high) / 2
        best: Prediction | None = None
        best_score = -1.0
        for half in (6, 10, 16, 24, 32, 48, 64, 96):
            for aspect in (1.0, 0.6, 1.6):
                hw = max(half * aspect ** 0.5, (high[0] - low[0]) / 2 + 2)
                hh = max(half / aspect ** 0.5, (high[1] - low[1]) / 2 + 2)
                box = np.clip(np.array([centre[0] - hw, centre[1] - hh, centre[0] + hw, centre[1] + hh], dtype=np.float32), 0, limit)
                prediction = self._decode(features, box=box)
                inside = _values_at(prediction.logits, positive) > 0
                outside = _values_at(prediction.logits, negative) <= 0 if len(negative) else np.ones(1, bool)
                score = prediction.iou * float(inside.mean()) * float(outside.mean())
                if score > best_score:
                    best, best_score = prediction, score
        assert best is not None
        return best

    # -- pinned frames ------------------------------------------------------------------------
    def _pinned_prediction(self, obj: ObjectPrompts, frame: int, features: FrameFeatures) -> Prediction:
        geometry = features.geometry
        masks = [m for m in obj.masks if m.frame == frame]
        if masks:
            union = np.logical_or.reduce([m.mask for m in masks])
            probability = geometry.frame_to_model(union.astype(np.float32), size=self.backbone.input_size)
            probability = (probability > 0.5).float().clamp(1e-4, 1 - 1e-4)
            return Prediction(logits=torch.logit(probability), iou=1.0)
        boxes = [b for b in obj.boxes if b.frame == frame]
        if boxes:
            # LiteMedSAM answers boxes best; several boxes on one frame are several parts.
            probs, ious = [], []
            for box in boxes:
                prediction = self._decode(features, box=geometry.box_to_model(box.as_tuple()))
                probs.append(torch.sigmoid(prediction.logits))
                ious.append(prediction.iou)
            merged = torch.stack(probs).max(dim=0).values.clamp(1e-6, 1 - 1e-6)
            return Prediction(logits=torch.logit(merged), iou=float(np.mean(ious)))
        clicks = [p for p in obj.points if p.frame == frame]
        points = geometry.points_to_model(np.array([[p.x, p.y] for p in clicks]))
        labels = np.array([1 if p.positive else 0 for p in clicks])
        return self._box_for_clicks(features, points, labels)

    # -- the sweeps -----------------------------------------------------------------------------
    def run(self, objects: list[ObjectPrompts]) -> list[ObjectTrack]:
        """Segment every object on every frame where it is found; returns one track per object."""
        store = FeatureStore(self.frames01, self.backbone, frames_between_prompts(objects), self.stats)
        tracks = [ObjectTrack(o.label, o.name, o.prompted_frames()) for o in objects]
        pinned: list[dict[int, tuple[FramePrediction, MemoryEntry]]] = []
        for obj in objects:
            per_frame = {}
            for frame in obj.prompted_frames():
                features = store.get(frame)
                prediction = self._pinned_prediction(obj, frame, features)
                probability = torch.sigmoid(prediction.logits)
                entry = MemoryEntry(
                    frame=frame,
                    key=frame_key(features, self.settings.key_grid),
                    prototype=mask_prototype(features, probability),
                    probability=probability,
                    confidence=prediction.iou,
                    area=float((probability > 0.5).sum()),
                    pinned=True,
                )
                result = FramePrediction(frame, quantise_probability(probability), prediction.iou, 1.0, prediction.iou, prompted=True)
                per_frame[frame] = (result, entry)
            pinned.append(per_frame)
        bar = tqdm(desc="propagating", unit="slice", disable=not self.progress, leave=False)
        try:
            for direction in (1, -1):
                self._sweep(direction, objects, pinned, tracks, store, bar)
        finally:
            bar.close()
        for track, per_frame in zip(tracks, pinned):
            for frame, (result, _) in per_frame.items():
                track.frames[frame] = result
        return tracks

    def _sweep(self, direction, objects, pinned, tracks, store, bar) -> None:
        n = len(self.frames01)
        settings = self.settings
        starts = [min(p) if direction == 1 else max(p) for p in pinned]
        memories: list[Memory | None] = [None] * len(objects)
        held: list[list[FramePrediction]] = [[] for _ in objects]
        max_area = [0.0] * len(objects)
        active = [False] * len(objects)
        frame = min(starts) if direction == 1 else max(starts)
        while 0 <= frame < n:
            for i in range(len(objects)):
                if frame in pinned[i]:
                    if memories[i] is None:
                        memories[i] = self.memory_factory()
                        for _, entry in pinned[i].values():
                            memories[i].add(entry)
                            max_area[i] = max(max_area[i], entry.area)
                    else:
                        memories[i].add(pinned[i][frame][1])
                    active[i] = True
                    held[i] = []
            todo = [i for i in range(len(objects)) if active[i] and frame not in pinned[i]]
            if not any(active):
                if not any(f * direction > frame * direction for p in pinned for f in p):
                    break
                frame += direction
                continue
            if todo:
                features = store.get(frame)
                bar.update(1)
                key = frame_key(features, settings.key_grid)
                for i in todo:
                    memory = memories[i]
                    readout = memory.readout(key)
                    prediction = self._decode_from_prior(features, readout.prior)
                    if prediction is None:
                        active[i] = False
                        held[i] = []
                        continue
                    probability = torch.sigmoid(prediction.logits)
                    area = float((probability > 0.5).sum())
                    prototype = mask_prototype(features, probability)
                    presence = float((memory.reference_prototypes() @ prototype).max()) if area > 0 else 0.0
                    presence = max(0.0, presence)
                    confidence = prediction.iou * presence
                    absent = (
                        area == 0
                        or presence < settings.stop_presence
                        or prediction.iou < settings.stop_iou
                        or area < settings.stop_area_fraction * max_area[i]
                    )
                    result = FramePrediction(frame, quantise_probability(probability), prediction.iou, presence, confidence)
                    self.stats.trace.append((objects[i].label, frame, prediction.iou, presence, area, absent))
                    if absent:
                        held[i].append(result)
                        if len(held[i]) >= settings.patience:
                            active[i] = False
                            held[i] = []
                        continue
                    for earlier in held[i] + [result]:
                        _keep_better(tracks[i], earlier)
                    held[i] = []
                    entry = MemoryEntry(frame, key, prototype, probability, confidence, area)
                    if memory.add(entry):
                        max_area[i] = max(max_area[i], area)
            frame += direction


def _keep_better(track: ObjectTrack, result: FramePrediction) -> None:
    current = track.frames.get(result.frame)
    if current is None or result.confidence > current.confidence:
        track.frames[result.frame] = result


def quantise_probability(probability: torch.Tensor) -> torch.Tensor:
    """A [0, 1] map as uint8 (value x 255, rounded): how FramePrediction stores probabilities."""
    return (probability.clamp(0, 1) * 255).round().to(torch.uint8)


def _values_at(logits: torch.Tensor, points: np.ndarray) -> np.ndarray:
    if len(points) == 0:
        return np.zeros(0)
    size = logits.shape[-1]
    idx = np.clip(np.round(points).astype(int), 0, size - 1)
    return logits[idx[:, 1], idx[:, 0]].numpy()
