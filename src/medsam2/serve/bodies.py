"""The JSON bodies of the server's requests (FastAPI documents them at /docs).

Coordinates are as on the command line: 0-based voxel indices, ``slice`` along the session's axis,
``x`` the frame's column and ``y`` its row (GET /api/sessions/ID gives which voxel axes they are).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from medsam2.engine.smoothing import SMOOTHING_METHODS
from medsam2.project.vocabulary import STATUSES
from medsam2.serve.errors import ApiError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PacsSeries(_Strict):
    """A series on the server's PACS (``--dicomweb``), as GET /api/dicomweb lists it."""

    study: str = Field(pattern=r"^[0-9.]{1,64}$", description="Study Instance UID")
    series: str = Field(pattern=r"^[0-9.]{1,64}$", description="Series Instance UID")


class OpenBody(_Strict):
    """Open a scan from the server's data folder, or a series from its PACS."""

    path: str | None = Field(None, description="a name under --data, as GET /api/data lists it")
    dicomweb: PacsSeries | None = Field(None, description="a series on the --dicomweb PACS")
    axis: str = Field("axial", description="axial, coronal, sagittal (the patient's) or k, j, i (voxel axes)")
    window: str = Field("auto", description="the model's intensity window: auto, a CT preset, percentile, none")


class DataPathBody(_Strict):
    """A file under the server's ``--data`` folder."""

    path: str = Field(description="a name under --data, as GET /api/data lists it")


class ModelInputBody(_Strict):
    """Which of the session's images the model sees (0: the scan) and its intensity window."""

    image: int = Field(ge=0, description="0: the scan; 1, 2, ...: the images added by POST .../images")
    window: str | None = Field(None, max_length=40, description="the model's intensity window: auto, a CT preset, percentile, "
                               "none; null: auto for an image, the session's own for the scan")


class CaseOpenBody(_Strict):
    """Open a project case."""

    axis: str = Field("axial", description="axial, coronal, sagittal (the patient's) or k, j, i (voxel axes)")
    window: str = Field("auto", description="the model's intensity window: auto, a CT preset, percentile, none")
    version: int | None = Field(None, ge=0, description="the saved version to open for editing; null: the newest; 0: none (the scan alone)")


class ProjectSaveBody(_Strict):
    """Save the session's label map into the project as a new version of its case."""

    status: str = Field("draft", pattern=f"^({'|'.join(STATUSES)})$",
                        description="draft (work in progress) or final (done: training reads it)")
    user: str | None = Field(None, max_length=120, description="who made it (kept in the version's provenance)")


class PushBody(_Strict):
    """Store the label map on the PACS the series came from."""

    format: str = Field("dicom-seg", pattern=r"^(dicom-seg|rtstruct)$", description="dicom-seg or rtstruct")


class BoxBody(_Strict):
    slice: int
    box: list[float] = Field(min_length=4, max_length=4, description="[x0, y0, x1, y1], inclusive voxel indices")


class PointBody(_Strict):
    slice: int
    point: list[float] = Field(min_length=2, max_length=2, description="[x, y]")
    positive: bool = Field(True, description="true: on the structure (+); false: background (-)")


class MaskBody(_Strict):
    slice: int
    png_base64: str = Field(description="a PNG of the slice's size (columns x rows); non-zero pixels are the mask")


class BrushBody(MaskBody):
    """A stroke of the spherical 3D brush: every voxel within ``radius_mm`` of the stroke (the PNG) in 3D."""

    radius_mm: float = Field(ge=0, le=500, description="the ball's radius in mm (0: the stroke's slice only)")
    erase: bool = Field(False, description="take the voxels out of the object instead")
    within: list[float] | None = Field(None, min_length=2, max_length=2, description="[low, high]: only voxels whose intensity is within")
    name: str | None = Field(None, max_length=200, description="the name of an object the stroke creates")


class IslandsBody(_Strict):
    """Which islands of an object to keep: its largest (``min_voxels`` null) or every one of at least that many voxels."""

    min_voxels: int | None = Field(None, ge=1)


class SmoothBody(_Strict):
    """How to smooth an object: the method and the kernel's width in mm (null: three voxels of the slice's finer spacing)."""

    method: str = Field("median", pattern=f"^({'|'.join(SMOOTHING_METHODS)})$",
                        description="median, opening (removes extrusions) or closing (fills holes)")
    kernel_mm: float | None = Field(None, gt=0, le=200)


class ObjectPatchBody(_Strict):
    """An object's new name and/or its lock (a locked object wins the voxels it shares with another)."""

    name: str | None = Field(None, min_length=1, max_length=200)
    locked: bool | None = None


class PromptBody(_Strict):
    """One prompt for an object that is not propagated yet (it creates the object when the label is new)."""

    box: BoxBody | None = None
    point: PointBody | None = None
    mask: MaskBody | None = None
    name: str | None = Field(None, max_length=200)

    def given(self) -> list[str]:
        return [kind for kind in ("box", "point", "mask", "erase") if getattr(self, kind, None) is not None]


class CorrectionBody(PromptBody):
    """One correction on one slice of a propagated object: a box (replaces the slice's prompts), a
    click (adds to the slice's clicks), a mask (replaces the slice's answer) or an erase."""

    erase: MaskBody | None = None


class PropagateBody(_Strict):
    labels: list[int] | None = Field(None, description="propagate only these objects (default: every one not propagated yet)")
    masks: bool = Field(False, description="add each slice's mask to its line as 'rle': [start, length, ...] of the row-major frame")


def one_kind(body: PromptBody, kinds: tuple[str, ...]) -> str:
    """The one kind of prompt the body holds.

    Raises:
        ApiError: 400 when it holds none or more than one.
    """
    given = body.given()
    if len(given) != 1:
        raise ApiError(400, f"give exactly one of {', '.join(kinds)} (got {', '.join(given) or 'none'})")
    return given[0]


def decode_mask(mask: MaskBody, rows: int, cols: int) -> np.ndarray:
    """The (rows, cols) bool mask a PNG holds (non-zero pixels; any channel).

    Raises:
        ApiError: 400 for text that is not base64, data that is not an image, or another size.
    """
    text = mask.png_base64.split(",", 1)[1] if mask.png_base64.startswith("data:") else mask.png_base64
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "png_base64 is not base64 text") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.size != (cols, rows):  # from the header alone: nothing decoded yet
                    raise ApiError(400, f"the mask PNG is {image.size[0]}x{image.size[1]} pixels; the slice is {cols}x{rows} "
                                        "(columns x rows)")
                image.load()
                array = np.asarray(image)
    except Image.DecompressionBombError:
        raise ApiError(400, f"the mask PNG declares far more pixels than the slice's {cols}x{rows} (columns x rows)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ApiError(400, "png_base64 does not hold a PNG image") from None
    if array.ndim == 3:
        channels = array[..., :3] if array.shape[-1] >= 3 else array
        if array.shape[-1] in (2, 4):  # a transparent pixel is not drawn
            channels = np.where(array[..., -1:] > 0, channels, 0)
        array = channels.max(axis=-1)
    return array > 0


def run_lengths(mask: np.ndarray) -> list[int]:
    """[start, length, start, length, ...] of the runs of True in the row-major flattened mask."""
    flat = np.concatenate([[0], np.asarray(mask, dtype=np.int8).ravel(), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[::2], edges[1::2]
    return np.column_stack([starts, ends - starts]).ravel().tolist()
