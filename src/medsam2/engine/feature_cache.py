"""Backbone wrappers that avoid encoding a frame twice: :class:`CachedBackbone` keeps the frames it
encodes (runs that segment the same frames several times: several methods on one case in
``evaluate``, an interactive session), within a memory budget, least recently used out;
:class:`SeededBackbone` serves features encoded earlier for a few frames and keeps nothing new (a
one-prompt query volume, whose searched slices are not encoded again when the structure is
propagated through it)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from medsam2.backbones.base import Backbone, FrameFeatures, Prediction
from medsam2.engine.feature_disk import FeatureFolder, as_stored
from medsam2.errors import UsageError


def frame_digest(frame: np.ndarray) -> str:
    """A key for a frame's exact content: its bytes and shape."""
    contiguous = np.ascontiguousarray(frame)
    return hashlib.sha1(contiguous.tobytes() + str(contiguous.shape).encode()).hexdigest()


class _BackboneWrapper:
    """Forwards everything but ``encode`` to the wrapped backbone (``inner``)."""

    def __init__(self, inner: Backbone) -> None:
        self.inner = inner
        self.name = inner.name
        self.input_size = inner.input_size
        self.device = inner.device
        self.checkpoint = inner.checkpoint
        self.plan = inner.plan

    def frame_geometry(self, height: int, width: int):
        return self.inner.frame_geometry(height, width)

    def decode(self, features: FrameFeatures, box=None, points=None, point_labels=None) -> Prediction:
        return self.inner.decode(features, box=box, points=points, point_labels=point_labels)


@dataclass(frozen=True)
class CacheStats:
    """What a :class:`CachedBackbone` holds and how it served.

    Attributes:
        hits: frames served from the cache.
        misses: frames encoded (each distinct frame once while it stays in the cache).
        evictions: frames dropped to stay within the budget (least recently used first).
        frames: frames held now.
        megabytes: memory the held features take (MB = 2**20 bytes).
        budget_mb: the budget (None: unbounded).
    """

    hits: int
    misses: int
    evictions: int
    frames: int
    megabytes: float
    budget_mb: float | None


def features_nbytes(features: FrameFeatures) -> int:
    """Bytes of the tensors a FrameFeatures holds (its fields, and lists or tuples of tensors),
    each storage counted once (a view of another field's tensor adds nothing)."""
    storages: dict[int, int] = {}
    for value in vars(features).values():
        for tensor in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


class CachedBackbone(_BackboneWrapper):
    """Wraps a backbone; ``encode`` returns stored features for a frame it has seen (same bytes
    and shape), so no frame in the cache is encoded again.

    Arguments:
        inner: the backbone that encodes.
        budget_mb: most memory the stored features may take; the least recently used frames leave
            first (the frame just encoded always stays). None: unbounded (``clear()`` drops all).
        disk: a :class:`~medsam2.engine.feature_disk.FeatureFolder` of ``inner``'s features: a frame
            not in memory is read from it before it is encoded, and what is encoded is kept there
            (rounded as the disk keeps it). None: memory only.
    """

    def __init__(self, inner: Backbone, budget_mb: float | None = None, disk: FeatureFolder | None = None) -> None:
        super().__init__(inner)
        if budget_mb is not None and budget_mb <= 0:
            raise UsageError(f"the feature cache budget must be positive (got {budget_mb} MB)")
        self.budget_mb = budget_mb
        self.disk = disk
        self.disk_reads = 0
        self._features: OrderedDict[str, tuple[FrameFeatures, int]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    def encode(self, frames: list[np.ndarray]) -> list[FrameFeatures]:
        out = []
        for frame in frames:
            digest = frame_digest(frame)
            held = self._features.get(digest)
            if held is not None:
                self._features.move_to_end(digest)
                self._hits += 1
                out.append(held[0])
                continue
            features = self._from_disk(digest, frame)
            if features is None:
                features = self.inner.encode([np.ascontiguousarray(frame)])[0]
                self._misses += 1
                if self.disk is not None and self.disk.keeps(features):
                    features = as_stored(features)
                    self.disk.save(digest, features)
            size = features_nbytes(features)
            self._features[digest] = (features, size)
            self._bytes += size
            self._evict()
            out.append(features)
        return out

    def _from_disk(self, digest: str, frame: np.ndarray) -> FrameFeatures | None:
        if self.disk is None:
            return None
        features = self.disk.load(digest, self.inner, frame.shape[0], frame.shape[1])
        self.disk_reads += features is not None
        return features

    def _evict(self) -> None:
        if self.budget_mb is None:
            return
        budget = self.budget_mb * 2**20
        while self._bytes > budget and len(self._features) > 1:
            _, (_, size) = self._features.popitem(last=False)
            self._bytes -= size
            self._evictions += 1

    def stats(self) -> CacheStats:
        budget = None if self.budget_mb is None else float(self.budget_mb)
        return CacheStats(self._hits, self._misses, self._evictions, len(self._features), round(self._bytes / 2**20, 1), budget)

    def clear(self) -> None:
        self._features.clear()
        self._bytes = 0


class SeededBackbone(_BackboneWrapper):
    """Wraps a backbone; ``encode`` returns the given features for frames seen before (same bytes
    and shape as the frame they were encoded from) and encodes the others without keeping them.

    Arguments:
        inner: the backbone that encoded the seeds and encodes every other frame.
        seeds: (frame, its features) pairs, the frame as it was given to ``inner.encode``.
    """

    def __init__(self, inner: Backbone, seeds: list[tuple[np.ndarray, FrameFeatures]]) -> None:
        super().__init__(inner)
        self._seeds = {frame_digest(frame): features for frame, features in seeds}

    def encode(self, frames: list[np.ndarray]) -> list[FrameFeatures]:
        out = []
        for frame in frames:
            seeded = self._seeds.get(frame_digest(frame))
            out.append(seeded if seeded is not None else self.inner.encode([frame])[0])
        return out
