"""What a MONAI Label client asks of ``POST /infer/{model}``: its ``params`` form field read into
prompts on the scan's voxel grid.

MONAI Label's clients (3D Slicer's module, OHIF's mode, ``monailabel.client``) send voxel indices
in ITK's order, ``[i, j, k]`` (column, row, slice of an axially stored scan; the reverse of the
NumPy ``(k, j, i)`` array), as the viewer loaded the image:

- ``foreground`` / ``background``: clicks ``[[i, j, k], ...]``;
- ``roi``: ``[i1, i2, j1, j2, k1, k2]``, each axis's two ends inclusive and in either order (Slicer's
  RAS-to-IJK step can flip them).

The ROI becomes a box on its middle slice along the session's slicing axis (the ROI's extent in
that slice's plane), and the answer is kept inside the ROI; each click becomes a click on its
slice. The clicks and the ROI together are one object's prompts, propagated through the scan.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from medsam2.io.slicing import index_to_frame
from medsam2.prompts.types import Box, Point
from medsam2.serve.errors import ApiError

#: the label files an answer can be (``result_extension``); NIfTI unless asked
RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
#: the voxel types an answer can have (``result_dtype``)
RESULT_DTYPES = ("uint8", "uint16")

#: (i, j, k) inclusive voxel bounds: ((i_lo, i_hi), (j_lo, j_hi), (k_lo, k_hi))
VoxelBounds = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class InferRequest:
    """One ``/infer`` call's prompts and wishes, checked against the scan's grid.

    Attributes:
        foreground: clicks on the structure, (i, j, k) voxel indices.
        background: clicks off it, (i, j, k).
        roi: the region the structure lies in, inclusive (i, j, k) bounds; None when not given.
        label: the name of the structure (Slicer's segment), if given.
        result_extension: the answer's file type, one of :data:`RESULT_EXTENSIONS`.
        result_dtype: its voxel type, ``uint8`` or ``uint16`` (OHIF asks for ``uint16``).
        result_compress: compress it (OHIF reads its NRRD answer uncompressed).
    """

    foreground: tuple[tuple[int, int, int], ...] = ()
    background: tuple[tuple[int, int, int], ...] = ()
    roi: VoxelBounds | None = None
    label: str | None = None
    result_extension: str = ".nii.gz"
    result_dtype: str = "uint8"
    result_compress: bool = True

    @property
    def finds_nothing(self) -> bool:
        """Background clicks alone (Slicer asks as soon as the first point is placed, whichever
        kind): the answer is empty, as MONAI Label's deepgrow gives."""
        return not self.foreground and self.roi is None

    def prompts(self, voxel_axis: str) -> tuple[list[Box], list[Point]]:
        """The boxes and clicks on the frames of a session sliced along ``voxel_axis`` (k, j, i)."""
        boxes = []
        if self.roi is not None:
            low = index_to_frame(voxel_axis, tuple(lo for lo, _ in self.roi))
            high = index_to_frame(voxel_axis, tuple(hi for _, hi in self.roi))
            boxes.append(Box(int((low[0] + high[0]) // 2), low[1], low[2], high[1], high[2]))
        points = [_point(voxel_axis, p, True) for p in self.foreground] + [_point(voxel_axis, p, False) for p in self.background]
        return boxes, points

    def confine(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` ((k, j, i) array) with everything outside the ROI cleared (as it is without one)."""
        if self.roi is None:
            return mask
        (i0, i1), (j0, j1), (k0, k1) = self.roi
        kept = np.zeros_like(mask)
        kept[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = mask[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1]
        return kept


def _point(voxel_axis: str, index: tuple[int, int, int], positive: bool) -> Point:
    frame, x, y = index_to_frame(voxel_axis, index)
    return Point(int(frame), x, y, positive)


def params_of(text: str | None, example: str = '{"foreground": [[i, j, k]]}') -> dict:
    """A request's ``params`` form field: a JSON object (empty when not given).

    Raises:
        ApiError: 400 for what is not a JSON object.
    """
    try:
        params = json.loads(text or "{}")
    except ValueError:
        raise ApiError(400, f"params is not JSON; send e.g. {example}") from None
    if not isinstance(params, dict):
        raise ApiError(400, f"params is a JSON object, e.g. {example}")
    return params


def read_infer_request(text: str | None, shape_kji: tuple[int, int, int]) -> InferRequest:
    """The ``params`` field of ``/infer`` (JSON) for a scan of ``shape_kji`` voxels (NumPy order).

    Keys other than those of :class:`InferRequest` (``client_id``, ``label_names``, a viewer's own
    settings) are ignored, as MONAI Label's own server does.

    Raises:
        ApiError: 400 for what is not JSON, a click or ROI that is not numbers or lies outside the
            scan, or neither a foreground click nor an ROI.
    """
    params = params_of(text, '{"foreground": [[i, j, k]], "roi": [i1, i2, j1, j2, k1, k2]}')
    size_ijk = (shape_kji[2], shape_kji[1], shape_kji[0])
    foreground = _clicks(params.get("foreground"), "foreground", size_ijk)
    background = _clicks(params.get("background"), "background", size_ijk)
    roi = _roi(params.get("roi"), size_ijk)
    if not foreground and not background and roi is None:
        raise ApiError(400, "give the structure: at least one foreground click [i, j, k] or an roi [i1, i2, j1, j2, k1, k2] "
                            "(voxel indices)")
    extension = str(params.get("result_extension") or ".nii.gz").lower()
    if extension not in RESULT_EXTENSIONS:
        raise ApiError(400, f"result_extension {extension!r} is not one medsam2 writes; choose one of {', '.join(RESULT_EXTENSIONS)}")
    dtype = str(params.get("result_dtype") or "uint8")
    if dtype not in RESULT_DTYPES:
        raise ApiError(400, f"result_dtype {dtype!r}: choose one of {', '.join(RESULT_DTYPES)}")
    label = params.get("label")
    return InferRequest(foreground, background, roi, label if isinstance(label, str) and label else None, extension, dtype,
                        params.get("result_compress", True) is not False)


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise ApiError(400, f"{what} holds {str(value)[:40]}; voxel indices are numbers")
    if abs(value) > 2**31:
        raise ApiError(400, f"{what} holds {str(value)[:40]}: no scan is that large")
    return int(round(value))


def _clicks(value: object, what: str, size_ijk: tuple[int, int, int]) -> tuple[tuple[int, int, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or any(not isinstance(p, list) or len(p) != 3 for p in value):
        raise ApiError(400, f"{what} is a list of clicks [[i, j, k], ...] (voxel indices)")
    clicks = []
    for point in value:
        index = tuple(_whole(v, what) for v in point)
        if any(not 0 <= v < n for v, n in zip(index, size_ijk)):
            raise ApiError(400, f"{what} click {list(index)} lies outside the scan ({size_ijk[0]} x {size_ijk[1]} x {size_ijk[2]} "
                                "voxels, i x j x k)")
        clicks.append(index)
    return tuple(clicks)


def _roi(value: object, size_ijk: tuple[int, int, int]) -> VoxelBounds | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list) or len(value) != 6:
        raise ApiError(400, "roi is [i1, i2, j1, j2, k1, k2]: each axis's two ends (voxel indices)")
    ends = [_whole(v, "roi") for v in value]
    bounds = []
    for axis, size in enumerate(size_ijk):
        low, high = sorted(ends[2 * axis : 2 * axis + 2])
        low, high = max(low, 0), min(high, size - 1)
        if low > high:
            raise ApiError(400, f"roi {ends} lies outside the scan ({size_ijk[0]} x {size_ijk[1]} x {size_ijk[2]} voxels, i x j x k)")
        bounds.append((low, high))
    return tuple(bounds)  # type: ignore[return-value]
