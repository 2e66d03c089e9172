"""Accuracy on real CT (TotalSegmentator example, ../shared/data): five organs, each from ONE box
on the middle slice of its extent, against an oracle that gets the reference box on every slice.

Thresholds are the issue's: each organ at least 0.90 of its oracle and the mean at least 0.93 of
the oracle mean, checked against the oracle figures quoted in the issue and against the oracle
measured here in the same run. The memory bank must not be worse on the mean than the previous
slice alone. Measured on 2026-11-29 (CPU, fp32): see the table this test prints.
"""

import numpy as np
import pytest

from medsam2 import Box, ObjectPrompts, Segmenter, load_volume
from medsam2.evaluation.metrics import dice
from medsam2.evaluation.protocols import middle_slice_box
from medsam2.io.model_input import FrameGeometry
from medsam2.io.windows import normalize_intensities
from tests.shared_data import shared

ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach"}
#: Dice with the reference box on every slice, as quoted in the issue (same weights)
ISSUE_ORACLE = {"spleen": 0.964, "kidney_right": 0.902, "kidney_left": 0.922, "liver": 0.937, "stomach": 0.908}


@pytest.fixture(scope="module")
def ct_case():
    volume = load_volume(shared("totalseg_example", "example_ct.nii.gz"))
    reference = load_volume(shared("totalseg_example", "example_seg_fast_force_split.nii.gz")).array
    return volume, reference


def one_box_prompts(reference):
    return [ObjectPrompts(label, name, boxes=[middle_slice_box(reference == label)]) for label, name in ORGANS.items()]


def oracle_dice(volume, reference, backbone):
    """The reference box on every slice of each organ (one prompt per slice)."""
    frames = normalize_intensities(volume.array, "auto").array
    geometry = FrameGeometry(volume.shape[1], volume.shape[2], backbone.input_size)
    scores = {}
    for label, name in ORGANS.items():
        truth = reference == label
        prediction = np.zeros_like(truth)
        for z in np.flatnonzero(truth.any(axis=(1, 2))):
            rows, cols = np.nonzero(truth[z])
            box = Box(int(z), cols.min(), rows.min(), cols.max(), rows.max())
            features = backbone.encode([frames[z]])[0]
            logits = backbone.decode(features, box=geometry.box_to_model(box.as_tuple())).logits
            prediction[z] = geometry.model_to_frame(logits).numpy() > 0
        scores[name] = dice(prediction, truth)
    return scores


@pytest.fixture(scope="module")
def results(ct_case, backbone):
    volume, reference = ct_case
    out = {"oracle": oracle_dice(volume, reference, backbone)}
    reports = {}
    for memory in ("confidence", "none"):
        result = Segmenter(backbone=backbone, memory=memory).segment(volume, one_box_prompts(reference))
        out[memory] = {name: dice(result.labels == label, reference == label) for label, name in ORGANS.items()}
        reports[memory] = result.report
    print("\norgan          oracle  bank    none    bank/oracle")
    for name in ORGANS.values():
        print(f"{name:<14} {out['oracle'][name]:.3f}   {out['confidence'][name]:.3f}   {out['none'][name]:.3f}   "
              f"{out['confidence'][name] / out['oracle'][name]:.3f}")
    for key in ("oracle", "confidence", "none"):
        print(f"mean {key}: {np.mean(list(out[key].values())):.4f}")
    print(f"slices encoded: {reports['confidence'].slices_encoded} of {reports['confidence'].slices_total}")
    return out, reports


def test_each_organ_reaches_ninety_percent_of_its_oracle(results):
    scores, _ = results
    for name in ORGANS.values():
        assert scores["confidence"][name] >= 0.90 * ISSUE_ORACLE[name], name
        assert scores["confidence"][name] >= 0.90 * scores["oracle"][name], name


def test_mean_reaches_ninety_three_percent_of_oracle_mean(results):
    scores, _ = results
    mean = np.mean(list(scores["confidence"].values()))
    assert mean >= 0.93 * np.mean(list(ISSUE_ORACLE.values()))
    assert mean >= 0.93 * np.mean(list(scores["oracle"].values()))


def test_memory_bank_is_not_worse_than_previous_slice_only(results):
    scores, _ = results
    assert np.mean(list(scores["confidence"].values())) >= np.mean(list(scores["none"].values()))


def test_propagation_stops_where_organs_end(results, ct_case):
    _, reports = results
    volume, reference = ct_case
    report = reports["confidence"]
    # the organs span slices 66..111 of 112: slices far below them are never encoded
    first_organ_slice = int(np.flatnonzero(np.isin(reference, list(ORGANS)).any(axis=(1, 2)))[0])
    assert report.slices_encoded <= report.slices_total - first_organ_slice + 6
    for obj in report.objects:
        extent = np.flatnonzero((reference == obj.label).any(axis=(1, 2)))
        assert obj.first_slice >= extent[0] - 4, obj.name
        assert obj.last_slice <= extent[-1] + 4, obj.name
        assert obj.prompted_slices == [int((extent[0] + extent[-1]) // 2)]
        assert 0 < obj.min_confidence <= obj.mean_confidence <= 1


def test_no_sanity_warning_on_correct_boxes(results):
    """The sanity warnings stay silent on the five organs' correct boxes (benchmarks/sanity.py)."""
    _, reports = results
    from tests.engine.test_sanity import sanity_notes

    assert sanity_notes(reports["confidence"]) == []


def test_mr_organs_with_rules_tuned_on_ct(backbone):
    """The same rules on the TotalSegmentator abdominal MR (never used for tuning): measured
    2026-12-03 mean Dice 0.764 with the bank (0.759 before the intensity stop rule), 0.727 previous
    slice only, 0.817 box every slice."""
    volume = load_volume(shared("totalseg_example", "example_mr_sm.nii.gz"))
    reference = load_volume(shared("totalseg_example", "example_seg_mr.nii.gz")).array
    means = {}
    for memory in ("confidence", "none"):
        result = Segmenter(backbone=backbone, memory=memory).segment(volume, one_box_prompts(reference))
        assert result.report.window == "percentile"
        scores = {name: dice(result.labels == label, reference == label) for label, name in ORGANS.items()}
        means[memory] = float(np.mean(list(scores.values())))
        print(f"\nMR {memory}: " + " ".join(f"{k} {v:.3f}" for k, v in scores.items()) + f" mean {means[memory]:.3f}")
    assert means["confidence"] >= 0.72
    assert means["confidence"] >= means["none"]
