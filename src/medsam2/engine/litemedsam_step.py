"""LiteMedSAM's step of the sweep (:mod:`medsam2.engine.sweep`): memory readout -> boxes -> decode,
and a correction's local re-propagation.

These weights answer boxes only, so the memory's readout becomes boxes: the similarity-weighted
prior of the remembered masks gives one box per connected component (and the union box, when there
are several; the decoder's predicted IoU picks between them). An object ends in a direction after
a few consecutive frames that look absent (presence, predicted IoU or area too low); the two
passes over a frame keep the more confident answer. Measured choices are in DESIGN.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage

from medsam2.backbones.base import Backbone, FrameFeatures, Prediction
from medsam2.engine.litemedsam_records import (
    DirectionPass,
    Repropagation,
    TrackStep,
    box_answer_with_previous,
    dice_of,
    mask_dice,
    values_at,
)
from medsam2.engine.litemedsam_settings import PropagationSettings
from medsam2.engine.memory import Memory, MemoryEntry
from medsam2.engine.sweep import Advance
from medsam2.engine.tracks import (
    FeatureStore,
    FramePrediction,
    ObjectTrack,
    PropagationStats,
    box_of_mask,
    frame_key,
    intensity_histogram,
    mask_prototype,
    quantise_probability,
)
from medsam2.errors import PromptError
from medsam2.prompts.parse import ObjectPrompts


class LiteMedSAMStep:
    """LiteMedSAM's :class:`~medsam2.engine.sweep.Step`.

    Arguments:
        backbone: the LiteMedSAM backbone (or a wrapper around it).
        memory_factory: makes a fresh memory for each object and pass.
        settings: engine settings.

    After a run, ``pinned`` holds each object's pinned memory entries (frame -> entry), which a
    correction reuses.
    """

    def __init__(self, backbone: Backbone, memory_factory: Callable[[], Memory], settings: PropagationSettings | None = None) -> None:
        self.backbone = backbone
        self.memory_factory = memory_factory
        self.settings = settings or PropagationSettings()
        self.stats = PropagationStats()
        self.pinned: list[dict[int, MemoryEntry]] = []
        self._answers: list[dict[int, FramePrediction]] = []
        self._passes: dict[int, DirectionPass] = {}

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
                inside = values_at(prediction.logits, positive) > 0
                outside = values_at(prediction.logits, negative) <= 0 if len(negative) else np.ones(1, bool)
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
            if candidate[row, col] and dice_of(candidate, mask) >= 0.7:
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

    def pin(
        self, obj: ObjectPrompts, frame: int, features: FrameFeatures, previous: torch.Tensor | None = None,
    ) -> tuple[FramePrediction, MemoryEntry]:
        """The answer on a prompted frame and its pinned memory entry.

        ``previous``: a correction's frame, the object's answer there before it (or, where it had
        none, on the adjacent frames) ((S, S) bool, model space): a box correction keeps it
        (inside the box) where it spans the box better than the box's own mask does, and adds it
        where the two agree (:func:`box_answer_with_previous`)."""
        prediction = self._pinned_prediction(obj, frame, features)
        boxes = [b for b in obj.boxes if b.frame == frame]
        if previous is not None and len(boxes) == 1 and not any(m.frame == frame for m in obj.masks):
            box = features.geometry.box_to_model(boxes[0].as_tuple())
            prediction = box_answer_with_previous(prediction, previous, box, self.backbone.input_size)
        probability = torch.sigmoid(prediction.logits)
        entry = MemoryEntry(
            frame=frame,
            key=frame_key(features, self.settings.bank.key_grid),
            prototype=mask_prototype(features, probability),
            probability=probability,
            confidence=prediction.iou,
            area=float((probability > 0.5).sum()),
            pinned=True,
            intensity=intensity_histogram(features, probability) if self.settings.stop_intensity_overlap > 0 else None,
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
            or self._intensity_moved(features, probability, memory)
        )
        result = FramePrediction(frame, quantise_probability(probability), prediction.iou, presence, confidence)
        return TrackStep(result, MemoryEntry(frame, key, prototype, probability, confidence, area), absent)

    def _intensity_moved(self, features: FrameFeatures, probability: torch.Tensor, memory: Memory) -> bool:
        """The intensity stop rule: the mask's histogram overlaps no prompted frame's by
        ``stop_intensity_overlap`` (False when the rule is off or there is nothing to compare)."""
        threshold = self.settings.stop_intensity_overlap
        if threshold <= 0:
            return False
        references = [e.intensity for e in memory.entries if e.pinned and e.intensity is not None]
        histogram = intensity_histogram(features, probability)
        if not references or histogram is None:
            return False
        return max(float(torch.minimum(histogram, r).sum()) for r in references) < threshold

    # -- the sweep's step ------------------------------------------------------------------------
    def prepare(self, objects: list[ObjectPrompts], store: FeatureStore) -> Iterator[tuple[int, int]]:
        self.pinned, self._answers = [], []
        for obj in objects:
            entries, answers = {}, {}
            for frame in obj.prompted_frames():
                answers[frame], entries[frame] = self.pin(obj, frame, store.get(frame))
                yield obj.label, frame
            self.pinned.append(entries)
            self._answers.append(answers)

    def begin(self, index: int, direction: int) -> None:
        self._passes[index] = self._new_pass(self.pinned[index])

    def _new_pass(self, pinned: dict[int, MemoryEntry]) -> DirectionPass:
        """A pass whose memory holds the object's pinned entries."""
        memory = self.memory_factory()
        for entry in pinned.values():
            memory.add(entry)
        return DirectionPass(memory, max(entry.area for entry in pinned.values()))

    def prompted(self, index: int, frame: int) -> None:
        walk = self._passes[index]
        walk.memory.add(self.pinned[index][frame])
        walk.held = []

    def frame_context(self, features: FrameFeatures) -> torch.Tensor:
        return frame_key(features, self.settings.bank.key_grid)

    def advance(self, index: int, frame: int, features: FrameFeatures, context: object, direction: int) -> Advance:
        walk = self._passes[index]
        return walk.take(frame, self._step(frame, features, context, walk.memory, walk.max_area), self.settings.patience)

    def merge(self, track: ObjectTrack, result: FramePrediction) -> None:
        """The more confident of two passes' answers."""
        current = track.frames.get(result.frame)
        if current is None or result.confidence > current.confidence:
            track.frames[result.frame] = result

    def finish(self, index: int, track: ObjectTrack) -> None:
        track.frames.update(self._answers[index])

    def repropagate(
        self,
        frames01: Sequence[np.ndarray],
        pinned: dict[int, MemoryEntry],
        start: int,
        old: dict[int, FramePrediction],
        agree_dice: float = 0.97,
        agree_run: int = 2,
    ) -> Iterator[int]:
        """Propagate one object outward from a corrected frame: new evidence that removes nothing.

        In each direction the walk decodes frame after frame from the object's memory (its pinned
        frames, the corrected one included) and stops
        - where the structure ends by the stop rule: the old answers beyond are kept (they came
          from another anchor, which saw the structure there; only an erase removes);
        - after ``agree_run`` frames in a row whose new mask has Dice >= ``agree_dice`` with the old one;
        - where an old answer outweighs the new one (its predicted IoU x presence, both judged by the
          walk's memory, is higher): the old answer stays, and so do the old answers beyond it;
        - halfway to the object's next pinned frame: each frame between two anchors is answered
          from the nearer one (the old answers on the far half came from the other anchor);
        - where no pinned frame lies ahead, at the object's old end on that side: a correction
          never moves the object's end past the corrected frame (a correction beyond the end
          extends the object to it; to go further, the annotator corrects the next slice it misses).
        Where the walk ended before reaching the old answers on its way (a correction outside the
        object's range), the gap is bridged from the other side: a walk from the nearest old
        answer back toward the corrected frame fills the frames that neither answered. A frame
        stays empty only where every walk that reached it says the structure has ended there.

        Yields each frame as it is decoded; the outcome is in ``self.repropagation`` afterwards
        (its ``removed`` is always empty).

        Arguments:
            frames01: the frames (as :class:`~medsam2.engine.sweep.Tracker` takes them).
            pinned: the object's pinned entries (frame -> entry), the corrected frame's included.
            start: the corrected frame.
            old: the object's answers before the correction (frame -> prediction).
        """
        outcome = Repropagation()
        store = FeatureStore(frames01, self.backbone, set(), self.stats)
        n = len(frames01)
        for direction in (1, -1):
            anchor = next((f for f in sorted(pinned, key=lambda f: f * direction) if (f - start) * direction > 0), None)
            # frames nearer to the corrected frame than to the next anchor (a tie stays with the old answer)
            if anchor is None:
                reach = max((abs(f - start) for f in old if (f - start) * direction > 0), default=0)
            else:
                reach = (abs(anchor - start) - 1) // 2
            walk = self._new_pass(pinned)
            agreed, frame = 0, start + direction
            while 0 <= frame < n and abs(frame - start) <= reach and frame not in pinned:
                advance = self._walk_step(walk, store.get(frame), frame)
                outcome.decoded.append(frame)
                yield frame
                if advance.ended:
                    break
                outweighed = False
                for result in advance.commit:  # where an old answer outweighs the new one, it stays...
                    before = old.get(result.frame)
                    if before is None or result.confidence >= self._rejudged(before, store.get(result.frame), walk.memory):
                        outcome.frames[result.frame] = result
                    else:
                        outweighed = True
                if outweighed:  # ...and the walk ends: it would go on from an answer not taken
                    break
                if advance.commit:  # the object is there: does it agree with the old answer?
                    before = old.get(frame)
                    agreed = agreed + 1 if before is not None and mask_dice(before, advance.commit[-1]) >= agree_dice else 0
                    if agreed >= agree_run:
                        break
                frame += direction
            yield from self._bridge(store, pinned, start, direction, anchor, old, outcome)
        self.repropagation = outcome

    def _rejudged(self, before: FramePrediction, features: FrameFeatures, memory: Memory) -> float:
        """An old answer's confidence as the walk's memory judges it (the decoder's predicted IoU x
        presence against the memory's references), so that old and new answers are compared by the
        same judge: a walk whose memory holds the corrected slice finds any answer near it more
        present than the old walk's memory did."""
        if before.exact is not None:  # an opened label map's slice: as it was given
            return before.confidence
        probability = before.probability_float()
        if not bool((probability > 0.5).any()):
            return 0.0
        presence = max(0.0, float((memory.reference_prototypes() @ mask_prototype(features, probability)).max()))
        return before.iou * presence

    def _walk_step(self, walk: DirectionPass, features: FrameFeatures, frame: int) -> Advance:
        key = frame_key(features, self.settings.bank.key_grid)
        return walk.take(frame, self._step(frame, features, key, walk.memory, walk.max_area), self.settings.patience)

    def _bridge(
        self, store: FeatureStore, pinned: dict[int, MemoryEntry], start: int, direction: int, anchor: int | None,
        old: dict[int, FramePrediction], outcome: Repropagation,
    ) -> Iterator[int]:
        """Fill the frames between the corrected frame and the nearest old answer on one side that
        neither the walk nor the old track answered, walking back from that old answer."""
        stop = anchor if anchor is not None else (max(old, default=start) + 1 if direction > 0 else min(old, default=start) - 1)
        ahead = [f for f in old if (f - start) * direction > 0 and (stop - f) * direction > 0]
        if not ahead:
            return
        nearest = min(ahead, key=lambda f: abs(f - start))
        answered = set(old) | set(outcome.frames) | set(pinned)
        gap = [f for f in range(start + direction, nearest, direction) if f not in answered]
        if not gap:
            return
        walk = self._new_pass(pinned)
        frame = nearest - direction
        while frame != start and frame not in pinned:
            if frame in outcome.frames:  # met the walk from the corrected frame
                break
            advance = self._walk_step(walk, store.get(frame), frame)
            outcome.decoded.append(frame)
            yield frame
            if advance.ended:
                break
            for result in advance.commit:
                outcome.frames[result.frame] = result
            frame -= direction
