"""Backbone wrappers that avoid encoding a frame twice: :class:`CachedBackbone` keeps every frame it
encodes (runs that segment the same frames several times: several methods on one case in
``evaluate``, a test session); :class:`SeededBackbone` serves features encoded earlier for a few
frames and keeps nothing new (a one-prompt query volume, whose searched slices are not encoded
again when the structure is propagated through it)."""

from __future__ import annotations

import hashlib

import numpy as np

from medsam2.backbones.base import Backbone, FrameFeatures, Prediction


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
        self.checkpoint = getattr(inner, "checkpoint", None)
        self.plan = getattr(inner, "plan", None)

    def frame_geometry(self, height: int, width: int):
        return self.inner.frame_geometry(height, width)

    def decode(self, features: FrameFeatures, box=None, points=None, point_labels=None) -> Prediction:
        return self.inner.decode(features, box=box, points=points, point_labels=point_labels)


class CachedBackbone(_BackboneWrapper):
    """Wraps a backbone; ``encode`` returns stored features for a frame it has seen (same bytes
    and shape). ``clear()`` drops them: the cache grows with the distinct frames encoded."""

    def __init__(self, inner: Backbone) -> None:
        super().__init__(inner)
        self._features: dict[str, FrameFeatures] = {}
        self.encoded = 0

    def encode(self, frames: list[np.ndarray]) -> list[FrameFeatures]:
        out = []
        for frame in frames:
            digest = frame_digest(frame)
            if digest not in self._features:
                self._features[digest] = self.inner.encode([np.ascontiguousarray(frame)])[0]
                self.encoded += 1
            out.append(self._features[digest])
        return out

    def clear(self) -> None:
        self._features.clear()


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
