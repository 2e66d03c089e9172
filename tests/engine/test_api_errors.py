"""Wrong calls of the Python API raise the package's own errors, before any work (issue 14).

Each call here raised AttributeError, TypeError, OverflowError or a NumPy error before (some after
seconds of encoding). Now: a :class:`~medsam2.errors.MedSAM2Error` with one line, that is also a
``TypeError`` for a wrong type and a ``ValueError`` for a wrong value.
"""

from __future__ import annotations

import numpy as np
import pytest

from medsam2 import Box, MaskPrompt, ObjectPrompts, Point, Segmenter, Volume, load_volume, save_mask
from medsam2.errors import ArgumentTypeError, InputError, MedSAM2Error, PromptError, UsageError


@pytest.fixture(scope="module")
def volume():
    array = np.full((3, 24, 24), -1000, np.int16)
    array[:, 6:18, 6:18] = 60
    return Volume(array)


@pytest.fixture()
def segmenter(backbone):
    return Segmenter(backbone=backbone)


def good_object():
    return ObjectPrompts(1, "blob", boxes=[Box(1, 5, 5, 18, 18)])


def _raises(call, kind):
    with pytest.raises(kind) as caught:
        call()
    error = caught.value
    assert isinstance(error, MedSAM2Error)
    assert isinstance(error, TypeError if isinstance(error, ArgumentTypeError) else ValueError)
    assert "\n" not in str(error) and str(error)
    return error


CONSTRUCTORS = [
    ("2D array as a Volume", lambda: Volume(np.zeros((8, 8))), InputError),
    ("list as a Volume array", lambda: Volume([[[1, 2]]]), ArgumentTypeError),
    ("strings as voxels", lambda: Volume(np.full((2, 2, 2), "a")), ArgumentTypeError),
    ("no voxels", lambda: Volume(np.zeros((0, 4, 4))), InputError),
    ("two spacings", lambda: Volume(np.zeros((2, 4, 4)), spacing=(1.0, 1.0)), InputError),
    ("zero spacing", lambda: Volume(np.zeros((2, 4, 4)), spacing=(1.0, 0.0, 1.0)), InputError),
    ("text spacing", lambda: Volume(np.zeros((2, 4, 4)), spacing="abc"), ArgumentTypeError),
    ("NaN origin", lambda: Volume(np.zeros((2, 4, 4)), origin=(0.0, float("nan"), 0.0)), InputError),
    ("string label", lambda: ObjectPrompts("1", boxes=[Box(1, 5, 5, 18, 18)]), ArgumentTypeError),
    ("bool label", lambda: ObjectPrompts(True, boxes=[Box(1, 5, 5, 18, 18)]), ArgumentTypeError),
    ("label 0", lambda: ObjectPrompts(0, boxes=[Box(1, 5, 5, 18, 18)]), PromptError),
    ("label 70000", lambda: ObjectPrompts(70000, boxes=[Box(1, 5, 5, 18, 18)]), PromptError),
    ("numeric name", lambda: ObjectPrompts(1, name=5, boxes=[Box(1, 5, 5, 18, 18)]), ArgumentTypeError),
    ("tuple instead of Box", lambda: ObjectPrompts(1, boxes=[(1, 5, 5, 18, 18)]), ArgumentTypeError),
    ("one Box, not a list", lambda: ObjectPrompts(1, boxes=Box(1, 5, 5, 18, 18)), ArgumentTypeError),
    ("Point among boxes", lambda: ObjectPrompts(1, boxes=[Point(1, 5, 5)]), ArgumentTypeError),
    ("fractional slice", lambda: Box(1.5, 5, 5, 18, 18), ArgumentTypeError),
    ("text coordinate", lambda: Box(1, "5", 5, 18, 18), ArgumentTypeError),
    ("NaN coordinate", lambda: Box(1, float("nan"), 5, 18, 18), PromptError),
    ("infinite coordinate", lambda: Point(1, float("inf"), 5), PromptError),
    ("text positive", lambda: Point(1, 5, 5, positive="yes"), ArgumentTypeError),
    ("list mask", lambda: MaskPrompt(1, [[1, 0]]), ArgumentTypeError),
    ("3D mask prompt", lambda: MaskPrompt(1, np.ones((2, 2, 2))), PromptError),
]


@pytest.mark.parametrize("what, call, kind", CONSTRUCTORS, ids=[c[0] for c in CONSTRUCTORS])
def test_prompt_and_volume_types_check_their_arguments(what, call, kind):
    _raises(call, kind)


def test_module_functions_check_their_arguments(tmp_path, volume):
    labels = np.zeros(volume.shape, np.uint8)
    _raises(lambda: load_volume(5), ArgumentTypeError)
    _raises(lambda: load_volume(["scan.nii.gz"]), ArgumentTypeError)
    _raises(lambda: load_volume(tmp_path, time_index="2"), ArgumentTypeError)
    _raises(lambda: save_mask(labels, np.zeros(volume.shape), tmp_path / "o.nii.gz"), ArgumentTypeError)
    _raises(lambda: save_mask("labels", volume, tmp_path / "o.nii.gz"), ArgumentTypeError)
    _raises(lambda: save_mask(labels[:2], volume, tmp_path / "o.nii.gz"), UsageError)
    _raises(lambda: save_mask(labels, volume, 5), ArgumentTypeError)
    assert not list(tmp_path.iterdir())


def test_segmenter_checks_its_arguments_before_loading_a_model(backbone):
    _raises(lambda: Segmenter(device=0), ArgumentTypeError)
    _raises(lambda: Segmenter(memory=None), ArgumentTypeError)
    _raises(lambda: Segmenter(backbone=5), ArgumentTypeError)
    _raises(lambda: Segmenter(checkpoint=5), ArgumentTypeError)
    _raises(lambda: Segmenter(precision=16), ArgumentTypeError)
    _raises(lambda: Segmenter(memory="lru"), UsageError)


def test_segment_and_open_check_their_arguments_before_encoding(segmenter, volume):
    encoded_before = segmenter.engine.backbone.stats().misses if hasattr(segmenter.engine.backbone, "stats") else None
    _raises(lambda: segmenter.segment([[1, 2], [3, 4]], good_object()), ArgumentTypeError)
    _raises(lambda: segmenter.segment(volume.array, good_object()), ArgumentTypeError)
    _raises(lambda: segmenter.segment(volume, (1, 5, 5, 18, 18)), ArgumentTypeError)
    _raises(lambda: segmenter.segment(volume, Box(1, 5, 5, 18, 18)), ArgumentTypeError)
    _raises(lambda: segmenter.segment(volume, {"label": 1}), ArgumentTypeError)
    _raises(lambda: segmenter.segment(volume, good_object(), axis=3), ArgumentTypeError)
    _raises(lambda: segmenter.segment(volume, good_object(), axis="diagonal"), UsageError)
    _raises(lambda: segmenter.segment(volume, good_object(), window=None), ArgumentTypeError)
    _raises(lambda: segmenter.segment(volume, [good_object(), good_object()]), PromptError)
    _raises(lambda: segmenter.open([1, 2]), ArgumentTypeError)
    _raises(lambda: segmenter.open(volume, feature_cache_mb=-5), ArgumentTypeError)
    _raises(lambda: segmenter.one_prompt(volume, good_object(), "query.png"), ArgumentTypeError)
    _raises(lambda: segmenter.one_prompt([np.zeros((1, 4, 4))], good_object(), ["q.png"]), ArgumentTypeError)
    _raises(lambda: segmenter.one_prompt(volume, good_object(), [5]), ArgumentTypeError)
    if encoded_before is not None:
        assert segmenter.engine.backbone.stats().misses == encoded_before  # nothing was encoded


def test_session_calls_check_their_arguments(segmenter, volume):
    session = segmenter.open(volume)
    _raises(lambda: session.add((1, "liver")), ArgumentTypeError)
    session.add(good_object())
    for _ in session.propagate():
        pass
    before = session.result().labels.copy()
    _raises(lambda: session.correct("1", 1, box=(5, 5, 18, 18)), ArgumentTypeError)
    _raises(lambda: session.correct([1], 1, box=(5, 5, 18, 18)), ArgumentTypeError)
    _raises(lambda: session.correct(1, 0.5, box=(5, 5, 18, 18)), ArgumentTypeError)
    _raises(lambda: session.correct(1, 1, box="5,5,18,18"), ArgumentTypeError)
    _raises(lambda: session.correct(1, 1, box=(5, 5, "a", 18)), ArgumentTypeError)
    _raises(lambda: session.correct(1, 1, box=(5, 5, float("nan"), 18)), PromptError)
    _raises(lambda: session.correct(1, 1, points=5), ArgumentTypeError)
    _raises(lambda: session.correct(1, 1, points=[7]), ArgumentTypeError)
    _raises(lambda: session.correct(1, 1, points=[("a", 2)]), PromptError)
    _raises(lambda: session.correct(1, 1, mask="abc"), ArgumentTypeError)
    _raises(lambda: session.correct(1, 1, erase=np.ones((3, 3))), PromptError)
    assert np.array_equal(session.result().labels, before)
