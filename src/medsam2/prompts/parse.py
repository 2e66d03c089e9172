"""Prompt types, parsing of command-line strings and prompts.json, and validation.

Coordinates are 0-based voxel indices as ITK-SNAP and 3D Slicer show them (IJK). A prompt's
``frame`` is the slice index along the slicing axis; ``x`` is the frame's column and ``y`` its row
(see :mod:`medsam2.io.slicing` for coronal and sagittal frames). Boxes are inclusive.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam2.errors import ArgumentTypeError, PromptError
from medsam2.io.limits import check_input_path
from medsam2.io.readers import read_mask
from medsam2.io.slicing import to_frames, voxel_axis
from medsam2.io.volume import MAX_LABEL_VALUE
from medsam2.prompts.types import Box, MaskPrompt, ObjectPrompts, Point, coordinate, frame_index, object_label

__all__ = [
    "Box", "MaskPrompt", "ObjectPrompts", "Point", "collect_prompts", "coordinate", "frame_index", "load_prompts_json",
    "mask_prompts_from_array", "object_label", "parse_box", "parse_point", "validate_prompts",
]

_NUMBER = r"-?\d+(?:\.\d+)?"
_BOX_RE = re.compile(rf"^\s*(-?\d+)\s*:\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*$")
_POINT_RE = re.compile(rf"^\s*(-?\d+)\s*:\s*({_NUMBER})\s*,\s*({_NUMBER})\s*(?:,\s*(-?\d+)\s*)?$")


def parse_box(text: str) -> Box:
    """``"Z:x0,y0,x1,y1"`` -> :class:`Box`."""
    match = _BOX_RE.match(text)
    if not match:
        raise PromptError(f"cannot read box '{text}': write it as SLICE:x0,y0,x1,y1, e.g. 42:10,20,80,90")
    frame, x0, y0, x1, y1 = match.groups()
    return Box(int(frame), float(x0), float(y0), float(x1), float(y1))


def parse_point(text: str) -> Point:
    """``"Z:x,y"`` or ``"Z:x,y,1"`` (foreground) or ``"Z:x,y,0"`` (background) -> :class:`Point`."""
    match = _POINT_RE.match(text)
    if not match:
        raise PromptError(f"cannot read point '{text}': write it as SLICE:x,y or SLICE:x,y,1 or SLICE:x,y,0")
    frame, x, y, label = match.groups()
    if label is not None and label not in ("0", "1"):
        raise PromptError(f"point '{text}' has label {label}; a point label is 1 (foreground) or 0 (background)")
    return Point(int(frame), float(x), float(y), positive=label != "0")


def mask_prompts_from_array(mask: np.ndarray, source: str) -> list[MaskPrompt]:
    """(frames, rows, cols) mask -> one :class:`MaskPrompt` per frame that has foreground.

    Raises:
        PromptError: the mask has no foreground voxel.
    """
    binary = np.asarray(mask) > 0
    frames = np.flatnonzero(binary.reshape(binary.shape[0], -1).any(axis=1))
    if frames.size == 0:
        raise PromptError(f"mask prompt {source} is empty (no voxel above 0); draw the structure on at least one slice")
    return [MaskPrompt(int(f), binary[f].copy()) for f in frames]


_OBJECT_KEYS = {"label", "name", "boxes", "points", "mask", "mask_value", "mask_slice", "boxes_mm", "points_mm"}
_TOP_KEYS = {"objects"}


@dataclass
class PromptFile:
    """prompts.json, parsed: objects with boxes and points; masks still as paths to read."""

    objects: list[ObjectPrompts]
    mask_paths: dict[int, tuple[Path, int | None]]
    #: label -> the slice a 2D mask file is for (``mask_slice``)
    mask_slices: dict[int, int] = field(default_factory=dict)
    #: label -> [("box_mm", "X0,Y0,Z0,X1,Y1,Z1") | ("point_mm", "X,Y,Z[,1|0]")], turned into voxel
    #: prompts with the volume's geometry by :func:`collect_prompts`
    mm_prompts: dict[int, list[tuple[str, str]]] = field(default_factory=dict)


def load_prompts_json(path: str | Path, n_frames: int | None = None, index_base: int = 0) -> PromptFile:
    """Read prompts.json.

    The file holds ``{"objects": [...]}``; each object has ``label`` (int >= 1), optional ``name``,
    and any of ``boxes`` (``"Z:x0,y0,x1,y1"`` strings or ``{"slice": Z, "box": [x0, y0, x1, y1]}``),
    ``points`` (``"Z:x,y[,1|0]"`` or ``{"slice": Z, "point": [x, y], "label": 1}``), ``mask`` (a
    path, relative to the JSON file), ``mask_value`` (take only that value from the mask),
    ``mask_slice`` (the mask is a 2D file for that slice of a 3D scan), ``boxes_mm`` and
    ``points_mm`` (strings as ``--box-mm`` and ``--point-mm`` take them). With ``n_frames`` 1 (a 2D
    image) box and point strings may leave out their "Z:". With ``index_base`` 1 boxes and points
    are read as 1-based (ITK-SNAP) indices.

    Raises:
        PromptError: invalid JSON, unknown keys, or malformed entries.
    """
    path = Path(path)
    parsed = PromptFile(objects=[], mask_paths={})
    for index, item in enumerate(_json_objects(path)):
        _add_json_object(parsed, item, f"{path}: objects[{index}]", path, n_frames, index_base)
    return parsed


def _json_objects(path: Path) -> list:
    """The ``objects`` list of a prompts file.

    Raises:
        PromptError: no such file, a folder, invalid JSON, non-finite numbers, another shape.
    """
    if not path.exists() and not path.is_symlink():
        raise PromptError(f"no such prompts file: {path}")
    check_input_path(path)
    if path.is_dir():
        raise PromptError(f"the prompts file {path} is a folder; give a .json file")
    try:
        data = json.loads(path.read_text(), parse_constant=_no_constants)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PromptError(f"{path} is not valid JSON ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    except ValueError as exc:  # NaN / Infinity
        raise PromptError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise PromptError(f"{path} must hold a JSON object with the key 'objects'")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise PromptError(f"{path} has unknown keys {sorted(unknown)}; expected only 'objects'")
    items = data.get("objects")
    if not isinstance(items, list) or not items:
        raise PromptError(f"{path}: 'objects' must be a non-empty list")
    return items


def _add_json_object(parsed: PromptFile, item: object, where: str, path: Path, n_frames: int | None, index_base: int) -> None:
    """One entry of ``objects`` added to ``parsed``: its object, mask path and slice, mm prompts.

    Raises:
        PromptError: not an object, unknown keys, a bad or repeated label, malformed entries, no prompt.
    """
    if not isinstance(item, dict):
        raise PromptError(f"{where} must be a JSON object")
    unknown = set(item) - _OBJECT_KEYS
    if unknown:
        raise PromptError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_OBJECT_KEYS)}")
    label = item.get("label")
    if not isinstance(label, int) or isinstance(label, bool) or not 1 <= label <= MAX_LABEL_VALUE:
        raise PromptError(f"{where}: 'label' must be an integer from 1 to {MAX_LABEL_VALUE}")
    if any(o.label == label for o in parsed.objects) or label in parsed.mask_paths:
        raise PromptError(f"{where}: label {label} appears twice in {path.name}; give each object its own label")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise PromptError(f"{where}: 'name' must be a string")
    obj = ObjectPrompts(label=label, name=name)

    def sliced(entry: object) -> object:  # a 2D image's string prompts may leave out the slice
        return f"{index_base}:{entry}" if n_frames == 1 and isinstance(entry, str) and ":" not in entry else entry

    for entry in _as_list(item.get("boxes", []), f"{where}.boxes"):
        box = _box_entry(sliced(entry), f"{where}.boxes")
        obj.boxes.append(_shift_box(box) if index_base else box)
    for entry in _as_list(item.get("points", []), f"{where}.points"):
        point = _point_entry(sliced(entry), f"{where}.points")
        obj.points.append(_shift_point(point) if index_base else point)
    for key, kind in (("boxes_mm", "box_mm"), ("points_mm", "point_mm")):
        for entry in _as_list(item.get(key, []), f"{where}.{key}"):
            if not isinstance(entry, str):
                raise PromptError(f"{where}.{key}: each entry is a string such as \"X0,Y0,Z0,X1,Y1,Z1\" (mm)")
            parsed.mm_prompts.setdefault(label, []).append((kind, entry))
    _add_json_mask(parsed, item, label, where, path)
    if obj.is_empty() and label not in parsed.mask_paths and label not in parsed.mm_prompts:
        raise PromptError(f"{where} (label {label}) has no prompt; give boxes, points or a mask")
    parsed.objects.append(obj)


def _add_json_mask(parsed: PromptFile, item: dict, label: int, where: str, path: Path) -> None:
    """An object's ``mask`` (relative to the prompts file), ``mask_value`` and ``mask_slice``."""
    if "mask" in item:
        if not isinstance(item["mask"], str):
            raise PromptError(f"{where}: 'mask' must be a path string")
        value = item.get("mask_value")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise PromptError(f"{where}: 'mask_value' must be an integer")
        mask_path = Path(item["mask"])
        parsed.mask_paths[label] = (mask_path if mask_path.is_absolute() else path.parent / mask_path, value)
    elif "mask_value" in item or "mask_slice" in item:
        raise PromptError(f"{where}: 'mask_value' and 'mask_slice' need 'mask'")
    if "mask_slice" in item:
        if not _is_index(item["mask_slice"]):
            raise PromptError(f"{where}: 'mask_slice' must be a slice index (an integer)")
        parsed.mask_slices[label] = item["mask_slice"]


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a number a prompt can hold; give finite numbers")


def _as_list(value: object, where: str) -> list:
    if not isinstance(value, list):
        raise PromptError(f"{where} must be a list")
    return value


def _box_entry(entry: object, where: str) -> Box:
    if isinstance(entry, str):
        return parse_box(entry)
    if isinstance(entry, dict) and set(entry) == {"slice", "box"}:
        box = entry["box"]
        if _is_index(entry["slice"]) and isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box):
            return Box(entry["slice"], *(float(v) for v in box))
    raise PromptError(f"{where}: each box is 'Z:x0,y0,x1,y1' or {{\"slice\": Z, \"box\": [x0, y0, x1, y1]}}")


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _point_entry(entry: object, where: str) -> Point:
    if isinstance(entry, str):
        return parse_point(entry)
    if isinstance(entry, dict) and {"slice", "point"} <= set(entry) <= {"slice", "point", "label"}:
        xy = entry["point"]
        label = entry.get("label", 1)
        if not _is_index(label) or label not in (0, 1):
            raise PromptError(f"{where}: a point label is 1 (foreground) or 0 (background), not {label!r}")
        if _is_index(entry["slice"]) and isinstance(xy, list) and len(xy) == 2 and all(_is_number(v) for v in xy):
            return Point(entry["slice"], float(xy[0]), float(xy[1]), positive=label == 1)
    raise PromptError(f"{where}: each point is 'Z:x,y[,1|0]' or {{\"slice\": Z, \"point\": [x, y], \"label\": 1}}")


def validate_prompts(objects: list[ObjectPrompts], n_frames: int, rows: int, cols: int, axis: str = "axial") -> None:
    """Check every prompt against the frame grid.

    Raises:
        PromptError: no object, a frame out of range, a box outside the image or of zero width, a
            point outside the image, clicks with no foreground point, an empty or mis-sized mask.
    """
    if not objects:
        raise PromptError("no prompt given; add --box, --point, --mask or --prompts")
    labels = [o.label for o in objects]
    if len(set(labels)) != len(labels):
        raise PromptError("two objects share one label; merge their prompts or give each its own --label")
    for obj in objects:
        if obj.is_empty():
            raise PromptError(f"label {obj.label} has no prompt")
        for frame in obj.prompted_frames():
            if not 0 <= frame < n_frames:
                raise PromptError(
                    f"slice {frame} is out of range: the scan has {n_frames} slices along the {axis} axis (0..{n_frames - 1})"
                )
        for box in obj.boxes:
            text = f"box {box.frame}:{box.x0:g},{box.y0:g},{box.x1:g},{box.y1:g}"
            if box.x1 <= box.x0 or box.y1 <= box.y0:
                raise PromptError(f"{text} has zero or negative width or height; give x0 < x1 and y0 < y1")
            if box.x0 < 0 or box.y0 < 0 or box.x1 > cols - 1 or box.y1 > rows - 1:
                raise PromptError(f"{text} reaches outside the image (x 0..{cols - 1}, y 0..{rows - 1})")
        for point in obj.points:
            if not (0 <= point.x <= cols - 1 and 0 <= point.y <= rows - 1):
                raise PromptError(
                    f"point {point.frame}:{point.x:g},{point.y:g} is outside the image (x 0..{cols - 1}, y 0..{rows - 1})"
                )
        for frame in {p.frame for p in obj.points}:
            if not any(p.positive for p in obj.points if p.frame == frame):
                raise PromptError(f"label {obj.label}: the clicks on slice {frame} have no foreground point (label 1)")
        for mask in obj.masks:
            if mask.mask.shape != (rows, cols):
                raise PromptError(f"label {obj.label}: mask on slice {mask.frame} has shape {mask.mask.shape}, expected {(rows, cols)}")
            if not mask.mask.any():
                raise PromptError(f"label {obj.label}: the mask on slice {mask.frame} is empty")


def collect_prompts(
    items: list[tuple[str, object]], prompts_json: str | Path | None, volume, axis: str = "axial",
    ras: bool = False, index_base: int = 0,
) -> list[ObjectPrompts]:
    """Objects from command-line prompt items and a prompts.json, as ``medsam2 segment`` takes them.

    Arguments:
        items: ("label", int) | ("box", "Z:x0,y0,x1,y1") | ("point", "Z:x,y[,1|0]") | ("mask", path
            or "Z:path" for a 2D mask on slice Z) | ("box_mm", "X0,Y0,Z0,X1,Y1,Z1") |
            ("point_mm", "X,Y,Z[,1|0]") | ("name", text), in order: a label applies to the prompts
            after it (default label 1). On a one-slice image the "Z:" of boxes and points may be left out.
        prompts_json: a prompts.json path (its objects merge with the items' by label), or None.
        volume: the :class:`~medsam2.io.volume.Volume` that masks are read against.
        axis: the slicing axis of the coordinates.
        ras: millimetre prompts are RAS (3D Slicer) instead of LPS (ITK, DICOM).
        index_base: 0 (3D Slicer, medsam2) or 1 (ITK-SNAP's cursor): the base of the voxel indices
            in boxes and points (slices included).

    Returns:
        The objects sorted by label (validate them with :func:`validate_prompts`).

    Raises:
        PromptError: a label outside 1..65535, an unreadable box or point, an empty mask, a label
            with a name but no prompt.
    """
    from medsam2.prompts.coordinates import box_from_mm, point_from_mm

    if index_base not in (0, 1):
        raise PromptError(f"the index base is 0 or 1, not {index_base!r}")
    frames_axis = voxel_axis(axis, volume.direction)
    frames_shape = to_frames(volume.array, frames_axis).shape
    objects: dict[int, ObjectPrompts] = {}
    current = 1
    for index, (kind, value) in enumerate(items):
        if kind == "mask_segment":
            if index == 0 or items[index - 1][0] != "mask":
                raise PromptError(f"--mask-segment {value} follows the --mask SEG.dcm whose segment it picks")
            continue
        if kind == "label":
            try:
                current = object_label(value)
            except ArgumentTypeError:
                raise PromptError(f"--label {value}: labels are integers from 1 to {MAX_LABEL_VALUE}") from None
            continue
        obj = objects.setdefault(current, ObjectPrompts(label=current))
        if kind == "box":
            obj.boxes.append(_voxel_prompt(parse_box, str(value), "box", frames_shape[0], index_base, axis))
        elif kind == "point":
            obj.points.append(_voxel_prompt(parse_point, str(value), "point", frames_shape[0], index_base, axis))
        elif kind == "box_mm":
            obj.boxes.append(box_from_mm(str(value), volume, axis, ras))
        elif kind == "point_mm":
            obj.points.append(point_from_mm(str(value), volume, axis, ras))
        elif kind == "name":
            obj.name = str(value)
        elif kind == "mask":
            segment = items[index + 1][1] if index + 1 < len(items) and items[index + 1][0] == "mask_segment" else None
            obj.masks.extend(_mask_prompts(str(value), volume, frames_axis, frames_shape, index_base, axis, segment=segment))
    if prompts_json:
        for obj in _prompt_file_objects(prompts_json, volume, axis, ras, index_base):
            if obj.label in objects:
                objects[obj.label].merge(obj)
            else:
                objects[obj.label] = obj
    empty = [label for label, obj in objects.items() if obj.is_empty()]
    if empty:
        raise PromptError(f"label {empty[0]} has a name but no prompt; add --box, --point or --mask after --label {empty[0]}")
    return [objects[label] for label in sorted(objects)]


def _prompt_file_objects(prompts_json: str | Path, volume, axis: str, ras: bool, index_base: int) -> list[ObjectPrompts]:
    """The objects of a prompts.json with their millimetre prompts and masks read against ``volume``."""
    from medsam2.prompts.coordinates import box_from_mm, point_from_mm

    frames_axis = voxel_axis(axis, volume.direction)
    frames_shape = to_frames(volume.array, frames_axis).shape
    prompt_file = load_prompts_json(prompts_json, n_frames=frames_shape[0], index_base=index_base)
    for obj in prompt_file.objects:
        for kind, text in prompt_file.mm_prompts.get(obj.label, []):
            if kind == "box_mm":
                obj.boxes.append(box_from_mm(text, volume, axis, ras))
            else:
                obj.points.append(point_from_mm(text, volume, axis, ras))
        if obj.label in prompt_file.mask_paths:
            path, mask_value = prompt_file.mask_paths[obj.label]
            if obj.label in prompt_file.mask_slices:
                obj.masks.extend(_mask_prompts(f"{prompt_file.mask_slices[obj.label]}:{path}", volume, frames_axis,
                                               frames_shape, index_base, axis, mask_value))
            else:
                mask = to_frames(read_mask(path, volume), frames_axis)
                if mask_value is not None:
                    mask = mask == mask_value
                obj.masks.extend(mask_prompts_from_array(mask, str(path)))
    return prompt_file.objects


def _voxel_prompt(parse, text: str, what: str, n_frames: int, index_base: int, axis: str):
    """A command-line box or point: "Z:" optional on a one-slice image, indices shifted from ``index_base``."""
    given_slice = ":" in text
    if not given_slice:
        if n_frames != 1:
            example = "42:10,20,80,90" if what == "box" else "42:30,40"
            raise PromptError(
                f"{what} '{text}' has no slice; the scan has {n_frames} slices along the {axis} axis: write SLICE:{text} (e.g. {example})"
            )
        text = f"{index_base}:{text}"
    prompt = parse(text)
    if index_base == 0:
        return prompt
    return _shift_box(prompt) if isinstance(prompt, Box) else _shift_point(prompt)


def _shift_box(box: Box) -> Box:
    """A box given 1-based (ITK-SNAP) -> 0-based."""
    return Box(box.frame - 1, box.x0 - 1, box.y0 - 1, box.x1 - 1, box.y1 - 1)


def _shift_point(point: Point) -> Point:
    """A point given 1-based (ITK-SNAP) -> 0-based."""
    return Point(point.frame - 1, point.x - 1, point.y - 1, point.positive)


_SLICE_MASK = re.compile(r"^(-?\d+):(.+)$")


def mask_file(text: str) -> Path:
    """The file of a ``--mask`` value: PATH, or the PATH of SLICE:PATH when no file is named SLICE:PATH."""
    match = _SLICE_MASK.match(text)
    return Path(match.group(2)) if match is not None and not Path(text).exists() else Path(text)


def _mask_prompts(
    text: str, volume, frames_axis: str, frames_shape: tuple[int, ...], index_base: int, axis: str, value: int | None = None,
    segment: int | None = None,
) -> list[MaskPrompt]:
    """``--mask PATH`` (the input's grid, or a DICOM SEG of the input series: every segment, or
    ``segment`` alone) or ``--mask SLICE:PATH`` (a 2D mask for one slice of a 3D scan)."""
    from medsam2.io.readers import read_mask
    from medsam2.io.volume import Volume

    match = _SLICE_MASK.match(text)
    if match is None or Path(text).exists():
        return mask_prompts_from_array(to_frames(read_mask(text, volume, segment), frames_axis), text)
    if segment is not None:
        raise PromptError(f"--mask-segment {segment} picks a segment of a DICOM SEG of the whole series, not of a 2D mask")
    frame, path = int(match.group(1)) - index_base, match.group(2)
    n_frames, rows, cols = frames_shape[:3]
    if not 0 <= frame < n_frames:
        raise PromptError(f"--mask {text}: slice {frame + index_base} is outside the scan's {n_frames} slices along the {axis} axis")
    plane = Volume(np.zeros((1, rows, cols), dtype=np.uint8), source=str(volume.source))
    mask = read_mask(path, plane)[0]
    if value is not None:
        mask = mask == value
    return [MaskPrompt(frame, prompt.mask) for prompt in mask_prompts_from_array(mask[None], path)]
