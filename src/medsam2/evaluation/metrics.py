"""Segmentation metrics: thin wrappers over MONAI's implementations for binary masks.

Conventions (MONAI's, stated here so users can rely on them): Dice and IoU of two empty masks
are 1.0 (nothing to find, nothing found); an empty prediction against a non-empty reference gives
0.0. HD95 is in mm and is infinite when exactly one mask is empty (NaN when both are). NSD (surface
Dice) uses a tolerance in mm and is 1.0 when both masks are empty.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou, compute_surface_dice


@contextmanager
def _quiet_monai():
    """MONAI 1.5+ warns about an argument its own metric functions pass internally; hide that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*always_return_as_numpy.*")
        yield


def _pair(prediction: np.ndarray, reference: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.as_tensor(np.asarray(prediction) > 0)[None, None].float()
    r = torch.as_tensor(np.asarray(reference) > 0)[None, None].float()
    if p.shape != r.shape:
        raise ValueError(f"prediction {tuple(p.shape[2:])} and reference {tuple(r.shape[2:])} differ in shape")
    return p, r


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two binary masks of one shape (values > 0 are foreground)."""
    p, r = _pair(prediction, reference)
    return float(compute_dice(p, r, include_background=True, ignore_empty=False)[0, 0])


def iou(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Intersection over union of two binary masks."""
    p, r = _pair(prediction, reference)
    return float(compute_iou(p, r, include_background=True, ignore_empty=False)[0, 0])


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> float:
    """95th percentile Hausdorff distance in mm; ``spacing`` in the arrays' axis order."""
    p, r = _pair(prediction, reference)
    if not p.any() and not r.any():
        return float("nan")
    if not p.any() or not r.any():
        return float("inf")
    with _quiet_monai():
        value = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing))
    return float(value[0, 0])


def nsd(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float = 2.0) -> float:
    """Normalised surface Dice at ``tolerance_mm``; ``spacing`` in the arrays' axis order."""
    p, r = _pair(prediction, reference)
    if not p.any() and not r.any():
        return 1.0
    with _quiet_monai():
        value = compute_surface_dice(p, r, class_thresholds=[tolerance_mm], include_background=True, spacing=list(spacing))
    return float(value[0, 0])
