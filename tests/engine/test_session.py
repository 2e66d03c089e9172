"""The interactive session on the bundled CT (30 slices): propagate once, correct, undo, the feature
cache's budget, and one clear error per bad call with the state unchanged."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medsam2 import Box, ObjectPrompts, Point, PromptError, Segmenter, UsageError, load_volume
from medsam2.cli.demo import sample_paths
from medsam2.evaluation.metrics import dice
from medsam2.evaluation.protocols import middle_slice_box
from tests.counting import CountingBackbone

SPLEEN, KIDNEY = 1, 3


@pytest.fixture(scope="module")
def ct():
    ct_path, seg_path = sample_paths()
    return load_volume(ct_path), load_volume(seg_path).array


def reference_box(mask2d) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask2d)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def opened(backbone, ct, **options):
    """A session with the spleen and the left kidney propagated from one box each."""
    volume, reference = ct
    counting = CountingBackbone(backbone)
    session = Segmenter(backbone=counting).open(volume, **options)
    assert sum(counting.calls.values()) == 0  # nothing is encoded when a session opens
    for label in (SPLEEN, KIDNEY):
        session.add(ObjectPrompts(label, boxes=[middle_slice_box(reference == label)]))
    updates = list(session.propagate())
    return session, counting, updates


def worst_slice(labels, reference, label) -> int:
    wrong = ((labels == label) != (reference == label)).reshape(len(labels), -1).sum(axis=1)
    return int(wrong.argmax())


def test_session_streams_updates_and_equals_segment(backbone, ct):
    volume, reference = ct
    session, counting, updates = opened(backbone, ct)
    assert {u.label for u in updates} == {SPLEEN, KIDNEY}
    assert [u.done for u in updates] == list(range(1, len(updates) + 1))
    assert all(u.done <= u.total == 2 * volume.shape[0] for u in updates)
    result = session.result()
    prompts = [ObjectPrompts(label, boxes=[middle_slice_box(reference == label)]) for label in (SPLEEN, KIDNEY)]
    assert np.array_equal(result.labels, Segmenter(backbone=backbone).segment(volume, prompts).labels)
    # each slice reached was encoded once, and the report counts them
    assert set(counting.calls.values()) == {1}
    assert result.report.slices_encoded == len(counting.calls) == result.report.feature_cache.misses
    assert list(session.propagate()) == []  # nothing pending


def test_correction_redecodes_only_where_the_answer_changes(backbone, ct):
    volume, reference = ct
    session, counting, _ = opened(backbone, ct)
    before = session.result().labels
    encodes = sum(counting.calls.values())
    target = worst_slice(before, reference, SPLEEN)
    summary = session.correct(SPLEEN, target, box=reference_box(reference[target] == SPLEEN))
    after = session.result().labels
    assert sum(counting.calls.values()) == encodes and summary.encoded_slices == 0  # every slice came from the cache
    touched = {target, *summary.decoded_slices, *summary.removed_slices}
    spleen_slices = set(np.flatnonzero((before == SPLEEN).reshape(len(before), -1).any(axis=1)))
    assert len(summary.decoded_slices) < len(spleen_slices)  # not the whole organ again
    # decoded slices form one run on each side of the corrected slice
    for side in (1, -1):
        walked = [f for f in summary.decoded_slices if (f - target) * side > 0]
        assert walked == [target + side * (i + 1) for i in range(len(walked))]
    untouched = [z for z in range(len(before)) if z not in touched]
    assert np.array_equal(before[untouched] == SPLEEN, after[untouched] == SPLEEN)
    assert dice(after[target] == SPLEEN, reference[target] == SPLEEN) > dice(before[target] == SPLEEN, reference[target] == SPLEEN)
    report = session.result().report
    assert target in report.objects[0].prompted_slices and report.corrections == 1


def test_undo_restores_the_previous_labels_exactly(backbone, ct):
    _, reference = ct
    session, _, _ = opened(backbone, ct)
    before = session.result().labels
    target = worst_slice(before, reference, KIDNEY)
    session.correct(KIDNEY, target, box=reference_box(reference[target] == KIDNEY))
    assert not np.array_equal(session.result().labels, before)
    assert session.result().report.corrections == 1
    session.undo()
    assert np.array_equal(session.result().labels, before)
    assert session.result().report.corrections == 0  # the undone correction is not counted
    session.undo()  # the propagation
    session.undo()  # the kidney
    assert session.labels == [SPLEEN]
    session.undo()
    assert session.labels == []
    with pytest.raises(UsageError, match="nothing to undo"):
        session.undo()


def test_redo_makes_the_undone_steps_again_exactly(backbone, ct):
    _, reference = ct
    session, _, _ = opened(backbone, ct)
    before = session.result().labels
    target = worst_slice(before, reference, KIDNEY)
    session.correct(KIDNEY, target, box=reference_box(reference[target] == KIDNEY))
    corrected = session.result().labels
    session.undo()
    session.undo()  # the propagation too
    assert session.pending_labels() == [SPLEEN, KIDNEY]
    session.redo()
    assert np.array_equal(session.result(propagate_pending=False).labels, before)
    session.redo()
    assert np.array_equal(session.result().labels, corrected) and session.result().report.corrections == 1
    with pytest.raises(UsageError, match="nothing to redo"):
        session.redo()
    session.undo()
    session.remove(SPLEEN)  # a new step forgets what was undone
    with pytest.raises(UsageError, match="nothing to redo"):
        session.redo()


def test_remove_takes_one_object_out_and_undo_brings_it_back(backbone, ct):
    session, _, _ = opened(backbone, ct)
    both = session.result().labels
    session.remove(KIDNEY)
    assert session.labels == [SPLEEN]
    without = session.result().labels
    assert not (without == KIDNEY).any() and (without == SPLEEN)[both == SPLEEN].all()
    with pytest.raises(PromptError, match="no object with label 3"):
        session.remove(KIDNEY)
    session.undo()
    assert np.array_equal(session.result().labels, both)


def test_feature_cache_stays_within_its_budget(backbone, ct):
    session, counting, _ = opened(backbone, ct, feature_cache_mb=20)  # about three LiteMedSAM slices
    stats = session.cache_stats()
    assert stats.megabytes <= 20 and stats.frames <= 3 and stats.evictions > 0
    assert stats.misses == sum(counting.calls.values())
    reference = ct[1]
    target = middle_slice_box(reference == SPLEEN).frame + 2
    summary = session.correct(SPLEEN, target, box=reference_box(reference[target] == SPLEEN))
    assert summary.encoded_slices >= 1  # evicted slices are encoded again, never served stale
    assert session.cache_stats().megabytes <= 20


def test_erase_and_background_clicks_shrink_and_a_box_creates(backbone, ct):
    volume, reference = ct
    session, _, _ = opened(backbone, ct)
    labels = session.result().labels
    kidney_slices = np.flatnonzero((labels == KIDNEY).reshape(len(labels), -1).any(axis=1))
    middle = int(kidney_slices[len(kidney_slices) // 2])
    current = labels[middle] == KIDNEY
    rows, cols = np.nonzero(current)
    erase = np.zeros_like(current)
    erase[:, : int(np.median(cols))] = True  # the left half of the kidney
    session.correct(KIDNEY, middle, erase=erase)
    erased = session.result().labels[middle] == KIDNEY
    assert np.array_equal(erased, current & ~erase)

    # a background click inside the spleen's mask shrinks it, and the clicked voxel is background
    spleen = session.result().labels == SPLEEN
    z = int(np.flatnonzero(spleen.reshape(len(spleen), -1).any(axis=1))[3])
    rows, cols = np.nonzero(spleen[z])
    top = (int(cols[rows == rows.min()].mean()), int(rows.min()) + 2)
    session.correct(SPLEEN, z, points=[(top[0], top[1], 0)])
    clicked = session.result().labels[z] == SPLEEN
    assert clicked.sum() < spleen[z].sum() and not clicked[top[1], top[0]]

    # a box on the slice past the kidney's end creates it there
    z = int(kidney_slices[-1]) + 1
    assert z < volume.shape[0] and not (session.result().labels[z] == KIDNEY).any()
    source = reference[z] == KIDNEY if (reference[z] == KIDNEY).any() else labels[int(kidney_slices[-1])] == KIDNEY
    session.correct(KIDNEY, z, box=reference_box(source))
    assert (session.result().labels[z] == KIDNEY).any()


def test_bad_calls_give_one_error_each_and_change_nothing(backbone, ct):
    volume, _ = ct
    session, _, _ = opened(backbone, ct)
    before = session.result().labels
    n, rows, cols = volume.shape
    empty = np.zeros((rows, cols), bool)
    nowhere = np.zeros((rows, cols), bool)
    nowhere[0, 0] = True
    bad = [
        (dict(label=9, slice=5, box=(1, 1, 9, 9)), "no object with label 9"),
        (dict(label=SPLEEN, slice=n, box=(1, 1, 9, 9)), "out of range"),
        (dict(label=SPLEEN, slice=-1, box=(1, 1, 9, 9)), "out of range"),
        (dict(label=SPLEEN, slice=5, box=(1, 1, cols + 5, 9)), "outside the image"),
        (dict(label=SPLEEN, slice=5, box=(1, 1, 9)), "x0, y0, x1, y1"),
        (dict(label=SPLEEN, slice=5, mask=empty), "is empty"),
        (dict(label=SPLEEN, slice=5, erase=empty), "is empty"),
        (dict(label=SPLEEN, slice=5, mask=np.ones((3, 3), bool)), "expected"),
        (dict(label=SPLEEN, slice=5, erase=nowhere), "nothing to erase"),
        (dict(label=SPLEEN, slice=5, points=[(cols + 1, 3)]), "outside the image"),
        (dict(label=SPLEEN, slice=5, points=[(3, 3, 7)]), "(x, y, 1|0)"),
        (dict(label=SPLEEN, slice=5), "exactly one"),
        (dict(label=SPLEEN, slice=5, box=(1, 1, 9, 9), mask=nowhere), "exactly one"),
    ]
    for call, message in bad:
        with pytest.raises(PromptError, match=re.escape(message)):
            session.correct(**call)
    with pytest.raises(PromptError, match="already in the session"):
        session.add(ObjectPrompts(SPLEEN, boxes=[Box(5, 1, 1, 9, 9)]))
    with pytest.raises(PromptError, match="labels are integers from 1 to 65535"):
        session.add(ObjectPrompts(0, points=[Point(5, 3, 3)]))
    assert np.array_equal(session.result().labels, before)
    assert session.result().report.corrections == 0


def test_settings_of_the_other_backbone_are_refused(backbone):
    from medsam2.engine.sam2_step import Sam2TrackingSettings

    with pytest.raises(UsageError, match="takes PropagationSettings, not Sam2TrackingSettings"):
        Segmenter(backbone=backbone, settings=Sam2TrackingSettings())
    with pytest.raises(UsageError, match="unknown memory 'lru'"):
        Segmenter(backbone=backbone, memory="lru")
