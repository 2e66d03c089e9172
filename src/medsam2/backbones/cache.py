"""A backbone wrapper that encodes each distinct frame once, for runs that segment the same
frames several times (several methods on one case in ``evaluate``, or a test session)."""

from __future__ import annotations

import hashlib

import numpy as np

from medsam2.backbones.base import Backbone, FrameFeatures, Prediction


class CachedBackbone:
    """Wraps a backbone; ``encode`` returns stored features for a frame it has seen (same bytes
    and shape). ``clear()`` drops them: the cache grows with the distinct frames encoded."""

    def __init__(self, inner: Backbone) -> None:
        self.inner = inner
        self.name = inner.name
        self.input_size = inner.input_size
        self.device = inner.device
        self.checkpoint = getattr(inner, "checkpoint", None)
        self.plan = getattr(inner, "plan", None)
        self._features: dict[str, FrameFeatures] = {}
        self.encoded = 0

    def encode(self, frames: list[np.ndarray]) -> list[FrameFeatures]:
        out = []
        for frame in frames:
            contiguous = np.ascontiguousarray(frame)
            digest = hashlib.sha1(contiguous.tobytes() + str(contiguous.shape).encode()).hexdigest()
            if digest not in self._features:
                self._features[digest] = self.inner.encode([contiguous])[0]
                self.encoded += 1
            out.append(self._features[digest])
        return out

    def frame_geometry(self, height: int, width: int):
        return self.inner.frame_geometry(height, width)

    def decode(self, features: FrameFeatures, box=None, points=None, point_labels=None) -> Prediction:
        return self.inner.decode(features, box=box, points=points, point_labels=point_labels)

    def clear(self) -> None:
        self._features.clear()
