"""The metric wrappers against hand-computed values and the documented empty-mask conventions."""

import math

import numpy as np

from medsam2.evaluation.metrics import dice, hd95, iou, nsd


def test_dice_and_iou_of_overlapping_squares():
    a = np.zeros((1, 10, 10), bool)
    b = np.zeros((1, 10, 10), bool)
    a[0, 0:4, 0:4] = True  # 16 voxels
    b[0, 2:6, 0:4] = True  # 16 voxels, 8 shared
    assert math.isclose(dice(a, b), 0.5, rel_tol=1e-6)
    assert math.isclose(iou(a, b), 8 / 24, rel_tol=1e-6)


def test_empty_mask_conventions():
    empty = np.zeros((2, 5, 5), bool)
    full = np.ones((2, 5, 5), bool)
    assert dice(empty, empty) == 1.0 and dice(empty, full) == 0.0
    assert math.isnan(hd95(empty, empty, (1, 1, 1))) and math.isinf(hd95(empty, full, (1, 1, 1)))
    assert nsd(empty, empty, (1, 1, 1)) == 1.0


def test_distances_use_the_spacing():
    a = np.zeros((5, 20, 20), bool)
    b = np.zeros((5, 20, 20), bool)
    a[:, 5:10, 5:10] = True
    b[:, 5:10, 8:13] = True  # shifted 3 voxels along x
    assert math.isclose(hd95(a, b, (1.0, 1.0, 2.0)), 6.0, abs_tol=0.05)
    assert nsd(a, b, (1.0, 1.0, 2.0), tolerance_mm=7.0) == 1.0
    assert nsd(a, b, (1.0, 1.0, 2.0), tolerance_mm=1.0) < 0.7
