"""The Backbone protocol: what the propagation engine needs from a segmentation network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from medsam2.backbones.runtime import ExecutionPlan
from medsam2.io.model_input import FrameGeometry, StretchGeometry


@dataclass
class FrameFeatures:
    """Image features of one frame.

    Attributes:
        embedding: (C, h, w) float tensor on the backbone's device (LiteMedSAM: 256x64x64).
        geometry: how the frame maps into the model input.
        descriptor: optional (D, h, w) features for matching structures between images (one-prompt
            segmentation); LiteMedSAM: the last TinyViT stage before the neck, 320x64x64 float16.
            None where the backbone has none: the embedding serves.
        intensity: optional (S, S) uint8 map of the frame's windowed values (x 255, the channels'
            mean) in model space, as the frame was resized and padded for the model; what the
            intensity stop rule compares masks on. None where the backbone does not keep it.
    """

    embedding: torch.Tensor
    geometry: FrameGeometry | StretchGeometry
    descriptor: torch.Tensor | None = None
    intensity: torch.Tensor | None = None

    def matching_features(self) -> torch.Tensor:
        """(D, h, w) float32 features on the CPU for comparing images: the descriptor, else the embedding."""
        source = self.descriptor if self.descriptor is not None else self.embedding
        return source.float().cpu()


@dataclass
class Prediction:
    """A decoded mask for one frame.

    Attributes:
        logits: (S, S) float32 mask logits in model space on the CPU (LiteMedSAM: 256x256),
            covering the whole padded model input.
        iou: the model's predicted IoU of the mask, in [0, 1].
        presence: the model's belief that the object is in the frame at all, in [0, 1] (SAM 2:
            sigmoid of its object score; 1.0 for backbones without such a head, LiteMedSAM).
    """

    logits: torch.Tensor
    iou: float
    presence: float = 1.0

    @property
    def confidence(self) -> float:
        """Predicted IoU x presence: what the memory bank and one-prompt ranking read."""
        return self.iou * self.presence


@runtime_checkable
class Backbone(Protocol):
    """A promptable image segmenter that encodes frames once and decodes prompts cheaply."""

    name: str
    input_size: int
    device: torch.device
    #: how the image encoder runs (runtime, precision, notes for the report)
    plan: ExecutionPlan
    #: the weights file (None for a backbone that has none)
    checkpoint: Path | None

    def encode(self, frames: list[np.ndarray]) -> list[FrameFeatures]:
        """Encode frames, each (H, W) or (H, W, 3) with values in [0, 1]."""
        ...

    def frame_geometry(self, height: int, width: int) -> FrameGeometry | StretchGeometry:
        """How a (height, width) frame maps into this backbone's input (and back)."""
        ...

    def decode(
        self,
        features: FrameFeatures,
        box: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> Prediction:
        """Decode one mask from a box (x0, y0, x1, y1) and/or points (N, 2) with labels (N,),
        all in model-input coordinates."""
        ...
