"""Intensity windows: raw scanner values to [0, 1], chosen per volume (CT windows in Hounsfield
units, or percentiles), and frames windowed one at a time. NumPy only (no torch).

Frames follow MedSAM's reference pipeline: window to [0, 1] and min-max normalise each slice (the
resize to the model's input is :mod:`medsam2.io.model_input`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from medsam2.errors import InputError, UsageError

#: CT windows as (level, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "liver": (80.0, 150.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "soft-tissue": (50.0, 350.0),
}
WINDOW_CHOICES = ("auto", "none", "percentile", *CT_WINDOWS)


#: at most this many voxels are read to choose a window (a regular subsample of larger volumes)
_SAMPLE_VOXELS = 2_000_000


@dataclass(frozen=True)
class IntensityWindow:
    """A linear map of raw values onto [0, 1], chosen once per volume and applied per frame.

    Attributes:
        name: the window used ("abdomen", "percentile", "none", ...).
        low, high: raw values that map to 0 and 1 (equal for a constant volume: all zeros).
        fill: value that NaN and infinite voxels take before mapping.
        warnings: what the user should know (NaN voxels, clipped values).
        empty: why there is nothing to segment (a constant volume, no finite voxel), or None.
    """

    name: str
    low: float
    high: float
    fill: float = 0.0
    warnings: tuple[str, ...] = ()
    empty: str | None = None

    def require_structure(self, source: str = "") -> None:
        """Refuse to segment a volume with nothing in it (constant, or no finite voxel).

        Raises:
            InputError: the volume is constant or holds no finite value.
        """
        if self.empty is not None:
            where = f"{source}: " if source else ""
            raise InputError(f"{where}{self.empty}; no mask is written for it")

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw values (any shape) -> float32 in [0, 1]."""
        data = np.asarray(raw, dtype=np.float32)
        if not np.isfinite(data).all():
            data = np.where(np.isfinite(data), data, np.float32(self.fill))
        if self.high <= self.low:
            return np.zeros(data.shape, dtype=np.float32)
        return np.clip((data - self.low) / (self.high - self.low), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class IntensityResult:
    """A whole array mapped to [0, 1] and how it was done."""

    array: np.ndarray  # float32, same shape as the input, values in [0, 1]
    window: str  # the window actually used ("abdomen", "percentile", "none", ...)
    warnings: tuple[str, ...] = ()


def _sample(array: np.ndarray) -> np.ndarray:
    flat = np.asarray(array).reshape(-1)
    return flat[:: max(1, flat.size // _SAMPLE_VOXELS)].astype(np.float32)


def looks_like_ct(array: np.ndarray, modality: str | None) -> bool:
    """CT when the DICOM modality says so, or when values span a Hounsfield-like range
    (air near -1000 and dense tissue above +200) on an integer-valued grid."""
    if modality:
        return modality.upper() == "CT"
    sample = _sample(array)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return False
    low, high = np.percentile(finite, [0.5, 99.5])
    integer_valued = np.allclose(finite[:: max(1, finite.size // 10000)] % 1, 0)
    return bool(low < -500 and high > 200 and integer_valued)


def finite_range(data: np.ndarray) -> tuple[float, float]:
    """Lowest and highest finite values (NaN when there are none), without a float copy."""
    if data.dtype.kind != "f":
        return float(data.min()), float(data.max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN input
        low, high = float(np.nanmin(data)), float(np.nanmax(data))
    if not (np.isfinite(low) and np.isfinite(high)):
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            return float("nan"), float("nan")
        low, high = float(finite.min()), float(finite.max())
    return low, high


def choose_window(array: np.ndarray, window: str = "auto", modality: str | None = None) -> IntensityWindow:
    """Choose the map of raw values to [0, 1] for a volume, without copying it.

    Arguments:
        array: raw values, (z, y, x) or (z, y, x, 3).
        window: "auto" (CT window "abdomen" for CT, 8-bit images as they are, else percentiles),
            a CT preset name, "percentile" (0.5th to 99.5th percentile, for MR, US, PET), or
            "none" (8-bit values taken as they are, x / 255).
        modality: DICOM modality when known; used by "auto".

    Percentiles are taken on a regular subsample of at most 2 million voxels. NaN and infinite
    voxels take the lowest finite value (with a warning); a constant volume maps to zeros (with a
    warning).
    """
    if window not in WINDOW_CHOICES:
        raise UsageError(f"unknown window '{window}'; choose one of {', '.join(WINDOW_CHOICES)}")
    notes: list[str] = []
    data = np.asarray(array)
    finite_low, finite_high = finite_range(data)
    fill = 0.0
    if data.dtype.kind == "f":
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad == data.size:
            return IntensityWindow(window, 0.0, 0.0, 0.0, tuple(notes), empty="the volume holds no finite value (all NaN or infinite)")
        if bad:
            fill = finite_low
            notes.append(f"{bad} NaN or infinite voxels were set to the lowest value ({fill:g})")
    if finite_high == finite_low:
        empty = f"the volume is constant (every voxel is {finite_low:g}); there is no structure to segment"
        return IntensityWindow(window, finite_low, finite_low, fill, tuple(notes), empty=empty)
    chosen = window
    if window == "auto":
        if data.dtype == np.uint8:
            chosen = "none"
        else:
            chosen = "abdomen" if looks_like_ct(data, modality) else "percentile"
    if chosen == "none":
        if finite_low < 0 or finite_high > 255:
            notes.append("--window none expects 8-bit values; values outside 0..255 were clipped")
        return IntensityWindow("none", 0.0, 255.0, fill, tuple(notes))
    if chosen == "percentile":
        sample = _sample(data)
        sample = np.where(np.isfinite(sample), sample, fill)
        low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
        if high <= low:
            low, high = finite_low, finite_high
        return IntensityWindow("percentile", low, high, fill, tuple(notes))
    level, width = CT_WINDOWS[chosen]
    return IntensityWindow(chosen, level - width / 2.0, level + width / 2.0, fill, tuple(notes))


def normalize_intensities(array: np.ndarray, window: str = "auto", modality: str | None = None) -> IntensityResult:
    """Map a whole array of raw values to float32 in [0, 1] (see :func:`choose_window`)."""
    chosen = choose_window(array, window, modality)
    return IntensityResult(chosen.apply(array), chosen.name, chosen.warnings)


class WindowedFrames:
    """Frames mapped to [0, 1] one at a time, so no windowed copy of the volume is kept.

    Arguments:
        raw_frames: (n, H, W) or (n, H, W, 3) raw values (often a transposed view of the volume).
        window: the volume's :class:`IntensityWindow`.
    """

    def __init__(self, raw_frames: np.ndarray, window: IntensityWindow) -> None:
        self.raw_frames = raw_frames
        self.window = window
        self.shape = raw_frames.shape

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: int) -> np.ndarray:
        return self.window.apply(self.raw_frames[index])
