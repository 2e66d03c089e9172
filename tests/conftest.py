"""Shared fixtures: one LiteMedSAM backbone whose encoder results are cached for the whole
session (the encoder costs about 1 s per slice on these CPUs), and a private cache folder for
converted models so that tests never write to the user's cache."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
import SimpleITK as sitk

#: whole test modules that run a model on real scans (each test seconds to a minute)
SLOW_MODULES = {
    "test_accuracy", "test_adapt", "test_corrections", "test_multiview", "test_oneprompt", "test_small_structures",
    "test_sam2", "test_runtime", "test_train", "test_train_sam2", "test_batch", "test_serve_browser", "test_dicomweb",
    "test_dicom_outputs", "test_segment", "test_sanity", "test_evaluate", "test_project_training",
}
#: fixtures that load LiteMedSAM: a test that uses one (directly or through another) is slow
MODEL_FIXTURES = {"lite_backbone", "backbone"}


def pytest_collection_modifyitems(config, items):
    """``slow`` on the tests that load a model (``make test-quick`` leaves them out)."""
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or MODEL_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: loads a model (left out by `make test-quick`)")
    if "MEDSAM2_CACHE_DIR" not in os.environ:
        os.environ["MEDSAM2_CACHE_DIR"] = tempfile.mkdtemp(prefix="medsam2-test-cache-")
    # the local Ray instance of the batch tests listens and talks on 127.0.0.1 only (read when ray
    # is imported; medsam2.batch.pool sets the same for `medsam2 batch --ray`)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def lite_backbone():
    from medsam2.backbones.litemedsam import LiteMedSAMBackbone

    return LiteMedSAMBackbone()


@pytest.fixture(scope="session")
def backbone(lite_backbone):
    from medsam2.engine.feature_cache import CachedBackbone

    return CachedBackbone(lite_backbone)


@pytest.fixture(scope="session")
def nnunet_dataset(tmp_path_factory):
    """Two cases (slices 10-17 and 12-19 of the bundled CT), spleen=1 and left kidney=2,
    one image without a label and one whose label has another shape."""
    root = tmp_path_factory.mktemp("Dataset001_Tiny")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    from medsam2.cli.demo import sample_paths

    ct_path, seg_path = sample_paths()
    ct, seg = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(seg_path))
    for index, start in enumerate((10, 12)):
        labels = sitk.GetArrayFromImage(seg[:, :, start : start + 8])
        remapped = np.where(labels == 1, 1, np.where(labels == 3, 2, 0)).astype(np.uint8)
        out = sitk.GetImageFromArray(remapped)
        out.CopyInformation(seg[:, :, start : start + 8])
        sitk.WriteImage(ct[:, :, start : start + 8], str(root / "imagesTr" / f"tiny_{index:03d}_0000.nii.gz"))
        sitk.WriteImage(out, str(root / "labelsTr" / f"tiny_{index:03d}.nii.gz"))
    sitk.WriteImage(ct[:, :, 0:4], str(root / "imagesTr" / "tiny_900_0000.nii.gz"))  # no label
    sitk.WriteImage(ct[:, :, 0:4], str(root / "imagesTr" / "tiny_901_0000.nii.gz"))
    sitk.WriteImage(seg[:, :, 0:5], str(root / "labelsTr" / "tiny_901.nii.gz"))  # other shape
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "spleen": 1, "kidney_left": 2}}))
    return root
