"""Shared fixtures: one LiteMedSAM backbone whose encoder results are cached for the whole
session (the encoder costs about 1 s per slice on these CPUs), and a private cache folder for
converted models so that tests never write to the user's cache."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config):
    if "MEDSAM2_CACHE_DIR" not in os.environ:
        os.environ["MEDSAM2_CACHE_DIR"] = tempfile.mkdtemp(prefix="medsam2-test-cache-")


@pytest.fixture(scope="session")
def lite_backbone():
    from medsam2.backbones.litemedsam import LiteMedSAMBackbone

    return LiteMedSAMBackbone()


@pytest.fixture(scope="session")
def backbone(lite_backbone):
    from medsam2.engine.feature_cache import CachedBackbone

    return CachedBackbone(lite_backbone)
