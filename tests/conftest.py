"""Shared fixtures: the real data in ../shared/data and one LiteMedSAM backbone whose encoder
results are memoised for the whole session (the encoder costs about 1-3 s per slice on a CPU)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest


class MemoisedBackbone:
    """Wraps a backbone; encodes each distinct frame once per test session."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.input_size = inner.input_size
        self.device = inner.device
        self.checkpoint = inner.checkpoint
        self._cache: dict[str, object] = {}
        self.encoded = 0

    def encode(self, frames):
        out = []
        for frame in frames:
            digest = hashlib.sha1(np.ascontiguousarray(frame).tobytes() + str(frame.shape).encode()).hexdigest()
            if digest not in self._cache:
                self._cache[digest] = self.inner.encode([frame])[0]
                self.encoded += 1
            out.append(self._cache[digest])
        return out

    def decode(self, features, box=None, points=None, point_labels=None):
        return self.inner.decode(features, box=box, points=points, point_labels=point_labels)


@pytest.fixture(scope="session")
def lite_backbone():
    from medsam2.backbones.litemedsam import LiteMedSAMBackbone

    return LiteMedSAMBackbone()


@pytest.fixture(scope="session")
def backbone(lite_backbone):
    return MemoisedBackbone(lite_backbone)
