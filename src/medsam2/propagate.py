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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from medsam2.backbones.base import Backbone, FrameFeatures, Prediction
from medsam2.errors import PromptError
from medsam2.memory import BankSettings, Memory, MemoryEntry
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
        bank: the confidence memory bank's rule (and the frame keys' grid).
    """

    box_margin: float = 4.0
    component_fraction: float = 0.1
    stop_presence: float = 0.5
    stop_iou: float = 0.6
    stop_area_fraction: float = 0.02
    patience: int = 2
    bank: BankSettings = BankSettings()


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
class PropagationStats:
    frames_total: int = 0
    frames_encoded: int = 0
    encode_calls: int = 0
    decode_calls: int = 0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    #: frames whose features were asked for (encoded, or served by a cache)
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
        self.stats.encode_calls += 1
        self.stats.encoded_frames.add(frame)
        self.stats.frames_encoded = len(self.stats.encoded_frames)
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

    def decode_clicks(
        self,
        features: FrameFeatures,
        points: np.ndarray,
        labels: np.ndarray,
        present: torch.Tensor | None = None,
    ) -> Prediction:
        """A mask from clicks, for box-only weights.

        Where the object is absent (``present`` None or empty): boxes of several sizes and shapes
        around the foreground clicks are decoded, and the mask with the best predicted IoU x share
        of foreground clicks inside x share of background clicks outside wins.

        Where it is there (``present``, a (S, S) bool mask in model space), the clicks edit it:
        a foreground click outside it adds the mask decoded from its box grown to take in the click
        when that mask holds the click and keeps most of the object (Dice >= 0.7 with it), else a
        disc reaching from the click to the object; a background click inside it removes a disc
        around the click as wide as its distance to the background (a thin wrong rim goes, the
        core of a wrong region goes, a click deep inside takes a bigger bite).

        Arguments:
            points: (N, 2) clicks (x, y) in model coordinates; labels: (N,) 1 foreground, 0 background.
        """
        positive = points[labels == 1]
        negative = points[labels == 0]
        limit = self.backbone.input_size
        if present is not None and bool(present.any()):
            return self._edit_with_clicks(features, present.numpy().copy(), positive, negative)
        if not len(positive):
            raise PromptError("background clicks alone on a slice where the object is absent give no mask; add a foreground click")
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

    def _edit_with_clicks(self, features: FrameFeatures, mask: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> Prediction:
        """The edits of :meth:`decode_clicks` on a (S, S) bool mask; the result as a pinned mask's logits."""
        size = mask.shape[0]
        rows, cols = np.mgrid[0:size, 0:size]
        limit = self.backbone.input_size
        for x, y in positive:
            col, row = int(np.clip(round(x), 0, size - 1)), int(np.clip(round(y), 0, size - 1))
            if mask[row, col]:
                continue
            grown = box_of_mask(mask, 0.0, limit)
            grown[:2] = np.minimum(grown[:2], (x - 2, y - 2))
            grown[2:] = np.maximum(grown[2:], (x + 2, y + 2))
            candidate = (self._decode(features, box=np.clip(grown, 0, limit)).logits > 0).numpy()
            overlap = 2.0 * float((candidate & mask).sum()) / float(candidate.sum() + mask.sum())
            if candidate[row, col] and overlap >= 0.7:
                mask |= candidate
            else:
                reach = float(ndimage.distance_transform_edt(~mask)[row, col]) + 1.0
                mask |= (rows - row) ** 2 + (cols - col) ** 2 <= reach**2
        for x, y in negative:
            col, row = int(np.clip(round(x), 0, size - 1)), int(np.clip(round(y), 0, size - 1))
            if not mask[row, col]:
                continue
            depth = float(ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1][row, col]) + 1.0
            mask &= ~((rows - row) ** 2 + (cols - col) ** 2 <= depth**2)
        probability = torch.from_numpy(mask.astype(np.float32)).clamp(1e-4, 1 - 1e-4)
        return Prediction(logits=torch.logit(probability), iou=1.0)

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
        return self.decode_clicks(features, points, labels)

    def pin(self, obj: ObjectPrompts, frame: int, features: FrameFeatures) -> tuple[FramePrediction, MemoryEntry]:
        """The answer on a prompted frame and its pinned memory entry."""
        prediction = self._pinned_prediction(obj, frame, features)
        probability = torch.sigmoid(prediction.logits)
        entry = MemoryEntry(
            frame=frame,
            key=frame_key(features, self.settings.bank.key_grid),
            prototype=mask_prototype(features, probability),
            probability=probability,
            confidence=prediction.iou,
            area=float((probability > 0.5).sum()),
            pinned=True,
        )
        result = FramePrediction(frame, quantise_probability(probability), prediction.iou, 1.0, prediction.iou, prompted=True)
        return result, entry

    def _step(self, frame: int, features: FrameFeatures, key: torch.Tensor, memory: Memory, max_area: float) -> TrackStep | None:
        """Decode one object on an unprompted frame from its memory; None when the memory's prior is empty."""
        settings = self.settings
        readout = memory.readout(key)
        prediction = self._decode_from_prior(features, readout.prior)
        if prediction is None:
            return None
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
            or area < settings.stop_area_fraction * max_area
        )
        result = FramePrediction(frame, quantise_probability(probability), prediction.iou, presence, confidence)
        return TrackStep(result, MemoryEntry(frame, key, prototype, probability, confidence, area), absent)

    # -- the sweeps -----------------------------------------------------------------------------
    def run(self, objects: list[ObjectPrompts]) -> list[ObjectTrack]:
        """Segment every object on every frame where it is found; returns one track per object."""
        for _ in self.iter_run(objects):
            pass
        return self.tracks

    def iter_run(self, objects: list[ObjectPrompts]) -> Iterator[tuple[int, int]]:
        """:meth:`run` one decoded frame at a time: yields (label, frame) after each frame an object
        was decoded on; afterwards ``tracks`` holds one track per object and ``pinned`` each
        object's pinned memory entries (frame -> entry), which a correction reuses."""
        store = FeatureStore(self.frames01, self.backbone, frames_between_prompts(objects), self.stats)
        tracks = [ObjectTrack(o.label, o.name, o.prompted_frames()) for o in objects]
        pinned: list[dict[int, tuple[FramePrediction, MemoryEntry]]] = []
        for obj in objects:
            per_frame = {}
            for frame in obj.prompted_frames():
                per_frame[frame] = self.pin(obj, frame, store.get(frame))
                yield obj.label, frame
            pinned.append(per_frame)
        bar = tqdm(desc="propagating", unit="slice", disable=not self.progress, leave=False)
        try:
            for direction in (1, -1):
                yield from self._sweep(direction, objects, pinned, tracks, store, bar)
        finally:
            bar.close()
        for track, per_frame in zip(tracks, pinned):
            for frame, (result, _) in per_frame.items():
                track.frames[frame] = result
        self.tracks = tracks
        self.pinned = [{frame: entry for frame, (_, entry) in per_frame.items()} for per_frame in pinned]

    def _sweep(self, direction, objects, pinned, tracks, store, bar) -> Iterator[tuple[int, int]]:
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
                key = frame_key(features, settings.bank.key_grid)
                for i in todo:
                    memory = memories[i]
                    step = self._step(frame, features, key, memory, max_area[i])
                    yield objects[i].label, frame
                    if step is None:
                        active[i] = False
                        held[i] = []
                        continue
                    if step.absent:
                        held[i].append(step.result)
                        if len(held[i]) >= settings.patience:
                            active[i] = False
                            held[i] = []
                        continue
                    for earlier in held[i] + [step.result]:
                        _keep_better(tracks[i], earlier)
                    held[i] = []
                    if memory.add(step.entry):
                        max_area[i] = max(max_area[i], step.entry.area)
            frame += direction

    def repropagate(
        self,
        pinned: dict[int, MemoryEntry],
        start: int,
        old: dict[int, FramePrediction],
        agree_dice: float = 0.97,
        agree_run: int = 2,
    ) -> Iterator[int]:
        """Propagate one object outward from a corrected frame, only as far as it changes the answer.

        In each direction the walk stops at the object's next prompted frame, where the structure
        ends (the stop rule; the old answers from there to the next prompted frame are dropped), or
        after ``agree_run`` frames in a row whose new mask has Dice >= ``agree_dice`` with the old one.
        It goes past the old ends when the structure goes on. Yields each frame as it is decoded;
        the outcome is in ``self.repropagation`` afterwards.

        Arguments:
            pinned: the object's pinned entries (frame -> entry), the corrected frame's included.
            start: the corrected frame.
            old: the object's answers before the correction (frame -> prediction).
        """
        outcome = Repropagation()
        store = FeatureStore(self.frames01, self.backbone, set(), self.stats)
        n = len(self.frames01)
        for direction in (1, -1):
            memory = self.memory_factory()
            for entry in pinned.values():
                memory.add(entry)
            max_area = max(entry.area for entry in pinned.values())
            held: list[FramePrediction] = []
            agreed = 0
            ended_at: int | None = None
            frame = start + direction
            while 0 <= frame < n and frame not in pinned:
                features = store.get(frame)
                key = frame_key(features, self.settings.bank.key_grid)
                step = self._step(frame, features, key, memory, max_area)
                outcome.decoded.append(frame)
                yield frame
                if step is None:
                    ended_at = held[0].frame if held else frame
                    break
                if step.absent:
                    held.append(step.result)
                    if len(held) >= self.settings.patience:
                        ended_at = held[0].frame
                        break
                    frame += direction
                    continue
                for result in held + [step.result]:
                    outcome.frames[result.frame] = result
                held = []
                if memory.add(step.entry):
                    max_area = max(max_area, step.entry.area)
                before = old.get(frame)
                agreed = agreed + 1 if before is not None and _mask_dice(before, step.result) >= agree_dice else 0
                if agreed >= agree_run:
                    break
                frame += direction
            if ended_at is not None:
                limit = next((f for f in sorted(pinned, key=lambda f: f * direction) if (f - ended_at) * direction > 0), None)
                outcome.removed |= {
                    f for f in old if (f - ended_at) * direction >= 0 and (limit is None or (limit - f) * direction > 0)
                }
                for f in list(outcome.frames):
                    if (f - ended_at) * direction >= 0:
                        del outcome.frames[f]
        self.repropagation = outcome


def _mask_dice(a: FramePrediction, b: FramePrediction) -> float:
    """Dice of two answers' masks (probability > 0.5) in model space; 1 when both are empty."""
    mask_a, mask_b = a.probability > 127, b.probability > 127
    total = int(mask_a.sum()) + int(mask_b.sum())
    return 1.0 if total == 0 else 2.0 * int((mask_a & mask_b).sum()) / total


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
