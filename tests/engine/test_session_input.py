"""What the model sees: a session on the bundled CT that switches its model input to another
"sequence" (a crop of the CT with other intensities, resampled onto the scan's grid) answers
exactly as a session opened on that image, and exactly as before once switched back; the scan
stays the session's geometry; an image off the grid is one error."""

from __future__ import annotations

import numpy as np
import pytest

from medsam2 import PromptError, Segmenter, load_volume
from medsam2.cli.demo import sample_paths
from medsam2.evaluation.protocols import middle_slice_box
from medsam2.io.resample import resample_onto
from tests.io.test_resample import other_sequence

ORGANS = (1, 3)  # spleen, left kidney


def _segment(session, reference) -> np.ndarray:
    for label in ORGANS:
        session.add_prompts(label, boxes=[middle_slice_box(reference == label)])
    labels = session.result(sanity=False).labels
    for label in ORGANS:
        session.remove(label)
    return labels


def test_the_model_sees_the_other_image_and_the_scan_again(backbone):
    ct_path, seg_path = sample_paths()
    scan, reference = load_volume(ct_path), load_volume(seg_path).array
    second, _ = resample_onto(other_sequence(ct_path), scan)
    segmenter = Segmenter(backbone=backbone)
    alone = _segment(segmenter.open(second), reference)
    session = segmenter.open(scan)
    on_scan = _segment(session, reference)
    session.use_image(second)
    assert session.model_image is second and session.volume is scan
    from_second = _segment(session, reference)
    assert np.array_equal(from_second, alone)
    assert not np.array_equal(from_second, on_scan)  # other intensities: another window, other answers
    session.use_image(None)
    assert session.model_image is None
    assert np.array_equal(_segment(session, reference), on_scan)
    with pytest.raises(PromptError, match="not on the scan's grid"):
        session.use_image(other_sequence(ct_path))


def test_the_scan_gets_its_own_window_back(backbone):
    """A session opened with a window of its own: the other image is windowed "auto", and the scan
    its own window again when the model sees it again (not "auto")."""
    ct_path, _ = sample_paths()
    scan = load_volume(ct_path)
    second, _ = resample_onto(other_sequence(ct_path), scan)
    session = Segmenter(backbone=backbone).open(scan, window="percentile")
    own = session.intensity
    session.use_image(second)
    assert session.window == "auto" and session.intensity != own
    session.use_image(None)
    assert session.window == "percentile" and session.intensity == own
