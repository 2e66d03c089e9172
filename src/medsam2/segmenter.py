"""The public entry point: :class:`Segmenter` segments prompted objects through a volume."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from medsam2 import __version__
from medsam2.backbones import Backbone, build_backbone
from medsam2.devices import resolve_device
from medsam2.errors import PromptError
from medsam2.io.volume import Volume
from medsam2.memory import make_memory
from medsam2.oneprompt import OnePromptSettings
from medsam2.preprocess import WindowedFrames, choose_window
from medsam2.prompts import ObjectPrompts, validate_prompts
from medsam2.propagate import ObjectTrack, PropagationSettings, Propagator
from medsam2.slicing import check_axis, from_frames, to_frames

if TYPE_CHECKING:
    from medsam2.oneprompt_run import OnePromptResult


@dataclass
class ObjectReport:
    """What was found for one object. Slice indices are along the slicing axis."""

    label: int
    name: str | None
    slices: list[int]
    first_slice: int | None
    last_slice: int | None
    voxels: int
    volume_ml: float
    mean_confidence: float | None
    min_confidence: float | None
    confidence_per_slice: dict[int, float]
    prompted_slices: list[int]


@dataclass
class Timings:
    """Seconds spent, and seconds per encoded slice."""

    preprocess_seconds: float = 0.0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    total_seconds: float = 0.0
    seconds_per_encoded_slice: float = 0.0
    read_seconds: float | None = None
    write_seconds: float | None = None


@dataclass
class SegmentationReport:
    """Everything a user needs to judge and reproduce a segmentation."""

    medsam2_version: str
    backbone: str
    checkpoint: str | None
    device: str
    runtime: str
    precision: str
    memory: str
    axis: str
    window: str
    input: str
    size_xyz: list[int]
    spacing_xyz: list[float]
    slices_total: int
    slices_encoded: int
    decode_calls: int
    objects: list[ObjectReport]
    timings: Timings
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        for obj in data["objects"]:
            obj["confidence_per_slice"] = {str(k): round(v, 4) for k, v in obj["confidence_per_slice"].items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclass
class SegmentationResult:
    """A label map in the input volume's voxel grid (z, y, x), and its report."""

    labels: np.ndarray
    report: SegmentationReport


class Segmenter:
    """Segments structures through a volume from prompts on one or a few slices.

    Arguments:
        backbone: "litemedsam" (the embedded default) or an already built :class:`Backbone`.
        device: "auto", "cpu", "cuda" or "mps" (ignored when a built backbone is given).
        checkpoint: weights file for the backbone (default: the weights the backbone ships with).
        memory: "confidence" (the confidence memory bank), "fifo" (SAM 2's rule) or "none"
            (previous slice only).
        settings: propagation settings; the measured defaults when None.
        runtime: how the image encoder runs: "auto" (OpenVINO on CPUs where installed, else
            PyTorch), "torch" or "openvino" (ignored when a built backbone is given).
        precision: "auto" (bf16 where the hardware has it natively, else fp32 on CPUs; bf16 or
            fp16 on CUDA), "fp32", "bf16" or "fp16".
        model_config: sam2 backbone only: the architecture (`medsam2 models`); None reads it from
            the checkpoint.
        offload: sam2 backbone only: keep past frames' memory in CPU memory.

    With the sam2 backbone, objects are tracked with SAM 2's memory attention
    (:mod:`medsam2.sam2_tracking`); ``memory`` picks which past frames it reads.
    """

    def __init__(
        self,
        backbone: str | Backbone = "litemedsam",
        device: str = "auto",
        checkpoint: str | Path | None = None,
        memory: str = "confidence",
        settings: PropagationSettings | None = None,
        runtime: str = "auto",
        precision: str = "auto",
        model_config: str | None = None,
        offload: bool = False,
    ) -> None:
        make_memory(memory)  # validates the name early
        if isinstance(backbone, str):
            self.device = resolve_device(device)
            self.backbone: Backbone = build_backbone(
                backbone,
                device=self.device,
                checkpoint=checkpoint,
                runtime=runtime,
                precision=precision,
                model_config=model_config,
                offload=offload,
            )
        else:
            self.backbone = backbone
            self.device = backbone.device
        self.memory = memory
        self.settings = settings or PropagationSettings()

    def segment(
        self,
        volume: Volume,
        prompts: list[ObjectPrompts] | ObjectPrompts,
        axis: str = "axial",
        window: str = "auto",
        progress: bool = False,
    ) -> SegmentationResult:
        """Segment every prompted object through the volume.

        Arguments:
            volume: the scan (see :func:`medsam2.load_volume`).
            prompts: one or more objects; coordinates are along/within ``axis`` frames.
            axis: "axial", "coronal" or "sagittal".
            window: intensity window (see :func:`medsam2.preprocess.normalize_intensities`).
            progress: show a progress bar.

        Returns:
            :class:`SegmentationResult` with labels (z, y, x) in the volume's grid.

        Raises:
            PromptError: prompts that do not fit the volume.
        """
        start = time.perf_counter()
        objects = [prompts] if isinstance(prompts, ObjectPrompts) else list(prompts)
        check_axis(axis)
        frames_raw = to_frames(volume.array, axis)
        n_frames, rows, cols = (int(s) for s in frames_raw.shape[:3])
        validate_prompts(objects, n_frames, rows, cols, axis)
        intensity = choose_window(frames_raw, window, volume.modality)
        notes = list(intensity.warnings)
        plan = getattr(self.backbone, "plan", None)
        if plan is not None:
            notes.extend(plan.notes)
        if "warning" in volume.metadata:
            notes.append(volume.metadata["warning"])
        preprocess_seconds = time.perf_counter() - start

        frames = WindowedFrames(frames_raw, intensity)
        if self.backbone.name == "sam2":
            from medsam2.sam2_tracking import Sam2Tracker

            propagator = Sam2Tracker(frames, self.backbone, self.memory, progress=progress)
        else:
            propagator = Propagator(frames, self.backbone, lambda: make_memory(self.memory), self.settings, progress)
        tracks = propagator.run(objects)
        labels_frames, confidences = self._label_map(tracks, (n_frames, rows, cols))
        labels = from_frames(labels_frames, axis)

        reports = []
        for track in tracks:
            present = np.flatnonzero((labels_frames == track.label).reshape(n_frames, -1).any(axis=1)).tolist()
            voxels = int((labels_frames == track.label).sum())
            per_slice = {f: confidences[track.label][f] for f in present}
            values = list(per_slice.values())
            reports.append(
                ObjectReport(
                    label=track.label,
                    name=track.name,
                    slices=present,
                    first_slice=present[0] if present else None,
                    last_slice=present[-1] if present else None,
                    voxels=voxels,
                    volume_ml=round(voxels * volume.voxel_volume_ml, 3),
                    mean_confidence=round(float(np.mean(values)), 4) if values else None,
                    min_confidence=round(float(np.min(values)), 4) if values else None,
                    confidence_per_slice=per_slice,
                    prompted_slices=track.prompted_frames,
                )
            )
            if not present:
                notes.append(f"label {track.label}: nothing was segmented")
        stats = propagator.stats
        total = time.perf_counter() - start
        timings = Timings(
            preprocess_seconds=round(preprocess_seconds, 3),
            encode_seconds=round(stats.encode_seconds, 3),
            decode_seconds=round(stats.decode_seconds, 3),
            total_seconds=round(total, 3),
            seconds_per_encoded_slice=round(stats.encode_seconds / max(stats.frames_encoded, 1), 4),
        )
        report = SegmentationReport(
            medsam2_version=__version__,
            backbone=self.backbone.name,
            checkpoint=str(getattr(self.backbone, "checkpoint", "")) or None,
            device=str(self.device),
            runtime=plan.runtime if plan is not None else "torch",
            precision=plan.precision if plan is not None else "fp32",
            memory=self.memory,
            axis=axis,
            window=intensity.name,
            input=volume.source,
            size_xyz=list(reversed(volume.shape)),
            spacing_xyz=[float(s) for s in volume.spacing],
            slices_total=n_frames,
            slices_encoded=stats.frames_encoded,
            decode_calls=stats.decode_calls,
            objects=reports,
            timings=timings,
            warnings=notes,
        )
        return SegmentationResult(labels=labels, report=report)

    def one_prompt(
        self,
        support: Volume | Sequence[Volume],
        support_prompt: ObjectPrompts | Sequence[ObjectPrompts],
        queries: Sequence[Volume | str | Path],
        window: str = "auto",
        settings: OnePromptSettings | None = None,
    ) -> OnePromptResult:
        """One-prompt segmentation: the structure prompted on the support(s) is found in every
        query (other images, other patients' scans) with no prompt on the queries.

        Arguments:
            support: one volume or 2D image (a one-slice volume), or several.
            support_prompt: its prompts (a mask on one slice or more, a box or clicks), one per support.
            queries: volumes or file paths (read one at a time; an unreadable one is reported in
                its outcome's ``error`` and the rest go on).

        Returns:
            :class:`~medsam2.oneprompt_run.OnePromptResult`: one outcome per query, in order.
        """
        from medsam2.oneprompt_run import run_one_prompt

        volumes = [support] if isinstance(support, Volume) else list(support)
        prompts = [support_prompt] if isinstance(support_prompt, ObjectPrompts) else list(support_prompt)
        if len(volumes) != len(prompts):
            raise PromptError(f"{len(volumes)} supports but {len(prompts)} support prompts; give one prompt per support")
        return run_one_prompt(self, list(zip(volumes, prompts)), queries, settings=settings, window=window)

    def _label_map(
        self, tracks: list[ObjectTrack], shape: tuple[int, int, int]
    ) -> tuple[np.ndarray, dict[int, dict[int, float]]]:
        """Frames' label map; where objects overlap, the one with higher probability x confidence wins."""
        n_frames, rows, cols = shape
        max_label = max(t.label for t in tracks)
        labels = np.zeros(shape, dtype=np.uint8 if max_label < 256 else np.uint16)
        geometry = self.backbone.frame_geometry(rows, cols)
        confidences: dict[int, dict[int, float]] = {t.label: {} for t in tracks}
        frames = sorted({f for t in tracks for f in t.frames})
        for frame in frames:
            best = torch.zeros((rows, cols))
            for track in tracks:
                result = track.frames.get(frame)
                if result is None:
                    continue
                if result.logits is not None:  # SAM 2: its own rule, logits resized to the frame > 0
                    logits = geometry.model_to_frame(result.logits)
                    foreground, probability = logits > 0, torch.sigmoid(logits)
                else:
                    probability = geometry.model_to_frame(result.probability_float())
                    foreground = probability > 0.5
                score = torch.where(foreground, probability.clamp(min=1e-6) * max(result.confidence, 1e-3), torch.zeros(()))
                win = score > best
                labels[frame][win.numpy()] = track.label
                best = torch.maximum(best, score)
                confidences[track.label][frame] = round(result.confidence, 4)
        return labels, confidences
