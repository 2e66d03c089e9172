"""Where the real data live: ../shared/data beside the repository (MEDSAM2_SHARED_DATA overrides)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


#: the voxelmorph scan's direction (row-major, LPS): its array axes are (L-R, S-I, A-P) at about
#: 1 mm, so the image's x runs A-P, y S-I and z L-R (without it, "axial" would slice sagittally)
VOXELMORPH_DIRECTION = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def voxelmorph_brain(root: Path, labels: tuple[int, ...]) -> tuple[Path, Path]:
    """The voxelmorph brain MRI and its FreeSurfer labels ``labels`` (the others set to 0) as
    NIfTI files under ``root``: (image, label map)."""
    import SimpleITK as sitk

    data = np.load(shared("voxelmorph_brain_aseg", "test_scan.npz"))
    seg = np.where(np.isin(data["seg"], labels), data["seg"], 0).astype(np.uint8)
    paths = root / "brain.nii.gz", root / "brain_labels.nii.gz"
    for array, path in zip((data["vol"].astype(np.float32), seg), paths):
        image = sitk.GetImageFromArray(array)
        image.SetDirection(VOXELMORPH_DIRECTION)
        sitk.WriteImage(image, str(path))
    return paths
