"""Choosing a torch device from a user's ``--device`` value; nothing assumes CUDA."""

from __future__ import annotations

import torch

from medsam2.errors import UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else MPS if available, else CPU; others must be available.

    Raises:
        UsageError: unknown name, or a device this machine does not have.
    """
    if not isinstance(name, str) or (name not in DEVICE_CHOICES and not name.startswith("cuda:")):
        raise UsageError(f"unknown device '{name}'; choose one of {', '.join(DEVICE_CHOICES)}")
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_ok:
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but this machine has no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not mps_ok:
        raise UsageError("--device mps was asked for but MPS is not available here; use --device cpu or auto")
    return torch.device(name)
