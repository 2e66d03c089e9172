"""*Remove small islands* on the bundled CT's spleen with a stray blob beside it: the largest
island stays voxel for voxel, the blob goes; a size keeps every island at least that big; one
island is one error; undo brings the blob back."""

from __future__ import annotations

import numpy as np
import pytest

from medsam2 import PromptError, Segmenter, load_volume
from medsam2.cli.demo import sample_paths

SPLEEN = 1


@pytest.fixture(scope="module")
def spleen_with_a_blob():
    ct_path, seg_path = sample_paths()
    spleen = (load_volume(seg_path).array == SPLEEN).astype(np.uint8)
    blobbed = spleen.copy()
    blobbed[5:8, 5:9, 5:9] = SPLEEN  # 48 voxels far from the spleen, in the image's corner
    assert not spleen[5:8, 5:9, 5:9].any()
    return ct_path, spleen, blobbed


def test_the_largest_island_stays_and_the_blob_goes(backbone, spleen_with_a_blob):
    ct_path, spleen, blobbed = spleen_with_a_blob
    session = Segmenter(backbone=backbone).open(load_volume(ct_path), axis="axial")
    session.open_labels(blobbed)
    with pytest.raises(PromptError, match="one island of that size"):
        session.remove_islands(SPLEEN, min_voxels=40)
    removed = session.remove_islands(SPLEEN)
    assert (removed.removed_islands, removed.removed_voxels, removed.kept_islands) == (1, 48, 1)
    assert np.array_equal(session.result(propagate_pending=False, sanity=False).labels, spleen)
    with pytest.raises(PromptError, match="one island"):
        session.remove_islands(SPLEEN)
    session.undo()
    assert np.array_equal(session.result(propagate_pending=False, sanity=False).labels, blobbed)
    assert session.remove_islands(SPLEEN, min_voxels=49).removed_voxels == 48  # the blob is smaller than 49
    with pytest.raises(PromptError, match="1 or more"):
        session.remove_islands(SPLEEN, min_voxels=0)


def test_a_locked_object_keeps_the_voxels_it_shares(backbone, spleen_with_a_blob):
    """Two opened objects that overlap: the first added wins the shared voxels until the second is
    locked; unlocking (or undo) gives them back."""
    ct_path, spleen, _ = spleen_with_a_blob
    other = np.zeros_like(spleen)
    z = int(np.flatnonzero(spleen.reshape(len(spleen), -1).any(axis=1))[5])
    rows, cols = np.nonzero(spleen[z])
    other[z, rows.min() : rows.min() + 6, cols.min() : cols.max() + 1] = 2  # across the spleen's top rows
    shared = (other == 2) & (spleen == SPLEEN)
    assert shared.sum() > 10
    session = Segmenter(backbone=backbone).open(load_volume(ct_path), axis="axial")
    session.open_labels(spleen)
    session.open_labels(other)
    labels = session.result(propagate_pending=False, sanity=False).labels
    assert (labels[shared] == SPLEEN).all()
    session.lock(2)
    assert session.locked_labels() == {2}
    labels = session.result(propagate_pending=False, sanity=False).labels
    assert (labels[shared] == 2).all() and (labels[(spleen == SPLEEN) & ~shared] == SPLEEN).all()
    session.undo()
    assert not session.locked_labels() and (session.result(propagate_pending=False, sanity=False).labels[shared] == SPLEEN).all()
