"""The public entry point: :class:`Segmenter` segments prompted objects through a volume."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medsam2.backbones import build_backbone
from medsam2.backbones.base import Backbone
from medsam2.backbones.devices import resolve_device
from medsam2.backbones.registry import DEFAULT_BACKBONE
from medsam2.engine.engine import Engine
from medsam2.engine.feature_disk import FeatureFolder
from medsam2.engine.litemedsam_settings import PropagationSettings
from medsam2.engine.memory_kinds import DEFAULT_MEMORY, check_memory_kind
from medsam2.engine.oneprompt.locate import OnePromptSettings
from medsam2.engine.oneprompt.run import OnePromptResult, run_one_prompt
from medsam2.engine.options import ModelOptions
from medsam2.engine.results import SegmentationResult
from medsam2.engine.sam2_step import Sam2TrackingSettings
from medsam2.engine.session import Session
from medsam2.engine.session_state import DEFAULT_FEATURE_CACHE_MB
from medsam2.errors import ArgumentTypeError, PromptError
from medsam2.io.volume import Volume
from medsam2.prompts.parse import ObjectPrompts


def require_str(value: object, name: str) -> str:
    """Raises ArgumentTypeError unless ``value`` is a string."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} is a string, not {value!r}")
    return value


def require_volume(value: object, where: str) -> Volume:
    """Raises ArgumentTypeError unless ``value`` is a :class:`Volume`."""
    if not isinstance(value, Volume):
        hint = " (wrap a NumPy array as Volume(array=...) or read a file with load_volume)" if isinstance(value, (np.ndarray, list)) else ""
        raise ArgumentTypeError(f"{where} takes a medsam2.Volume, not {type(value).__name__}{hint}")
    return value


def _sequence(value: object, name: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ArgumentTypeError(f"{name} is one item or a list of them, not {type(value).__name__}")
    return list(value)


def require_objects(prompts: object) -> list[ObjectPrompts]:
    """One :class:`ObjectPrompts` or a list of them, as a list.

    Raises:
        ArgumentTypeError: anything else (a Box, a tuple, a dict).
    """
    items = [prompts] if isinstance(prompts, ObjectPrompts) else _sequence(prompts, "prompts")
    for item in items:
        if not isinstance(item, ObjectPrompts):
            raise ArgumentTypeError(
                f"prompts are ObjectPrompts, e.g. ObjectPrompts(1, 'liver', boxes=[Box(42, 10, 20, 80, 90)]); got {type(item).__name__}"
            )
    return items


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

    @classmethod
    def from_options(cls, options: ModelOptions) -> Segmenter:
        """The segmenter ``options`` describe (what every entry point and worker builds)."""
        return cls(
            backbone=options.backbone, device=options.device, memory=options.memory, checkpoint=options.checkpoint,
            runtime=options.runtime, precision=options.precision, model_config=options.model_config, offload=options.offload,
            settings=options.settings,
        )

    def __init__(
        self,
        backbone: str | Backbone = DEFAULT_BACKBONE,
        device: str = "auto",
        checkpoint: str | Path | None = None,
        memory: str = DEFAULT_MEMORY,
        settings: PropagationSettings | Sam2TrackingSettings | None = None,
        runtime: str = "auto",
        precision: str = "auto",
        model_config: str | None = None,
        offload: bool = False,
    ) -> None:
        for name, value in (("device", device), ("memory", memory), ("runtime", runtime), ("precision", precision)):
            require_str(value, name)
        if checkpoint is not None and (not isinstance(checkpoint, (str, os.PathLike)) or isinstance(checkpoint, bytes)):
            raise ArgumentTypeError(f"checkpoint is a path (str or pathlib.Path) or None, not {type(checkpoint).__name__}")
        if model_config is not None:
            require_str(model_config, "model_config")
        if not isinstance(backbone, str) and not all(hasattr(backbone, a) for a in ("encode", "decode", "name", "plan")):
            raise ArgumentTypeError(f"backbone is a name ('litemedsam', 'sam2') or a built Backbone, not {type(backbone).__name__}")
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
        feature_folder: FeatureFolder | None = None,
    ) -> Session:
        """An interactive :class:`~medsam2.engine.session.Session` over one volume: nothing is encoded
        until something is propagated; features stay in a cache bounded by ``feature_cache_mb``.

        Arguments:
            volume: the scan (see :func:`medsam2.load_volume`).
            axis: "axial", "coronal", "sagittal" (the patient's) or "k", "j", "i" (voxel axes).
            window: intensity window (see :func:`medsam2.io.windows.normalize_intensities`).
            feature_cache_mb: memory budget of the feature cache (None: unbounded).
            feature_folder: a :class:`~medsam2.engine.feature_disk.FeatureFolder` of this model's
                features on disk (a project keeps one): frames found there are not encoded again,
                and frames encoded are kept there, as float16 (None: memory only).

        Raises:
            ArgumentTypeError: ``volume`` is not a :class:`Volume`, or axis/window not strings.
            UsageError: an unknown axis or window, or a budget that is not a positive number.
            InputError: the volume is constant or holds no finite value.
        """
        require_volume(volume, "open")
        require_str(axis, "axis")
        require_str(window, "window")
        if feature_cache_mb is not None and (
            isinstance(feature_cache_mb, bool) or not isinstance(feature_cache_mb, (int, float)) or not feature_cache_mb > 0
        ):
            raise ArgumentTypeError(f"feature_cache_mb is a positive number of megabytes or None, not {feature_cache_mb!r}")
        return self.engine.open(volume, axis=axis, window=window, feature_cache_mb=feature_cache_mb, feature_folder=feature_folder)

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
            axis: "axial", "coronal", "sagittal" (the patient's) or "k", "j", "i" (voxel axes).
            window: intensity window (see :func:`medsam2.io.windows.normalize_intensities`).
            progress: show a progress bar.

        Returns:
            :class:`SegmentationResult` with labels (z, y, x) in the volume's grid.

        Raises:
            ArgumentTypeError: ``volume`` is not a :class:`Volume`, ``prompts`` not ObjectPrompts.
            PromptError: prompts that do not fit the volume, or two objects with one label.
            UsageError: an unknown axis or window.
            InputError: the volume is constant or holds no finite value.
        """
        require_volume(volume, "segment")
        objects = require_objects(prompts)
        require_str(axis, "axis")
        require_str(window, "window")
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
            :class:`~medsam2.engine.oneprompt.run.OnePromptResult`: one outcome per query, in order.
        """
        volumes = [support] if isinstance(support, Volume) else _sequence(support, "support")
        for volume in volumes:
            require_volume(volume, "one_prompt")
        prompts = require_objects(support_prompt)
        if isinstance(queries, (str, os.PathLike, Volume)) or not isinstance(queries, Sequence):
            raise ArgumentTypeError(f"queries is a list of volumes or paths, not {type(queries).__name__}; wrap one query in a list")
        for query in queries:
            if not isinstance(query, (Volume, str, os.PathLike)) or isinstance(query, bytes):
                raise ArgumentTypeError(f"each query is a Volume or a path, not {type(query).__name__}")
        require_str(window, "window")
        if len(volumes) != len(prompts):
            raise PromptError(f"{len(volumes)} supports but {len(prompts)} support prompts; give one prompt per support")
        return run_one_prompt(self.engine, list(zip(volumes, prompts)), queries, settings=settings, window=window)
