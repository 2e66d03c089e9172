"""The public entry point: :class:`Segmenter` segments prompted objects through a volume."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medsam2.backbones import Backbone, build_backbone
from medsam2.devices import resolve_device
from medsam2.engine.litemedsam_step import PropagationSettings
from medsam2.engine.results import SegmentationResult
from medsam2.engine.sam2_step import Sam2TrackingSettings
from medsam2.engine.session import DEFAULT_FEATURE_CACHE_MB, Engine, Session
from medsam2.errors import PromptError
from medsam2.io.volume import Volume
from medsam2.memory import check_memory_kind
from medsam2.oneprompt.locate import OnePromptSettings
from medsam2.oneprompt.run import OnePromptResult, run_one_prompt
from medsam2.prompts import ObjectPrompts


class Segmenter:
    """Segments structures through a volume from prompts on one or a few slices.

    Arguments:
        backbone: "litemedsam" (the embedded default) or an already built :class:`Backbone`.
        device: "auto", "cpu", "cuda" or "mps" (ignored when a built backbone is given).
        checkpoint: weights file for the backbone (default: the weights the backbone ships with).
        memory: "confidence" (the confidence memory bank), "fifo" (SAM 2's rule) or "none"
            (previous slice only).
        settings: the engine's settings: :class:`PropagationSettings` for litemedsam,
            :class:`~medsam2.engine.sam2_step.Sam2TrackingSettings` for sam2; the measured defaults when None.
        runtime: how the image encoder runs: "auto" (OpenVINO on CPUs where installed, else
            PyTorch), "torch" or "openvino" (ignored when a built backbone is given).
        precision: "auto" (bf16 where the hardware has it natively, else fp32 on CPUs; bf16 or
            fp16 on CUDA), "fp32", "bf16" or "fp16".
        model_config: sam2 backbone only: the architecture (`medsam2 models`); None reads it from
            the checkpoint.
        offload: sam2 backbone only: keep past frames' memory in CPU memory.

    With the sam2 backbone, objects are tracked with SAM 2's memory attention
    (:mod:`medsam2.engine.sam2_step`); ``memory`` picks which past frames it reads.
    """

    def __init__(
        self,
        backbone: str | Backbone = "litemedsam",
        device: str = "auto",
        checkpoint: str | Path | None = None,
        memory: str = "confidence",
        settings: PropagationSettings | Sam2TrackingSettings | None = None,
        runtime: str = "auto",
        precision: str = "auto",
        model_config: str | None = None,
        offload: bool = False,
    ) -> None:
        check_memory_kind(memory)  # before a model is loaded
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
        self.engine = Engine(self.backbone, memory, settings)

    @property
    def memory(self) -> str:
        """The memory rule's name."""
        return self.engine.memory

    @property
    def settings(self) -> PropagationSettings | Sam2TrackingSettings:
        """The engine's settings (the measured defaults unless given)."""
        return self.engine.settings

    def open(
        self,
        volume: Volume,
        axis: str = "axial",
        window: str = "auto",
        feature_cache_mb: float | None = DEFAULT_FEATURE_CACHE_MB,
    ) -> Session:
        """An interactive :class:`~medsam2.engine.session.Session` over one volume: nothing is encoded
        until something is propagated; features stay in a cache bounded by ``feature_cache_mb``.

        Arguments:
            volume: the scan (see :func:`medsam2.load_volume`).
            axis: "axial", "coronal" or "sagittal".
            window: intensity window (see :func:`medsam2.preprocess.normalize_intensities`).
            feature_cache_mb: memory budget of the feature cache (None: unbounded).
        """
        return self.engine.open(volume, axis=axis, window=window, feature_cache_mb=feature_cache_mb)

    def segment(
        self,
        volume: Volume,
        prompts: list[ObjectPrompts] | ObjectPrompts,
        axis: str = "axial",
        window: str = "auto",
        progress: bool = False,
    ) -> SegmentationResult:
        """Segment every prompted object through the volume (a session: add, propagate, result).

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
        objects = [prompts] if isinstance(prompts, ObjectPrompts) else list(prompts)
        return self.engine.segment(volume, objects, axis=axis, window=window, progress=progress)

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
            :class:`~medsam2.oneprompt.run.OnePromptResult`: one outcome per query, in order.
        """
        volumes = [support] if isinstance(support, Volume) else list(support)
        prompts = [support_prompt] if isinstance(support_prompt, ObjectPrompts) else list(support_prompt)
        if len(volumes) != len(prompts):
            raise PromptError(f"{len(volumes)} supports but {len(prompts)} support prompts; give one prompt per support")
        return run_one_prompt(self.engine, list(zip(volumes, prompts)), queries, settings=settings, window=window)
