"""What a segmentation gives back: the label map and a report a user can judge and reproduce."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from medsam2.engine.feature_cache import CacheStats


@dataclass
class ObjectReport:
    """What was found for one object. Slice indices are along the slicing axis."""

    label: int
    name: str | None
    slices: list[int]
    first_slice: int | None
    last_slice: int | None
    voxels: int
    #: millilitres for a 3D scan; None for a 2D image (see ``area_mm2`` and ``area_pixels``)
    volume_ml: float | None
    mean_confidence: float | None
    min_confidence: float | None
    confidence_per_slice: dict[int, float]
    prompted_slices: list[int]
    #: a 2D image's area in mm^2 where the file states its pixel spacing, else None
    area_mm2: float | None = None
    #: a 2D image's area in pixels (None for a 3D scan)
    area_pixels: int | None = None

    def size_text(self) -> str:
        """"271.0 mL" for a 3D scan, "1234.5 mm^2" or "1580 pixels" for a 2D image."""
        if self.volume_ml is not None:
            return f"{self.volume_ml:.1f} mL"
        if self.area_mm2 is not None:
            return f"{self.area_mm2:.1f} mm^2"
        return f"{self.area_pixels} pixels"


@dataclass
class Timings:
    """Seconds spent, and seconds per encoded slice."""

    preprocess_seconds: float = 0.0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    total_seconds: float = 0.0
    seconds_per_encoded_slice: float = 0.0
    read_seconds: float | None = None
    write_seconds: float | None = None


@dataclass
class SegmentationReport:
    """Everything a user needs to judge and reproduce a segmentation."""

    medsam2_version: str
    backbone: str
    checkpoint: str | None
    device: str
    runtime: str
    precision: str
    memory: str
    axis: str
    window: str
    input: str
    size_xyz: list[int]
    spacing_xyz: list[float]
    slices_total: int
    slices_encoded: int
    decode_calls: int
    objects: list[ObjectReport]
    timings: Timings
    warnings: list[str] = field(default_factory=list)
    #: the session's feature cache: hits, misses (slices encoded), evictions, size
    feature_cache: CacheStats | None = None
    #: corrections made in the session that gave this result
    corrections: int = 0
    #: the voxel axis ("k", "j" or "i") the slices were taken along (``axis`` as given names it)
    voxel_axis: str = "k"
    #: the engine's settings as they ran (PropagationSettings or Sam2TrackingSettings, as a dict)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        for obj in data["objects"]:
            obj["confidence_per_slice"] = {str(k): round(v, 4) for k, v in obj["confidence_per_slice"].items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclass
class SegmentationResult:
    """A label map in the input volume's voxel grid (z, y, x), and its report."""

    labels: np.ndarray
    report: SegmentationReport
