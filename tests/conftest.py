"""Shared fixtures: one LiteMedSAM backbone whose encoder results are cached for the whole
session (the encoder costs about 2.5 s per slice on these CPUs)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lite_backbone():
    from medsam2.backbones.litemedsam import LiteMedSAMBackbone

    return LiteMedSAMBackbone()


@pytest.fixture(scope="session")
def backbone(lite_backbone):
    from medsam2.backbones.cache import CachedBackbone

    return CachedBackbone(lite_backbone)
