"""A label map opened onto a session (Session.open_labels): shown exactly as it is, corrected as
added evidence (its other slices kept, what it left empty filled), erased, undone; bad maps refused."""

from __future__ import annotations

import numpy as np
import pytest

from medsam2 import PromptError, Segmenter
from medsam2.evaluation.metrics import dice
from tests.counting import CountingBackbone
from tests.engine.test_session import ct  # noqa: F401,F811  (the bundled CT and its labels: a fixture)
from tests.engine.test_session import reference_box as box_of

KIDNEY, SPLEEN = 3, 1


def test_an_opened_map_is_shown_voxel_for_voxel_without_the_model(backbone, ct):  # noqa: F811
    volume, reference = ct
    counting = CountingBackbone(backbone)
    session = Segmenter(backbone=counting).open(volume)
    kept = np.where(np.isin(reference, (SPLEEN, KIDNEY)), reference, 0)
    assert session.open_labels(kept, names={KIDNEY: "kidney_left"}) == [SPLEEN, KIDNEY]
    result = session.result()
    assert np.array_equal(result.labels, kept)  # exact, not the model's 256 x 256 rendering
    assert sum(counting.calls.values()) == 0  # nothing encoded, nothing decoded
    kidney = next(o for o in result.report.objects if o.label == KIDNEY)
    assert kidney.name == "kidney_left" and kidney.mean_confidence == 1.0
    assert kidney.slices == sorted(np.flatnonzero((kept == KIDNEY).any(axis=(1, 2))).tolist())
    session.undo()
    assert session.labels == []


def test_a_correction_beyond_an_opened_end_fills_the_gap_and_keeps_the_opened_slices(backbone, ct):  # noqa: F811
    volume, reference = ct
    truth = reference == KIDNEY  # slices 0-22
    last_week = np.where(truth & (np.arange(truth.shape[0]) >= 8)[:, None, None], KIDNEY, 0).astype(np.uint8)
    session = Segmenter(backbone=backbone).open(volume)
    session.open_labels(last_week)
    before = dice(session.result().labels == KIDNEY, truth)
    summary = session.correct(KIDNEY, slice=3, box=box_of(truth[3]))
    labels = session.result().labels == KIDNEY
    assert np.array_equal(labels[8:], last_week[8:] == KIDNEY)  # every opened slice as it was
    assert all(labels[f].any() for f in range(3, 8))  # the correction and the gap up to the opened end
    assert summary.removed_slices == []
    after = dice(labels, truth)
    assert after > before + 0.05, (before, after)


def test_erase_on_an_opened_slice_removes_and_undo_restores(backbone, ct):  # noqa: F811
    volume, reference = ct
    kidney = np.where(reference == KIDNEY, KIDNEY, 0).astype(np.uint8)
    session = Segmenter(backbone=backbone).open(volume)
    session.open_labels(kidney)
    anchor = session.prompted_slices(KIDNEY)[0]  # the largest slice: the object is anchored there
    summary = session.correct(KIDNEY, slice=anchor, erase=kidney[anchor] > 0)
    assert summary.removed_slices == [anchor]  # the other opened slices did not come from it
    labels = session.result().labels
    assert not (labels[anchor] == KIDNEY).any()
    assert np.array_equal(np.delete(labels, anchor, axis=0), np.delete(kidney, anchor, axis=0))
    assert session.prompted_slices(KIDNEY) != [anchor]  # anchored on another opened slice
    session.undo()
    assert np.array_equal(session.result().labels, kidney)


def test_bad_label_maps_are_refused_and_change_nothing(backbone, ct):  # noqa: F811
    volume, reference = ct
    session = Segmenter(backbone=backbone).open(volume)
    cases = {
        "voxels (z, y, x)": reference[:-1],
        "no structure": np.zeros_like(reference),
        "fractional": (reference == KIDNEY) * 1.5,
        "label -1": -(reference == KIDNEY).astype(np.int16),
    }
    for message, labels in cases.items():
        with pytest.raises(PromptError, match=message.replace("(", r"\(").replace(")", r"\)")):
            session.open_labels(labels)
    assert session.labels == []
    session.open_labels(np.where(reference == KIDNEY, KIDNEY, 0))
    with pytest.raises(PromptError, match="label 3 is already in the session"):
        session.open_labels(np.where(reference == KIDNEY, KIDNEY, 0))
    assert session.labels == [KIDNEY]
