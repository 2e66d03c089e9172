"""A backbone wrapper for tests that counts how often each distinct frame is encoded."""

from __future__ import annotations

from collections import Counter

from medsam2.engine.feature_cache import frame_digest


class CountingBackbone:
    """Forwards to ``inner``; ``calls[frame_digest(frame)]`` is how often ``frame`` was given to ``encode``."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.input_size, self.device = inner, inner.name, inner.input_size, inner.device
        self.plan, self.checkpoint = inner.plan, inner.checkpoint
        self.calls: Counter[str] = Counter()

    def encode(self, frames):
        self.calls.update(frame_digest(f) for f in frames)
        return self.inner.encode(frames)

    def frame_geometry(self, height, width):
        return self.inner.frame_geometry(height, width)

    def decode(self, features, **prompt):
        return self.inner.decode(features, **prompt)
