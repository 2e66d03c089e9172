"""The resize+pad of a [0, 1] frame to a backbone's square input, with its exact inverse.

The longest side is resized to the input size (keeping the aspect ratio) and the bottom and right
are padded with zeros. Measured on the TotalSegmentator CT with the reference box on every slice,
this scored 0.947 mean Dice on five organs against 0.936 for a plain stretch to 256x256 (see
DESIGN.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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
