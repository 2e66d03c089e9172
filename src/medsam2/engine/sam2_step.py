"""Tracking objects through a volume with SAM 2's memory attention, reading memory chosen by a rule.

medsam2 runs its own session over the frames (typed records, no state dict) and uses the ``sam2``
model's modules: the image encoder, memory attention, mask decoder and memory encoder. What it
decides is which past frames the memory attention reads:

- ``fifo``: SAM 2's own rule: every prompted frame plus the six frames just before (and object
  pointers of up to 15 frames before). With one box, this reproduces ``SAM2VideoPredictor`` run the
  way MedSAM2 runs volumes: the prompt, a forward pass, a fresh state with the same prompt, a
  reverse pass, the union of both (tested for equality).
- ``confidence``: the prompted frames plus the entries that a :class:`ConfidenceMemoryBank` holds
  (predictions admitted by confidence = predicted IoU x object score, redundant ones evicted), the
  six with the highest readout weight for the current frame (similarity of image features x
  confidence), each with its temporal position code (its distance, capped at six frames).
- ``none``: the prompted frames plus the previous frame.

Each direction is its own pass that starts from the prompts alone.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medsam2.backbones.base import Backbone, FrameFeatures
from medsam2.backbones.sam2 import FlatFeatures, Sam2Backbone, point_inputs
from medsam2.engine.memory import BankSettings, ConfidenceMemoryBank, MemoryEntry
from medsam2.engine.memory_kinds import DEFAULT_MEMORY, check_memory_kind
from medsam2.engine.sam2_memory import (
    BankSelection,
    FifoSelection,
    MemoryRead,
    ReadLog,
    Sam2Memory,
    conditioned_features,
)
from medsam2.engine.sweep import Advance, Tracker
from medsam2.engine.tracks import (
    FeatureStore,
    FramePrediction,
    ObjectTrack,
    PropagationStats,
    frame_key,
    mask_prototype,
    quantise_probability,
)
from medsam2.errors import PromptError, UsageError
from medsam2.prompts.parse import ObjectPrompts


@dataclass(frozen=True)
class Sam2TrackingSettings:
    """Settings of the confidence rule (fifo and none have none).

    Attributes:
        bank: the confidence memory bank (capacity 16: SAM 2 reads the six best of them).
        patience: with the confidence rule, an object's pass ends after this many consecutive
            frames where the model says it is absent (object score <= 0) and no prompt lies ahead.
            None visits every frame (fifo and none always do, as SAM 2 does).
    """

    bank: BankSettings = BankSettings(capacity=16)
    patience: int | None = 3


@dataclass
class FramePrompt:
    """One object's prompt on one frame, in model-input coordinates."""

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    mask: torch.Tensor | None = None  # (1, 1, S, S) float 0/1 at the input size


@dataclass
class StepOutput:
    """One object on one frame."""

    low_res_logits: torch.Tensor  # (1, 1, S/4, S/4) float32 after SAM 2's hole filling (output)
    memory_masks: torch.Tensor  # (1, 1, S, S) logits that the memory encoder reads
    pointer: torch.Tensor  # (1, C)
    object_score_logits: torch.Tensor  # (1, 1): > 0 where the model sees the object
    iou: float
    from_prompt: bool  # memory encoded as SAM 2 encodes prompted frames (binarised)

    @property
    def object_score(self) -> float:
        return float(self.object_score_logits.float().item())

    @property
    def presence(self) -> float:
        return float(torch.sigmoid(self.object_score_logits.float()).item())

    @property
    def confidence(self) -> float:
        return min(max(self.iou, 0.0), 1.0) * self.presence


def _fill_holes(model, logits: torch.Tensor) -> torch.Tensor:
    """SAM 2's own hole filling (a CUDA extension; SAM 2 skips it where the extension is missing)."""
    area = getattr(model, "fill_hole_area", 0)
    if area <= 0:
        return logits
    from sam2.utils.misc import fill_holes_in_mask_scores

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fill_holes_in_mask_scores(logits, area)


class Sam2Step:
    """SAM 2's :class:`~medsam2.engine.sweep.Step`: memory attention over the frames a memory rule
    selects -> SAM 2's heads -> its memory encoder.

    Arguments:
        backbone: a :class:`Sam2Backbone`, or a wrapper around one (features are encoded through it).
        memory: "confidence", "fifo" or "none".
        settings: the confidence rule's settings.

    ``reads`` logs which frames each decoded frame read (diagnostics and tests).
    """

    def __init__(self, backbone: Backbone, memory: str = DEFAULT_MEMORY, settings: Sam2TrackingSettings | None = None) -> None:
        check_memory_kind(memory)
        sam2 = backbone
        while hasattr(sam2, "inner"):  # wrappers (cached, seeded) around the sam2 backbone
            sam2 = sam2.inner
        if not isinstance(sam2, Sam2Backbone):
            raise UsageError("SAM 2 tracking needs the sam2 backbone")
        self.backbone = backbone
        self.sam2 = sam2
        self.model = sam2.model
        self.memory = memory
        self.settings = settings or Sam2TrackingSettings()
        self.stats = PropagationStats()
        self.reads: list[ReadLog] = []
        self._position: torch.Tensor | None = None
        self._shape = (0, 0, 0)
        self._prompts: list[dict[int, FramePrompt]] = []
        self._first: list[dict[int, tuple[StepOutput, Sam2Memory, MemoryEntry | None]]] = []
        self._selections: dict[int, FifoSelection | BankSelection] = {}
        self._absent: dict[int, int] = {}
        self._labels: list[int] = []

    # -- prompts ----------------------------------------------------------------------------
    def _frame_prompts(self, obj: ObjectPrompts) -> dict[int, FramePrompt]:
        """Each prompted frame's prompt in model coordinates (one box per frame, as SAM 2 takes)."""
        prompts: dict[int, FramePrompt] = {}
        rows, cols = self._shape[1], self._shape[2]
        geometry = self.sam2.frame_geometry(rows, cols)
        size = self.sam2.input_size
        for frame in obj.prompted_frames():
            masks = [m.mask for m in obj.masks if m.frame == frame]
            boxes = [b for b in obj.boxes if b.frame == frame]
            clicks = [p for p in obj.points if p.frame == frame]
            if masks:
                union = torch.as_tensor(np.logical_or.reduce(masks).astype(np.float32))[None, None]
                resized = F.interpolate(union, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
                prompts[frame] = FramePrompt(mask=(resized >= 0.5).float().to(self.sam2.device))
                continue
            if len(boxes) > 1:
                raise PromptError(
                    f"label {obj.label}: {len(boxes)} boxes on slice {frame}; the sam2 backbone takes one box per object "
                    "and slice (give the parts as separate labels, or a mask)"
                )
            box = geometry.box_to_model(boxes[0].as_tuple()) if boxes else None
            points = geometry.points_to_model(np.array([[p.x, p.y] for p in clicks])) if clicks else None
            labels = np.array([1 if p.positive else 0 for p in clicks]) if clicks else None
            prompts[frame] = FramePrompt(box=box, points=points, labels=labels)
        return prompts

    # -- one frame ----------------------------------------------------------------------------
    def _step(self, flat: FlatFeatures, read: MemoryRead | None, prompt: FramePrompt | None) -> StepOutput:
        model = self.model
        high_res = flat.high_res()
        if prompt is not None and prompt.mask is not None and model.use_mask_input_as_output_without_sam:
            h, w = flat.sizes[-1]
            pix = flat.vision[-1].permute(1, 2, 0).view(1, model.hidden_dim, h, w)
            outputs = model._use_mask_as_output(pix, high_res, prompt.mask)
            points = None
        else:
            points = point_inputs(prompt.box, prompt.points, prompt.labels, self.sam2.device) if prompt is not None else None
            if read is None:
                pix = self.sam2.no_memory_features(flat)
            else:
                pix = conditioned_features(model, flat, read, self._shape[0], self._position)
            outputs = model._forward_sam_heads(
                backbone_features=pix,
                point_inputs=points,
                mask_inputs=prompt.mask if prompt is not None else None,
                high_res_features=high_res,
                multimask_output=model._use_multimask(read is None, points),
            )
        _, _, ious, low_res, high_res_masks, pointer, object_score = outputs
        filled = _fill_holes(model, low_res)
        prompted = prompt is not None
        if prompted:
            # SAM 2 encodes a prompted frame's memory from its (filled) low-resolution output
            memory_masks = F.interpolate(filled, size=(model.image_size, model.image_size), mode="bilinear", align_corners=False)
        else:
            memory_masks = high_res_masks
        # SAM 2 keeps the mask with the highest predicted IoU when it outputs several
        return StepOutput(filled.float(), memory_masks, pointer, object_score, float(ious.float().max()), prompted)

    def _remember(self, flat: FlatFeatures, frame: int, step: StepOutput) -> Sam2Memory:
        features, positions = self.model._encode_new_memory(
            current_vision_feats=flat.vision,
            feat_sizes=flat.sizes,
            pred_masks_high_res=step.memory_masks,
            object_score_logits=step.object_score_logits,
            is_mask_from_pts=step.from_prompt,
        )
        if self._position is None:
            self._position = positions[-1][0:1].clone()
        stored = features.to(torch.bfloat16).to(self.sam2.storage_device, non_blocking=True)
        return Sam2Memory(frame, stored, step.pointer, step.from_prompt)

    def _selection(self):
        if self.memory == "fifo":
            return FifoSelection(self.model)
        if self.memory == "none":
            return FifoSelection(self.model, recent=1)
        return BankSelection(self.model, ConfidenceMemoryBank(self.settings.bank))

    def _entry(self, features, frame: int, step: StepOutput, key: torch.Tensor, pinned: bool) -> MemoryEntry:
        probability = torch.sigmoid(step.low_res_logits[0, 0].float().cpu())
        return MemoryEntry(
            frame=frame,
            key=key,
            prototype=mask_prototype(features, probability),
            probability=probability,
            confidence=1.0 if pinned else step.confidence,
            area=float((probability > 0.5).sum()),
            pinned=pinned,
        )

    # -- the sweep's step ------------------------------------------------------------------------
    @torch.inference_mode()
    def prepare(self, objects: list[ObjectPrompts], store: FeatureStore) -> Iterator[tuple[int, int]]:
        self._shape = tuple(int(v) for v in store.frames01.shape[:3])
        self._labels = [o.label for o in objects]
        self._prompts = [self._frame_prompts(o) for o in objects]
        self._first = []
        start, encoding = time.perf_counter(), self.stats.encode_seconds
        with self.sam2.autocast():
            for obj_prompts in self._prompts:
                per_frame = {}
                for frame, prompt in obj_prompts.items():
                    features = store.get(frame)
                    flat = self.sam2.flatten(features)
                    step = self._step(flat, None, prompt)
                    entry = None
                    if self.memory == "confidence":  # only the bank reads keys and prototypes
                        entry = self._entry(features, frame, step, frame_key(features, self.settings.bank.key_grid), True)
                    per_frame[frame] = (step, self._remember(flat, frame, step), entry)
                self._first.append(per_frame)
        self.stats.decode_seconds += time.perf_counter() - start - (self.stats.encode_seconds - encoding)
        for obj, per_frame in zip(objects, self._first):
            for frame in per_frame:
                yield obj.label, frame

    def begin(self, index: int, direction: int) -> None:
        """SAM 2 reads every prompted frame from the start (its conditioning frames)."""
        selection = self._selection()
        for _, memory, entry in self._first[index].values():
            selection.add(memory, entry)
        self._selections[index] = selection
        self._absent[index] = 0

    def prompted(self, index: int, frame: int) -> None:
        """Nothing to add: the pass began with every prompted frame in memory."""

    @torch.inference_mode()
    def frame_context(self, features: FrameFeatures) -> tuple[FlatFeatures, torch.Tensor | None]:
        with self.sam2.autocast():
            flat = self.sam2.flatten(features)
            key = frame_key(features, self.settings.bank.key_grid) if self.memory == "confidence" else None
        return flat, key

    @torch.inference_mode()
    def advance(self, index: int, frame: int, features: FrameFeatures, context: object, direction: int) -> Advance:
        """Decode from memory; with the confidence rule the object ends after ``patience`` frames
        in a row where SAM 2 says it is absent and no prompt lies ahead (fifo and none visit every frame)."""
        flat, key = context
        begin = time.perf_counter()
        selection = self._selections[index]
        with self.sam2.autocast():
            read = selection.select(frame, direction == -1, self._shape[0], key)
            spatial = tuple(m.frame for _, m in read.spatial)
            self.reads.append(ReadLog(self._labels[index], direction, frame, spatial, tuple(m.frame for _, m in read.pointers)))
            step = self._step(flat, read, None)
            self.stats.decode_calls += 1
            memory = self._remember(flat, frame, step)
            entry = self._entry(features, frame, step, key, False) if self.memory == "confidence" else None
            selection.add(memory, entry)
            result = self._prediction(frame, step, prompted=False)
        self.stats.decode_seconds += time.perf_counter() - begin
        self._absent[index] = self._absent[index] + 1 if step.object_score <= 0 else 0
        patience = self.settings.patience if self.memory == "confidence" else None
        ahead = any((f - frame) * direction > 0 for f in self._prompts[index])
        return Advance(commit=[result], ended=patience is not None and self._absent[index] >= patience and not ahead)

    def merge(self, track: ObjectTrack, result: FramePrediction) -> None:
        _merge(track, result)

    def finish(self, index: int, track: ObjectTrack) -> None:
        for frame, (step, _, _) in self._first[index].items():
            _merge(track, self._prediction(frame, step, prompted=True))

    def _prediction(self, frame: int, step: StepOutput, prompted: bool) -> FramePrediction:
        logits = step.low_res_logits[0, 0].float().cpu()
        probability = quantise_probability(torch.sigmoid(logits))
        return FramePrediction(frame, probability, step.iou, step.presence, step.confidence, prompted=prompted, logits=logits)


def _merge(track: ObjectTrack, result: FramePrediction) -> None:
    """The union of two passes over a frame: the larger logit wins at each pixel."""
    current = track.frames.get(result.frame)
    if current is None:
        track.frames[result.frame] = result
        return
    best = result if result.confidence > current.confidence else current
    logits = torch.maximum(current.logits, result.logits)
    probability = quantise_probability(torch.sigmoid(logits))
    prompted = current.prompted or result.prompted
    track.frames[result.frame] = FramePrediction(
        result.frame, probability, best.iou, best.presence, best.confidence, prompted=prompted, logits=logits
    )


class Sam2Tracker(Tracker):
    """The sweep (:class:`~medsam2.engine.sweep.Tracker`) with a :class:`Sam2Step`.

    Arguments:
        frames01: n frames, (H, W) or (H, W, 3) values in [0, 1] (arrays or WindowedFrames).
        backbone: a :class:`Sam2Backbone`, or a wrapper around one.
        memory: "confidence", "fifo" or "none".
        settings: the confidence rule's settings.
        progress: show a tqdm bar.
    """

    def __init__(
        self,
        frames01: Sequence[np.ndarray],
        backbone: Backbone,
        memory: str = DEFAULT_MEMORY,
        settings: Sam2TrackingSettings | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(Sam2Step(backbone, memory, settings), frames01, progress)

    @property
    def reads(self) -> list[ReadLog]:
        """Which frames each decoded frame read."""
        return self.step.reads
