"""PNG montages of slices with label overlays, for a person to look at."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from medsam2.io.atomic import atomic_write
from medsam2.io.colours import label_colour
from medsam2.io.volume import Volume


def display_orientation(volume: Volume, frame: np.ndarray, axis: str = "k") -> np.ndarray:
    """Flip a frame for display, judged from the volume's direction cosines: an axial (k: rows=j,
    cols=i) frame with anterior up and the patient's right on the left (radiological view); a
    coronal or sagittal (j or i: rows=k) frame with superior up."""
    d = volume.direction
    out = frame
    if axis != "k":
        return out[::-1] if d[8] > 0 else out  # k runs towards superior: row 0 is inferior
    if d[4] < 0:  # j runs towards anterior: row 0 is posterior
        out = out[::-1]
    if d[0] < 0:  # i runs towards the patient's right
        out = out[:, ::-1]
    return out


def render_overlay(gray01: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None, alpha: float = 0.45) -> np.ndarray:
    """(H, W) grey in [0, 1] + (H, W) labels (+ optional reference labels drawn as outlines)
    -> (H, W, 3) uint8 RGB."""
    rgb = np.repeat((np.clip(gray01, 0, 1) * 255)[..., None], 3, axis=2).astype(np.float32)
    for label in np.unique(labels):
        if label == 0:
            continue
        mask = labels == label
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.array(label_colour(int(label)), dtype=np.float32)
    if reference is not None:
        for label in np.unique(reference):
            if label == 0:
                continue
            mask = reference == label
            edge = mask & ~ndimage.binary_erosion(mask)
            rgb[edge] = np.array(label_colour(int(label)), dtype=np.float32) * 0.6 + 255 * 0.4
    return rgb.clip(0, 255).astype(np.uint8)


def write_montage(
    path: str | os.PathLike,
    volume: Volume,
    gray01: np.ndarray,
    labels: np.ndarray,
    slices: list[int],
    reference: np.ndarray | None = None,
    names: dict[int, str] | None = None,
    zoom: int = 3,
    columns: int = 4,
    axis: str = "k",
    overwrite: bool = True,
) -> Path:
    """Write a grid of slices with label fills (and reference outlines) as a PNG, atomically.

    Arguments:
        gray01: (frame, rows, cols) intensities in [0, 1]; labels/reference: label maps on the same
            frames (a volume's (z, y, x) arrays for ``axis`` "k").
        slices: which frames to show, in order.
        names: label -> name for the legend.
        zoom: pixels per voxel (0: as many as fit a 256-pixel tile).
        axis: the voxel axis the frames run along ("k", "j", "i"), for the display orientation.
    """
    tiles = []
    if zoom <= 0:
        zoom = max(1, min(8, 256 // max(gray01.shape[1], gray01.shape[2], 1)))
    for z in slices:
        ref = None if reference is None else display_orientation(volume, reference[z], axis)
        tile = render_overlay(display_orientation(volume, gray01[z], axis), display_orientation(volume, labels[z], axis), ref)
        image = Image.fromarray(tile).resize((tile.shape[1] * zoom, tile.shape[0] * zoom), Image.NEAREST)
        ImageDraw.Draw(image).text((4, 4), f"{axis}={z}", fill=(255, 255, 255))
        tiles.append(image)
    width, height = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    legend_height = 18 if names else 0
    sheet = Image.new("RGB", (width * min(columns, len(tiles)), height * rows + legend_height), (0, 0, 0))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, ((index % columns) * width, (index // columns) * height))
    if names:
        draw = ImageDraw.Draw(sheet)
        x = 4
        for label, name in names.items():
            draw.rectangle((x, height * rows + 4, x + 10, height * rows + 14), fill=label_colour(label))
            draw.text((x + 14, height * rows + 3), name, fill=(255, 255, 255))
            x += 14 + 7 * len(name) + 12
    return atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"), ".png", overwrite=overwrite)


def pick_slices(present: np.ndarray, count: int = 8) -> list[int]:
    """Up to ``count`` frames evenly spread from the first to the last where ``present`` is True
    (the middle frame when it is nowhere)."""
    frames = np.flatnonzero(present)
    if frames.size == 0:
        return [len(present) // 2]
    return np.unique(np.linspace(frames[0], frames[-1], num=min(count, frames.size)).round().astype(int)).tolist()


def write_segmentation_montage(
    path: str | os.PathLike, volume: Volume, result, names: dict[int, str | None], overwrite: bool = False
) -> Path:
    """``segment --montage``: overlays of a result on up to 8 of its slices along the slicing axis,
    with the window the segmentation used and a legend of the structures' names."""
    from medsam2.io.slicing import to_frames
    from medsam2.io.windows import WindowedFrames, choose_window

    axis = result.report.voxel_axis
    # only the shown frames are windowed: no float copy of the whole volume
    window = choose_window(volume.array, result.report.window, volume.modality)
    frames_gray = _GreyFrames(WindowedFrames(to_frames(volume.array, axis), window))
    frames_labels = to_frames(result.labels, axis)
    present = frames_labels.reshape(frames_labels.shape[0], -1).any(axis=1)
    legend = {label: name or f"label {label}" for label, name in sorted(names.items())}
    return write_montage(
        path, volume, frames_gray, frames_labels, pick_slices(present), names=legend, zoom=0, axis=axis, overwrite=overwrite
    )


class _GreyFrames:
    """Windowed frames, a colour frame as the mean of its channels: (rows, cols) in [0, 1] each."""

    def __init__(self, frames) -> None:
        self.frames = frames
        self.shape = tuple(frames.shape[:3])

    def __getitem__(self, index: int) -> np.ndarray:
        frame = self.frames[index]
        return frame.mean(axis=-1) if frame.ndim == 3 else frame


def write_contact_sheet(
    path: str | os.PathLike, tiles: list[tuple[str, np.ndarray, np.ndarray, bool]], tile_size: int = 160, columns: int = 6
) -> Path:
    """Write a contact sheet of images with their masks as a PNG, atomically.

    Arguments:
        tiles: (caption, (H, W) grey in [0, 1], (H, W) mask, flagged) per image; flagged
            captions are drawn in red on a red frame.
    """
    images = []
    for caption, gray01, mask, flagged in tiles:
        tile = Image.fromarray(render_overlay(gray01, (mask > 0).astype(np.uint8)))
        tile.thumbnail((tile_size, tile_size))
        canvas = Image.new("RGB", (tile_size, tile_size + 14), (200, 30, 30) if flagged else (0, 0, 0))
        canvas.paste(tile, ((tile_size - tile.width) // 2, 14 + (tile_size - tile.height) // 2))
        ImageDraw.Draw(canvas).text((3, 1), caption[:30], fill=(255, 255, 255))
        images.append(canvas)
    if not images:
        images = [Image.new("RGB", (tile_size, tile_size + 14))]
    width, height = images[0].size
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (width * min(columns, len(images)), height * rows), (0, 0, 0))
    for index, image in enumerate(images):
        sheet.paste(image, ((index % columns) * width, (index // columns) * height))
    return atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"), ".png")
