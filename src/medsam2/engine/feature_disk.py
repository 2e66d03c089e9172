"""Frame features kept on disk, so that a scan encoded once is not encoded again: a project's
cases reopened in the server, the next day included.

One file per frame, ``FOLDER/MODEL_KEY/DIGEST.pt``: the model key names the backbone, its runtime,
precision and weights (features of other weights are never served), the digest the frame's exact
content. Features are kept as float16 (a LiteMedSAM slice: 4.6 MB instead of 6.6 MB) and a frame
encoded fresh is rounded the same way before use, so a case's answers do not depend on whether
its features came from the disk. Files are written atomically; the least recently used leave
first when the folder passes its budget. Only LiteMedSAM's plain features are kept (SAM 2's
stay in memory).
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import torch

from medsam2.backbones.base import Backbone, FrameFeatures

#: default disk budget of a project's feature folder (MB = 2**20 bytes)
DEFAULT_DISK_MB = 8192.0
#: the fields of FrameFeatures that hold tensors (the geometry follows from the frame's size)
_TENSOR_FIELDS = tuple(f.name for f in fields(FrameFeatures) if f.name != "geometry")


def model_key(backbone: Backbone) -> str:
    """A folder name for features of this backbone: family, runtime, precision and a hash of its
    weights (``bundled`` where it has no checkpoint file)."""
    from medsam2.backbones.runtime import file_sha256

    checkpoint = getattr(backbone, "checkpoint", None)
    weights = file_sha256(Path(checkpoint))[:16] if checkpoint and Path(checkpoint).is_file() else "bundled"
    plan = backbone.plan
    return f"{backbone.name}-{plan.runtime}-{plan.precision}-{weights}"


def as_stored(features: FrameFeatures) -> FrameFeatures:
    """``features`` as the disk keeps them: floating tensors rounded to float16 (and back to their own dtype)."""
    rounded = {name: _rounded(getattr(features, name)) for name in _TENSOR_FIELDS}
    return FrameFeatures(geometry=features.geometry, **rounded)


def _rounded(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.float16).to(value.dtype)
    return value


class FeatureFolder:
    """Features of one model on disk, by frame digest (:func:`medsam2.engine.feature_cache.frame_digest`).

    Arguments:
        root: the folder (a project's ``cache/features``); the model's own folder is made under it.
        key: :func:`model_key` of the backbone that encodes.
        budget_mb: disk the files of every model together may take; :meth:`trim` enforces it.
    """

    def __init__(self, root: Path, key: str, budget_mb: float = DEFAULT_DISK_MB) -> None:
        self.root = root
        self.folder = root / key
        self.budget_mb = budget_mb
        self.folder.mkdir(parents=True, exist_ok=True)

    def keeps(self, features: FrameFeatures) -> bool:
        """Whether these features can be kept (LiteMedSAM's plain :class:`FrameFeatures`)."""
        return type(features) is FrameFeatures

    def load(self, digest: str, backbone: Backbone, height: int, width: int) -> FrameFeatures | None:
        """The features of a frame of ``height`` x ``width`` kept earlier, or None; an unreadable
        file counts as absent (and is removed)."""
        path = self.folder / f"{digest}.pt"
        try:
            stored = torch.load(path, map_location=backbone.device, weights_only=True)
            os.utime(path)  # recently used
        except FileNotFoundError:
            return None
        except Exception:  # a file cut short by a crash, or not ours
            path.unlink(missing_ok=True)
            return None
        dtypes = stored.pop("dtypes")
        values = {name: _restore(stored.get(name), dtypes.get(name)) for name in _TENSOR_FIELDS}
        return FrameFeatures(geometry=backbone.frame_geometry(height, width), **values)

    def save(self, digest: str, features: FrameFeatures) -> None:
        """Keep a frame's features (as :func:`as_stored` rounds them), atomically."""
        if not self.keeps(features):
            return
        values = {name: getattr(features, name) for name in _TENSOR_FIELDS}
        payload = {name: value.to(torch.float16).cpu() if value.is_floating_point() else value.cpu()
                   for name, value in values.items() if isinstance(value, torch.Tensor)}
        payload["dtypes"] = {name: str(value.dtype) for name, value in values.items() if isinstance(value, torch.Tensor)}
        staged = self.folder / f".{digest}.{os.getpid()}.tmp"
        torch.save(payload, staged)
        os.replace(staged, self.folder / f"{digest}.pt")

    def trim(self) -> int:
        """Remove the least recently used files of every model until the folder fits its budget;
        the number removed."""
        files = [(p.stat(), p) for p in self.root.glob("*/*.pt")]
        total = sum(stat.st_size for stat, _ in files)
        budget = self.budget_mb * 2**20
        removed = 0
        for stat, path in sorted(files, key=lambda item: item[0].st_mtime):
            if total <= budget:
                break
            path.unlink(missing_ok=True)
            total -= stat.st_size
            removed += 1
        return removed


def _restore(value, dtype: str | None):
    if isinstance(value, torch.Tensor) and dtype is not None:
        return value.to(getattr(torch, dtype.removeprefix("torch.")))
    return value
