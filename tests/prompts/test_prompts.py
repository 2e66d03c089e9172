"""Prompt parsing (CLI strings, prompts.json) and validation against the frame grid."""

import json

import numpy as np
import pytest

from medsam2.errors import PromptError
from medsam2.prompts.parse import (
    Box,
    MaskPrompt,
    ObjectPrompts,
    Point,
    load_prompts_json,
    mask_prompts_from_array,
    parse_box,
    parse_point,
    validate_prompts,
)


def test_parse_box_and_point():
    assert parse_box("42:10,20,80,90") == Box(42, 10, 20, 80, 90)
    assert parse_point("3:5,6") == Point(3, 5, 6, True)
    assert parse_point("3:5,6,0") == Point(3, 5, 6, False)


@pytest.mark.parametrize("text", ["42:10,20,80", "10,20,80,90", "a:1,2,3,4", "42:10;20;80;90"])
def test_malformed_box(text):
    with pytest.raises(PromptError, match="SLICE:x0,y0,x1,y1"):
        parse_box(text)


def test_point_label_other_than_0_or_1():
    with pytest.raises(PromptError, match="1 \\(foreground\\) or 0 \\(background\\)"):
        parse_point("3:5,6,2")


def _validate(obj, n=10, rows=50, cols=60):
    validate_prompts([obj], n, rows, cols)


def test_slice_out_of_range():
    with pytest.raises(PromptError, match="slice 10 is out of range.*10 slices"):
        _validate(ObjectPrompts(1, boxes=[Box(10, 1, 1, 5, 5)]))
    with pytest.raises(PromptError, match="out of range"):
        _validate(ObjectPrompts(1, points=[Point(-1, 1, 1)]))


def test_box_outside_image_or_zero_width():
    with pytest.raises(PromptError, match="outside the image"):
        _validate(ObjectPrompts(1, boxes=[Box(2, 10, 10, 60, 20)]))
    with pytest.raises(PromptError, match="zero or negative width"):
        _validate(ObjectPrompts(1, boxes=[Box(2, 10, 10, 10, 20)]))
    with pytest.raises(PromptError, match="zero or negative width"):
        _validate(ObjectPrompts(1, boxes=[Box(2, 10, 30, 20, 20)]))


def test_point_outside_and_background_only():
    with pytest.raises(PromptError, match="outside the image"):
        _validate(ObjectPrompts(1, points=[Point(2, 70, 5)]))
    with pytest.raises(PromptError, match="no foreground point"):
        _validate(ObjectPrompts(1, points=[Point(2, 7, 5, positive=False)]))


def test_empty_mask_prompt():
    with pytest.raises(PromptError, match="empty"):
        mask_prompts_from_array(np.zeros((4, 5, 6)), "m.nii.gz")
    with pytest.raises(PromptError, match="empty"):
        _validate(ObjectPrompts(1, masks=[MaskPrompt(1, np.zeros((50, 60), bool))]))


def test_mask_prompts_one_per_slice_with_foreground():
    mask = np.zeros((5, 4, 4), np.uint8)
    mask[1, 1, 1] = 1
    mask[3, 2, 2] = 7
    prompts = mask_prompts_from_array(mask, "m")
    assert [p.frame for p in prompts] == [1, 3]


def test_prompts_json_full(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(
        json.dumps(
            {
                "objects": [
                    {"label": 1, "name": "liver", "boxes": ["4:1,2,30,40", {"slice": 5, "box": [1, 2, 30, 40]}]},
                    {"label": 2, "points": ["3:10,10,1", {"slice": 3, "point": [12, 12], "label": 0}]},
                    {"label": 3, "mask": "m.nii.gz", "mask_value": 3},
                ]
            }
        )
    )
    parsed = load_prompts_json(path)
    assert [o.label for o in parsed.objects] == [1, 2, 3]
    assert parsed.objects[0].name == "liver" and len(parsed.objects[0].boxes) == 2
    assert parsed.objects[1].points[1] == Point(3, 12, 12, False)
    assert parsed.mask_paths[3] == (tmp_path / "m.nii.gz", 3)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"objects": [], "extra": 1}', "unknown keys"),
        ('{"objects": [{"label": 1, "boxes": ["1:1,1,5,5"], "colour": "red"}]}', "unknown keys"),
        ('{"objects": [{"label": 0, "boxes": ["1:1,1,5,5"]}]}', "'label' must be an integer"),
        ('{"objects": [{"label": 1}]}', "has no prompt"),
        ('{"objects": [{"label": 1, "points": [{"slice": 1, "point": [1, 1], "label": 2}]}]}', "point label"),
        ('{"objects": [{"label": 1, "boxes": [[1, 2, 3, 4]]}]}', "each box"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_prompts_json_errors(tmp_path, content, message):
    path = tmp_path / "prompts.json"
    path.write_text(content)
    with pytest.raises(PromptError, match=message):
        load_prompts_json(path)
