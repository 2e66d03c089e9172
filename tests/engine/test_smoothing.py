"""*Smoothing* on the bundled CT's spleen: a ragged edge (boundary voxels flipped at random) is
brought back towards the clean organ by the median; a closing fills a hole drilled through it; an
opening takes off a thin spike; each is one undo step and each bad request one PromptError."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medsam2 import Box, PromptError, Segmenter, load_volume
from medsam2.cli.demo import sample_paths

SPLEEN = 1


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _labels(session) -> np.ndarray:
    return session.result(propagate_pending=False, sanity=False).labels == SPLEEN


@pytest.fixture(scope="module")
def ct_and_spleen():
    ct_path, seg_path = sample_paths()
    return load_volume(ct_path), load_volume(seg_path).array == SPLEEN


def test_the_median_mends_a_ragged_edge(backbone, ct_and_spleen):
    volume, spleen = ct_and_spleen
    edge = spleen ^ ndimage.binary_erosion(spleen)
    ring = ndimage.binary_dilation(spleen) & ~spleen
    rng = np.random.default_rng(0)
    ragged = spleen & ~(edge & (rng.random(spleen.shape) < 0.3)) | (ring & (rng.random(spleen.shape) < 0.3))
    session = Segmenter(backbone=backbone).open(volume)
    session.open_labels(ragged.astype(np.uint8))
    before = _dice(ragged, spleen)
    done = session.smooth(SPLEEN)  # the default: a median, 3 voxels wide (9 mm: a radius of one voxel)
    assert done.radius_voxels == (1, 1, 1) and done.added_voxels > 0 and done.removed_voxels > 0
    after = _dice(_labels(session), spleen)
    assert after > before + 0.03, (before, after)  # 0.924 -> 0.976 measured
    session.undo()
    assert np.array_equal(_labels(session), ragged)


def test_closing_fills_a_hole_and_opening_takes_a_spike_off(backbone, ct_and_spleen):
    volume, spleen = ct_and_spleen
    z = int(np.argmax(spleen.reshape(len(spleen), -1).sum(axis=1)))
    rows, cols = np.nonzero(spleen[z])
    r, c = int(rows.mean()), int(cols.mean())
    holed = spleen.copy()
    holed[z - 1 : z + 2, r - 1 : r + 2, c - 1 : c + 2] = False
    assert spleen[z - 1 : z + 2, r - 1 : r + 2, c - 1 : c + 2].all()
    session = Segmenter(backbone=backbone).open(volume)
    session.open_labels(holed.astype(np.uint8))
    closed = session.smooth(SPLEEN, "closing", 12.0)
    assert _labels(session)[z - 1 : z + 2, r - 1 : r + 2, c - 1 : c + 2].all() and closed.removed_voxels == 0
    session.undo()
    spiked = spleen.copy()
    right = int(np.flatnonzero(spleen[z, r])[-1])
    spiked[z, r, right + 1 : right + 8] = True  # a one-voxel spike, 7 voxels long
    session.remove(SPLEEN)
    session.open_labels(spiked.astype(np.uint8))
    opened = session.smooth(SPLEEN, "opening", 6.0)
    assert not _labels(session)[z, r, right + 2 : right + 8].any() and opened.added_voxels == 0  # the root may stay
    cases = [(dict(method="blur"), "unknown smoothing"), (dict(kernel_mm=1.0), "smaller than two voxels"),
             (dict(kernel_mm=-2.0), "above 0"), (dict(method="opening", kernel_mm=300.0), "remove all")]
    for kwargs, message in cases:
        with pytest.raises(PromptError, match=message):
            session.smooth(SPLEEN, **kwargs)
    session.add_prompts(4, boxes=[Box(z, 5, 5, 20, 20)])
    with pytest.raises(PromptError, match="propagate it first"):
        session.smooth(4)
