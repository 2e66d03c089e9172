"""Training slices: a dataset split by case, its slices encoded once and kept in RUN_DIR.

Each case's frames that hold any wanted structure are windowed and encoded as ``segment`` does
(the same window choice, resize + pad and encoder runtime), and stored with each structure's mask
in model space (256 x 256) in ``RUN_DIR/features/CASE.pt``: embeddings in fp16 (2 MB a slice).
An epoch then costs only the prompt encoder and mask decoder.

The SAM 2 family keeps its whole feature pyramid per slice (the mask decoder reads the two higher
resolution levels too: 8 MB a slice at 1024 input, 2 MB at 512) and each level's positional
encoding once per case (they depend only on the input size).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsam2.backbones.checkpoints import load_weights_only
from medsam2.backbones.registry import backbone_family
from medsam2.errors import CheckpointError, InputError, UsageError

#: bump when what a cache file holds changes
CACHE_VERSION = 2


@dataclass(frozen=True)
class Target:
    """One training or validation target: a structure on one cached frame of a case."""

    case: str
    index: int  # row in the case's cached frames
    label: int


@dataclass
class CaseFeatures:
    """A case's cached frames.

    Attributes:
        frames: frame indices along the axis (rows of ``embeddings``), ascending.
        embeddings: (n, 256, 64, 64) fp16 image embeddings (sam2: the lowest pyramid level,
            (n, 256, S/16, S/16)); with ``train_encoder`` the encoder's inputs instead,
            (n, 3, S, S) fp16 (the encoder runs in every step).
        masks: {label: (n, S, S) bool} each structure's mask in model space.
        scale: model pixels per frame pixel (for the jitter; sam2 stretches, and this is the
            scale of the longer side).
        content: (rows, cols) of the frame inside the model input.
        high_res: sam2 only: the higher pyramid levels, highest first, each (n, C, h, w) fp16.
        positions: sam2 only: each level's positional encoding (1, C, h, w), highest first.
    """

    frames: list[int]
    embeddings: torch.Tensor
    masks: dict[int, torch.Tensor]
    scale: float
    content: tuple[int, int]
    high_res: tuple[torch.Tensor, ...] = ()
    positions: tuple[torch.Tensor, ...] = ()

    def targets(self, case: str) -> list[Target]:
        return [Target(case, i, label) for label, m in sorted(self.masks.items()) for i in range(len(self.frames)) if m[i].any()]


def split_cases(case_ids: list[str], val_fraction: float, val_cases: tuple[str, ...] | None, seed: int) -> tuple[list[str], list[str]]:
    """(training, validation) case names: ``val_cases`` as given, or a seeded share of the cases.

    Raises:
        UsageError: a named validation case that is not in the dataset, or a split that leaves
            either side empty.
    """
    if val_cases:
        unknown = [c for c in val_cases if c not in case_ids]
        if unknown:
            raise UsageError(f"--val-cases {unknown[0]} is not a case of the dataset (cases: {', '.join(case_ids[:6])}...)")
        validation = [c for c in case_ids if c in val_cases]
    else:
        count = max(1, round(len(case_ids) * val_fraction))
        order = np.random.default_rng(seed).permutation(len(case_ids))
        validation = sorted(case_ids[i] for i in order[:count])
    training = [c for c in case_ids if c not in validation]
    if not training or not validation:
        raise UsageError(
            f"the dataset has {len(case_ids)} case(s): training and validation need one each at least "
            "(cases are split whole, never by slice)"
        )
    return training, validation


def _cache_key(backbone, case, settings) -> str:
    # the files themselves (links resolved): a project's runs link the same scans from each run's folder
    files = f"{Path(case.image).resolve()}|{Path(case.label).resolve()}"
    source = (f"{files}|{settings.axis}|{settings.window}|{getattr(backbone, 'checkpoint', '')}|"
              f"{settings.train_encoder}|{settings.backbone}|{backbone.input_size}|{settings.model_config}|{CACHE_VERSION}")
    return f"{zlib.crc32(source.encode()):08x}"


def encode_case(backbone, case, settings, labels: list[int] | None) -> tuple[CaseFeatures, list[int]]:
    """Encode a case's frames that hold a wanted structure; (its features, the labels it holds).

    Raises:
        InputError: the image and its label map differ in shape.
    """
    from medsam2.evaluation.harness import load_case
    from medsam2.io.model_input import prepare_frame
    from medsam2.io.slicing import to_frames, voxel_axis
    from medsam2.io.windows import WindowedFrames, choose_window

    loaded = load_case(case)
    if loaded is None:
        raise InputError(f"{case.case_id}: the label map has another shape than the image; fix or remove the case")
    volume, reference = loaded
    axis = voxel_axis(settings.axis, volume.direction)
    raw = to_frames(volume.array, axis)
    frames_reference = to_frames(reference, axis)
    present = [int(v) for v in np.unique(frames_reference) if v > 0]
    wanted = [v for v in present if labels is None or v in labels]
    window = choose_window(raw, settings.window, volume.modality)
    windowed = WindowedFrames(raw, window)
    keep = [z for z in range(len(windowed)) if np.isin(frames_reference[z], wanted).any()] if wanted else []
    embeddings, masks = [], {label: [] for label in wanted}
    # the SAM 2 family: multiscale features, and frames stretched to the square input
    multiscale = backbone_family(settings.backbone).multiscale_features
    high_res: list[list[torch.Tensor]] = [[], []]
    positions: tuple[torch.Tensor, ...] = ()
    geometry = backbone.frame_geometry(raw.shape[1], raw.shape[2])
    size = backbone.input_size
    prepare = backbone.prepare if multiscale else (lambda frame: prepare_frame(frame, geometry))
    for start in range(0, len(keep), 8):
        chunk = keep[start : start + 8]
        if settings.train_encoder:  # the encoder trains: keep its inputs, not its outputs
            embeddings.extend(prepare(windowed[z]).to(torch.float16) for z in chunk)
        else:
            for features in backbone.encode([windowed[z] for z in chunk]):
                embeddings.append(features.embedding.detach().to(torch.float16).cpu())
                if multiscale:
                    for level, stored in zip(features.levels[:-1], high_res):
                        stored.append(level[0].detach().to(torch.float16).cpu())
                    if not positions:  # the same for every slice of the case
                        positions = tuple(p.detach().float().cpu().clone() for p in features.positions)  # not inference tensors
        for z in chunk:
            for label in wanted:
                masks[label].append(geometry.frame_to_model(frames_reference[z] == label) > 0.5)
    scale = size / max(raw.shape[1], raw.shape[2]) if multiscale else float(geometry.scale)
    content = (size, size) if multiscale else tuple(int(v) for v in geometry.resized_shape)
    empty = (0, 3, size, size) if settings.train_encoder else (0, 256, size // 16, size // 16)
    features = CaseFeatures(
        frames=keep,
        embeddings=torch.stack(embeddings) if embeddings else torch.zeros(empty, dtype=torch.float16),
        masks={label: torch.stack(m) if m else torch.zeros((0, size, size), dtype=torch.bool) for label, m in masks.items()},
        scale=float(scale),
        content=content,
        high_res=tuple(torch.stack(level) for level in high_res if level),
        positions=positions,
    )
    return features, wanted


def cached_case(folder: Path, backbone, case, settings, labels: list[int] | None) -> tuple[CaseFeatures, list[int]]:
    """A case's features from ``folder`` if cached with the same inputs, else encoded and written there."""
    from medsam2.io.atomic import atomic_write

    key = _cache_key(backbone, case, settings)
    path = folder / f"{case.case_id}.pt"
    if path.is_file():
        try:
            stored = load_weights_only(path, "feature cache file")
        except CheckpointError:  # a broken or foreign cache file is never unpickled: encoded again and replaced
            stored = None
        if isinstance(stored, dict) and stored.get("key") == key and stored.get("labels") == (list(labels) if labels else None):
            features = CaseFeatures(stored["frames"], stored["embeddings"], {int(k): v for k, v in stored["masks"].items()},
                                    float(stored["scale"]), tuple(stored["content"]), tuple(stored["high_res"]),
                                    tuple(stored["positions"]))
            return features, list(stored["present"])
    features, present = encode_case(backbone, case, settings, labels)
    data = {"key": key, "labels": list(labels) if labels else None, "present": present, "frames": features.frames,
            "embeddings": features.embeddings, "masks": {str(k): v for k, v in features.masks.items()},
            "scale": features.scale, "content": list(features.content), "high_res": list(features.high_res),
            "positions": list(features.positions)}
    atomic_write(path, lambda tmp: torch.save(data, tmp), ".pt", overwrite=True)
    return features, present
