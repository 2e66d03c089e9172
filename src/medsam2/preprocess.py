"""Intensity windows, and the resize+pad to a backbone's square input with its exact inverse.

Frames follow MedSAM's reference pipeline: window to [0, 1], min-max normalise each slice, resize
the longest side to the input size (keeping the aspect ratio) and pad the bottom and right with
zeros. Measured on the TotalSegmentator CT with the reference box on every slice, this scored
0.947 mean Dice on five organs against 0.936 for a plain stretch to 256x256 (see DESIGN.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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


@dataclass(frozen=True)
class FrameGeometry:
    """How a (height, width) frame maps into a square model input of side ``input_size``.

    The frame is scaled by ``scale`` (longest side -> input_size) and padded at the bottom and
    right. Model coordinates are continuous pixel edges: voxel column ``x`` covers
    ``[x * scale, (x + 1) * scale)``.
    """

    height: int
    width: int
    input_size: int

    @property
    def scale(self) -> float:
        return self.input_size / max(self.height, self.width)

    @property
    def resized_shape(self) -> tuple[int, int]:
        """(rows, cols) of the frame's content inside the model input."""
        return (max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale)))

    def box_to_model(self, box_xyxy: tuple[float, float, float, float]) -> np.ndarray:
        """Inclusive voxel box (x0, y0, x1, y1) -> model box covering those voxels' extent."""
        x0, y0, x1, y1 = box_xyxy
        s = self.scale
        return np.array([x0 * s, y0 * s, (x1 + 1) * s, (y1 + 1) * s], dtype=np.float32)

    def points_to_model(self, points_xy: np.ndarray) -> np.ndarray:
        """Voxel centres (N, 2) as (x, y) -> model coordinates of those centres."""
        return (np.asarray(points_xy, dtype=np.float32) + 0.5) * self.scale - 0.5

    def model_to_frame(self, model_map: torch.Tensor) -> torch.Tensor:
        """A (S, S) map in model space (any S, e.g. 256 logits) -> (height, width) frame map.

        The padded part is cropped, the rest resized bilinearly, exactly inverting the forward
        resize+pad."""
        size = model_map.shape[-1]
        rows, cols = self.resized_shape
        crop_r = max(1, round(rows * size / self.input_size))
        crop_c = max(1, round(cols * size / self.input_size))
        cropped = model_map[..., :crop_r, :crop_c]
        out = F.interpolate(cropped[None, None].float(), size=(self.height, self.width), mode="bilinear", align_corners=False)
        return out[0, 0]

    def frame_to_model(self, frame_map: np.ndarray | torch.Tensor, size: int | None = None) -> torch.Tensor:
        """A (height, width) map -> (size, size) map in model space (zeros in the padding)."""
        size = size or self.input_size
        rows, cols = self.resized_shape
        tr = max(1, round(rows * size / self.input_size))
        tc = max(1, round(cols * size / self.input_size))
        t = torch.as_tensor(np.asarray(frame_map, dtype=np.float32))[None, None]
        resized = F.interpolate(t, size=(tr, tc), mode="bilinear", align_corners=False)[0, 0]
        out = torch.zeros((size, size), dtype=torch.float32)
        out[:tr, :tc] = resized
        return out


@dataclass(frozen=True)
class StretchGeometry:
    """How a (height, width) frame maps into SAM 2's square input: stretched to
    ``input_size`` x ``input_size`` (no padding), as SAM 2 resizes video frames.

    Boxes are inclusive voxel boxes and cover their voxels' edges (x0 .. x1 + 1); points are
    scaled as SAM 2's predictors scale pixel coordinates (x * input_size / width).
    """

    height: int
    width: int
    input_size: int

    def box_to_model(self, box_xyxy: tuple[float, float, float, float]) -> np.ndarray:
        """Inclusive voxel box (x0, y0, x1, y1) -> model box covering those voxels' extent."""
        x0, y0, x1, y1 = box_xyxy
        sx, sy = self.input_size / self.width, self.input_size / self.height
        return np.array([x0 * sx, y0 * sy, (x1 + 1) * sx, (y1 + 1) * sy], dtype=np.float32)

    def points_to_model(self, points_xy: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) as (x, y) -> model coordinates."""
        scale = np.array([self.input_size / self.width, self.input_size / self.height], dtype=np.float32)
        return np.asarray(points_xy, dtype=np.float32) * scale

    def model_to_frame(self, model_map: torch.Tensor) -> torch.Tensor:
        """A (S, S) map in model space (any S) -> (height, width), bilinear as SAM 2 does."""
        if tuple(model_map.shape[-2:]) == (self.height, self.width):
            return model_map.float()
        out = F.interpolate(model_map[None, None].float(), size=(self.height, self.width), mode="bilinear", align_corners=False)
        return out[0, 0]

    def frame_to_model(self, frame_map: np.ndarray | torch.Tensor, size: int | None = None) -> torch.Tensor:
        """A (height, width) map -> (size, size) map in model space."""
        size = size or self.input_size
        t = torch.as_tensor(np.asarray(frame_map, dtype=np.float32))[None, None]
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0]


def model_space_intensity(frame01: np.ndarray, geometry: FrameGeometry | StretchGeometry) -> torch.Tensor:
    """A windowed frame ((H, W) or (H, W, 3), values in [0, 1]) -> its (S, S) uint8 map in model
    space: the channels' mean x 255, placed as ``geometry.frame_to_model`` places a frame map
    (bilinear, without the model input's antialias: the rule's thresholds were measured so).
    Unlike the model input it is not min-max normalised per frame, so values compare across frames."""
    frame = np.asarray(frame01, dtype=np.float32)
    if frame.ndim == 3:
        frame = frame.mean(axis=2)
    return (geometry.frame_to_model(frame).clamp(0, 1) * 255).round().to(torch.uint8)


def prepare_frame(frame01: np.ndarray, geometry: FrameGeometry) -> torch.Tensor:
    """A windowed frame -> the model's (3, S, S) float32 input.

    Arguments:
        frame01: (H, W) or (H, W, 3) values in [0, 1].
        geometry: the frame's :class:`FrameGeometry`.

    Returns:
        (3, S, S) tensor: min-max normalised per frame, resized keeping the aspect ratio, padded.
    """
    t = torch.as_tensor(np.ascontiguousarray(frame01), dtype=torch.float32)
    t = t.permute(2, 0, 1) if t.ndim == 3 else t[None].expand(3, -1, -1)
    low, high = t.min(), t.max()
    t = (t - low) / torch.clamp(high - low, min=1e-8)
    rows, cols = geometry.resized_shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resized = F.interpolate(t[None], size=(rows, cols), mode="bilinear", align_corners=False, antialias=True)[0]
    s = geometry.input_size
    return F.pad(resized, (0, s - cols, 0, s - rows))
