"""Intensity windows and the resize+pad geometry with its inverse."""

import numpy as np
import pytest
import torch

from medsam2.errors import InputError, UsageError
from medsam2.io.model_input import FrameGeometry, prepare_frame
from medsam2.io.windows import choose_window, looks_like_ct, normalize_intensities


def test_ct_window_maps_level_and_width():
    hu = np.array([[-1000, -160, 40, 240, 2000]], dtype=np.int32)[None]
    out = normalize_intensities(hu, "abdomen")
    np.testing.assert_allclose(out.array[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert out.window == "abdomen"


def test_auto_window_detects_ct_and_otherwise_uses_percentiles():
    rng = np.random.default_rng(0)
    ct = rng.integers(-1024, 1500, size=(2, 8, 8)).astype(np.int16)
    assert looks_like_ct(ct, None)
    assert normalize_intensities(ct).window == "abdomen"
    mr = rng.uniform(0, 900, size=(2, 8, 8)).astype(np.float32)
    assert not looks_like_ct(mr, None)
    out = normalize_intensities(mr)
    assert out.window == "percentile" and out.array.min() == 0.0 and out.array.max() == 1.0
    assert looks_like_ct(mr, "CT")


def test_none_window_is_x_over_255():
    img = np.array([[[0, 51, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(normalize_intensities(img, "none").array[0, 0], [0, 0.2, 1.0])


def test_nan_voxels_warn_and_constant_volumes_are_refused():
    data = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
    data[0, 0, 0] = np.nan
    out = normalize_intensities(data)
    assert any("NaN" in w for w in out.warnings) and np.isfinite(out.array).all()
    choose_window(data).require_structure()  # something to segment: no error
    for empty, message in ((np.full((2, 4, 4), 7.0), "constant"), (np.full((2, 4, 4), np.nan), "no finite value")):
        window = choose_window(empty)
        assert message in window.empty
        with pytest.raises(InputError, match=message):
            window.require_structure("scan.nii.gz")


def test_unknown_window():
    with pytest.raises(UsageError, match="unknown window"):
        normalize_intensities(np.zeros((1, 2, 2)), "kidney")


def test_box_and_mask_round_trip_through_model_space():
    geometry = FrameGeometry(height=101, width=122, input_size=256)
    assert geometry.resized_shape == (212, 256)
    np.testing.assert_allclose(geometry.box_to_model((0, 0, 121, 100)), [0, 0, 256, 101 * 256 / 122], rtol=1e-5)
    mask = np.zeros((101, 122), np.float32)
    mask[20:60, 30:90] = 1
    model = geometry.frame_to_model(mask, size=256)
    assert model.shape == (256, 256) and float(model[220:].abs().sum()) == 0.0  # padding stays empty
    back = geometry.model_to_frame(model).numpy() > 0.5
    dice = 2 * (back & (mask > 0)).sum() / (back.sum() + mask.sum())
    assert dice > 0.99


def test_prepare_frame_keeps_aspect_and_pads():
    geometry = FrameGeometry(50, 100, 256)
    frame = np.linspace(0.2, 0.8, 5000, dtype=np.float32).reshape(50, 100)
    tensor = prepare_frame(frame, geometry)
    assert tensor.shape == (3, 256, 256)
    assert torch.isclose(tensor[:, :128].max(), torch.tensor(1.0), atol=1e-3)  # min-max normalised
    assert float(tensor[:, 130:].abs().max()) == 0.0  # padded rows
