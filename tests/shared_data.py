"""Where the real data live: ../shared/data beside the repository (MEDSAM2_SHARED_DATA overrides)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSAM2_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """Path of a file in the shared data; skips the test (saying where it looked) when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set MEDSAM2_SHARED_DATA)")
    return path


def hc18_plain(root: Path, indices) -> Path:
    """HC18 images ``indices`` in the plain images/ + labels/ layout under ``root`` (names 000.png
    ...; heads are 255), as symbolic links to the shared files."""
    source = shared("hc18_fetal_head")
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in indices:
        os.symlink(source / f"{i:03d}_HC.png", root / "images" / f"{i:03d}.png")
        os.symlink(source / f"{i:03d}_HC_Annotation.png", root / "labels" / f"{i:03d}.png")
    return root
