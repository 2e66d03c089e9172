"""One-prompt segmentation on real data (../shared/data): HC18 fetal heads from image 000, chest
X-ray lungs from image 1, and CT liver -> MR liver (reported only); and each bad input the issue
names. Thresholds are measured values with a small margin (2026-11-29, OpenVINO fp32, 2 cores):
HC18 mean 0.746 (pasted mask 0.357, whole-image box 0.433); CXR 0.972, 0.976, 0.978."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medsam2 import Segmenter, load_volume
from medsam2.cli import main
from medsam2.engine.feature_cache import frame_digest
from medsam2.engine.oneprompt.run import _windowed, support_from_arrays
from medsam2.evaluation.metrics import dice
from medsam2.evaluation.protocols import middle_slice_box
from tests.counting import CountingBackbone
from tests.shared_data import shared


def annotation(path) -> np.ndarray:
    array = np.asarray(Image.open(path))
    return (array[..., 0] if array.ndim == 3 else array) > 127


def test_hc18_one_support_segments_the_other_39(backbone, capsys):
    folder = shared("hc18_fetal_head")
    support = load_volume(folder / "000_HC.png")
    queries = [folder / f"{i:03d}_HC.png" for i in range(1, 40)]
    truths = [annotation(folder / f"{i:03d}_HC_Annotation.png") for i in range(1, 40)]
    segmenter = Segmenter(backbone=backbone)
    result = segmenter.one_prompt(*support_from_arrays(support, annotation(folder / "000_HC_Annotation.png"), "000"), queries)
    ours = [dice(q.labels[0] > 0, t) for q, t in zip(result.queries, truths)]

    # the two simple baselines, on the same images
    support_mask = Image.fromarray(annotation(folder / "000_HC_Annotation.png").astype(np.uint8) * 255)
    pasted = [dice(np.asarray(support_mask.resize(t.shape[::-1])) > 127, t) for t in truths]
    whole = []
    for path, truth in zip(queries, truths):
        features = backbone.encode([_windowed(load_volume(path), "auto")[0]])[0]
        box = features.geometry.box_to_model((0, 0, truth.shape[1], truth.shape[0]))
        probability = features.geometry.model_to_frame((backbone.decode(features, box=box).logits > 0).float())
        whole.append(dice(probability.numpy() > 0.5, truth))
    with capsys.disabled():
        print(f"\nHC18 one-prompt: mean {np.mean(ours):.3f}, worst {np.min(ours):.3f}; pasted mask {np.mean(pasted):.3f}, "
              f"whole-image box {np.mean(whole):.3f}; admitted {sum(q.admitted for q in result.queries)} of 39")
    assert np.mean(ours) >= 0.72
    assert np.mean(ours) > np.mean(pasted) + 0.3 and np.mean(ours) > np.mean(whole) + 0.25
    assert len(result.order) == 39 and set(result.order) == {q.name for q in result.queries}
    assert all(q.support == "000" for q in result.queries)


def test_cxr_lungs_from_the_command_line(tmp_path, capsys):
    folder = shared("cxr_lung_demo4")
    out = tmp_path / "lungs"
    code = main(["oneprompt", "--support", str(folder / "1.jpg"), "--support-mask", str(folder / "1-mask.png"),
                 str(folder / "2.jpg"), str(folder / "3.jpg"), str(folder / "4.jpg"), "-o", str(out), "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["2.png", "3.png", "4.png", "overview.png", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert [q["name"] for q in report["queries"]] == ["2.jpg", "3.jpg", "4.jpg"]
    scores = []
    for i in (2, 3, 4):
        mask = np.asarray(Image.open(out / f"{i}.png"))
        assert set(np.unique(mask)) <= {0, 255} and mask.shape == (512, 512)
        scores.append(dice(mask > 127, annotation(folder / f"{i}-mask.png")))
    with capsys.disabled():
        print(f"\nCXR one-prompt Dice: {[round(s, 3) for s in scores]}")
    assert min(scores) >= 0.95


def test_ct_liver_to_mr_runs_and_reports(backbone, capsys):
    data = shared("totalseg_example")
    ct = load_volume(data / "example_ct_sm.nii.gz")
    liver = load_volume(data / "example_seg.nii.gz").array == 5
    one_slice = np.zeros_like(liver)
    z = middle_slice_box(liver).frame
    one_slice[z] = liver[z]
    mr = load_volume(data / "example_mr_sm.nii.gz")
    reference = load_volume(data / "example_seg_mr.nii.gz").array == 5
    counting = CountingBackbone(backbone)
    result = Segmenter(backbone=counting).one_prompt(*support_from_arrays(ct, one_slice, "ct"), [mr])
    query = result.queries[0]
    assert query.labels.shape == mr.shape and query.located_slice is not None and query.error is None
    # the slices searched for the liver are not encoded again when it is propagated through the MR
    mr_frames = [frame_digest(frame) for frame in _windowed(mr, "auto")]
    assert all(counting.calls[d] == 1 for d in mr_frames), [counting.calls[d] for d in mr_frames]
    with capsys.disabled():
        print(f"\nCT liver -> MR liver (cross-modality, no threshold): Dice {dice(query.labels > 0, reference):.3f}, "
              f"confidence {query.confidence:.2f}, located on slice {query.located_slice}")


@pytest.fixture()
def cxr():
    return shared("cxr_lung_demo4")


def run(args, capsys):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def test_support_without_prompt(cxr, tmp_path, capsys):
    code, err = run(["oneprompt", "--support", cxr / "1.jpg", cxr / "2.jpg", "-o", tmp_path / "o"], capsys)
    assert code == 2 and "support prompts" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_empty_support_mask(cxr, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(empty)
    code, err = run(["oneprompt", "--support", cxr / "1.jpg", "--support-mask", empty, cxr / "2.jpg", "-o", tmp_path / "o"], capsys)
    assert code == 2 and "empty" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_support_mask_of_another_size(cxr, tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray(np.full((100, 120), 255, np.uint8)).save(small)
    code, err = run(["oneprompt", "--support", cxr / "1.jpg", "--support-mask", small, cxr / "2.jpg", "-o", tmp_path / "o"], capsys)
    assert code != 0 and "size" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_unreadable_query_is_reported_and_the_others_go_on(cxr, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "o"
    code, err = run(["oneprompt", "--support", cxr / "1.jpg", "--support-mask", cxr / "1-mask.png", broken, cxr / "2.jpg",
                     "-o", out, "--quiet"], capsys)
    assert code == 1 and "broken.png" in err.splitlines()[-1]
    assert (out / "2.png").is_file() and not (out / "broken.png").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["queries"][0]["error"] and report["queries"][1]["error"] is None


def test_output_folder_not_empty(cxr, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run(["oneprompt", "--support", cxr / "1.jpg", "--support-mask", cxr / "1-mask.png", cxr / "2.jpg", "-o", out], capsys)
    assert code != 0 and "--overwrite" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
