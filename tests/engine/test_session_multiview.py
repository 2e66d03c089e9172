"""Multi-view for one object of a session: the bundled CT's spleen, propagated from one box, fused
with the coronal and sagittal passes boxed on it equals what ``segment --multiview`` gives for the
same box, voxel for voxel; the other object does not move; undo brings the single axis back."""

from __future__ import annotations

import numpy as np
import pytest

from medsam2 import Box, ObjectPrompts, PromptError, Segmenter, load_volume
from medsam2.cli.demo import sample_paths
from medsam2.engine.multiview import fuse_views

SPLEEN, KIDNEY = 1, 3  # the bundled CT's labels; the left kidney is the object that must not move
SPLEEN_BOX = Box(14, 11, 23, 27, 54)
KIDNEY_BOX = Box(14, 26, 28, 44, 45)


def test_one_objects_multiview_is_segments(backbone):
    volume = load_volume(sample_paths()[0])
    segmenter = Segmenter(backbone=backbone)
    spleen = ObjectPrompts(SPLEEN, "spleen", boxes=[SPLEEN_BOX])
    first = segmenter.segment(volume, [spleen])
    expected = fuse_views(segmenter, volume, first, [spleen], "axial").labels == SPLEEN
    session = segmenter.open(volume)
    session.add(spleen)
    session.add(ObjectPrompts(KIDNEY, "left kidney", boxes=[KIDNEY_BOX]))
    session.propagate()
    single = session.result(sanity=False).labels
    assert np.array_equal(single == SPLEEN, first.labels == SPLEEN)
    done = session.fuse_views(SPLEEN)
    fused = session.result(sanity=False).labels
    assert done.axes == ("coronal", "sagittal") and done.added_voxels + done.removed_voxels > 0
    assert np.array_equal(fused == SPLEEN, expected)
    assert np.array_equal(fused == KIDNEY, (single == KIDNEY) & ~expected)
    session.undo()
    assert np.array_equal(session.result(sanity=False).labels, single)
    session.add_prompts(7, boxes=[Box(14, 5, 5, 20, 20)])
    with pytest.raises(PromptError, match="propagate it first"):
        session.fuse_views(7)
