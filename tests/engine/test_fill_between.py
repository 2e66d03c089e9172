"""*Fill between slices* on the bundled CT: organs painted on two slices six apart get the five
slices between them by shape-based interpolation (measured mean slice Dice: spleen 0.906, left
kidney 0.897, liver 0.932, stomach 0.955), the painted slices stay exact, an object's own gaps
are filled and nothing else moves, and undo takes it back."""

from __future__ import annotations

import numpy as np
import pytest

from medsam2 import PromptError, Segmenter, load_volume
from medsam2.cli.demo import sample_paths
from medsam2.engine.fill_between import interpolate_gaps
from medsam2.evaluation.metrics import dice
from medsam2.prompts.types import MaskPrompt

SPLEEN, KIDNEY = 1, 3
#: the measured means above less a margin (the interpolation does not use the model: no CPU drift)
MIN_SLICE_DICE = 0.85


@pytest.fixture(scope="module")
def ct():
    ct_path, seg_path = sample_paths()
    return load_volume(ct_path), load_volume(seg_path).array


@pytest.mark.parametrize("label", [SPLEEN, KIDNEY])
def test_two_painted_slices_fill_the_five_between(backbone, ct, label):
    volume, reference = ct
    truth = reference == label
    session = Segmenter(backbone=backbone).open(volume, axis="axial")
    low, high = 2, 8
    session.add_prompts(label, masks=[MaskPrompt(low, truth[low]), MaskPrompt(high, truth[high])])
    filled = session.fill_between(label)
    assert filled.filled_slices == [3, 4, 5, 6, 7] and filled.from_slices == [low, high]
    labels = session.result(propagate_pending=False, sanity=False).labels == label
    assert np.array_equal(labels[low], truth[low]) and np.array_equal(labels[high], truth[high])  # the painted slices exactly
    assert np.mean([dice(labels[k], truth[k]) for k in range(low + 1, high)]) >= MIN_SLICE_DICE
    assert not labels[:low].any() and not labels[high + 1 :].any()
    session.undo()
    assert session.pending_labels() == [label]


def test_an_objects_own_gap_is_filled_and_nothing_else_moves(backbone, ct):
    volume, reference = ct
    kept = np.where(reference == SPLEEN, SPLEEN, 0).astype(np.uint8)
    kept[10:13] = 0  # three slices missing in the middle
    session = Segmenter(backbone=backbone).open(volume, axis="axial")
    session.open_labels(kept)
    assert session.fill_between(SPLEEN).filled_slices == [10, 11, 12]
    labels = session.result(propagate_pending=False, sanity=False).labels
    untouched = [k for k in range(len(kept)) if k not in (10, 11, 12)]
    assert np.array_equal(labels[untouched], kept[untouched])
    assert all(dice(labels[k] == SPLEEN, reference[k] == SPLEEN) >= MIN_SLICE_DICE for k in (10, 11, 12))


def test_nothing_to_fill_is_one_error(backbone, ct):
    volume, reference = ct
    session = Segmenter(backbone=backbone).open(volume, axis="axial")
    session.add_prompts(SPLEEN, masks=[MaskPrompt(4, reference[4] == SPLEEN)])
    with pytest.raises(PromptError, match="two or more slices"):
        session.fill_between(SPLEEN)
    session.add_prompts(SPLEEN, masks=[MaskPrompt(5, reference[5] == SPLEEN)])
    with pytest.raises(PromptError, match="no empty slice"):
        session.fill_between(SPLEEN)
    with pytest.raises(PromptError, match="no object with label 7"):
        session.fill_between(7)
    assert session.pending_labels() == [SPLEEN]


def test_interpolation_between_two_discs_is_a_disc_between():
    """The zero level of blended signed distances: concentric discs of radius 4 and 10 four
    slices apart give radii 5.5, 7 and 8.5 between (areas within 10%)."""
    yy, xx = np.mgrid[:40, :40]
    disc = lambda radius: (yy - 20) ** 2 + (xx - 20) ** 2 <= radius**2  # noqa: E731
    between = interpolate_gaps({0: disc(4), 4: disc(10)}, (1.0, 1.0))
    assert sorted(between) == [1, 2, 3]
    for frame, radius in ((1, 5.5), (2, 7.0), (3, 8.5)):
        assert abs(between[frame].sum() - np.pi * radius**2) < 0.1 * np.pi * radius**2
        assert np.array_equal(between[frame], between[frame].T)  # round, centred where the discs are
