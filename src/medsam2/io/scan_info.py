"""``medsam2 info``: what a scan is, in the words a user needs to prompt it.

Size, spacing, orientation code, which voxel axis each of the patient's axes is (and how oblique),
the intensity range and the window ``auto`` picks, a modality guess, and how the viewers number
voxels, so that a cursor position read in a viewer becomes a medsam2 prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk

from medsam2.io.slicing import ANATOMICAL_AXES, anatomical_axes, obliquity_degrees
from medsam2.io.volume import Volume, data_file_names
from medsam2.io.windows import choose_window, looks_like_ct

#: how common viewers number what medsam2 calls voxel (i, j, k) and where their millimetres point
VIEWER_CONVENTIONS = (
    "medsam2: voxel indices (i, j, k) from 0; --box SLICE:x0,y0,x1,y1 with SLICE along --axis",
    "3D Slicer: Data Probe 'IJK' is 0-based, as medsam2; its millimetres are RAS: pass them with --box-mm/--point-mm --ras",
    "ITK-SNAP: the cursor position (voxel) is 1-based: pass it with --index-base 1, or subtract 1",
    "SimpleITK/ITK, DICOM: millimetres are LPS: --box-mm/--point-mm as they are",
)


@dataclass(frozen=True)
class AxisInfo:
    """One anatomical axis of the patient and the voxel axis that runs along it."""

    anatomical: str
    voxel_axis: str
    slices: int
    spacing_mm: float
    degrees_off: float  # angle between the voxel axis and the patient's axis (0: not oblique)


@dataclass(frozen=True)
class ScanInfo:
    """What ``medsam2 info`` prints (and writes as JSON with ``--json``)."""

    source: str
    size_xyz: list[int]
    spacing_xyz: list[float]
    origin_xyz: list[float]
    direction: list[float]
    orientation: str  # e.g. "LPS": the direction each voxel axis i, j, k points towards
    axes: list[AxisInfo]
    is_2d: bool
    spacing_known: bool  # False where the file states no spacing (PNG, JPEG, BMP, GIF)
    dtype: str
    intensity_min: float
    intensity_max: float
    percentile_0_5: float
    percentile_99_5: float
    modality: str
    modality_from: str  # "DICOM header", "values", ...
    auto_window: str
    viewer_conventions: list[str]
    warnings: list[str]
    #: the detached data files a header pulled its voxels from (relative to its folder where in it)
    data_files: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_text(self) -> str:
        size = " x ".join(str(s) for s in self.size_xyz)
        spacing = " x ".join(f"{s:g}" for s in self.spacing_xyz)
        lines = [f"{self.source}"]
        if self.data_files:
            more = f" and {len(self.data_files) - 5} more" if len(self.data_files) > 5 else ""
            lines.append(f"  data files         {', '.join(self.data_files[:5])}{more}")
        lines += [
            f"  size (i, j, k)     {size} voxels{' (a 2D image)' if self.is_2d else ''}",
            f"  spacing            {spacing} mm" if self.spacing_known else "  spacing            not stated in the file (areas in pixels)",
            f"  origin (LPS)       {', '.join(f'{v:.2f}' for v in self.origin_xyz)} mm",
            f"  orientation        {self.orientation} (i, j, k point towards {', '.join(_towards(c) for c in self.orientation)})",
        ]
        if not self.is_2d:
            for axis in self.axes:
                oblique = f", {axis.degrees_off:.1f} degrees oblique" if axis.degrees_off >= 0.5 else ""
                lines.append(
                    f"  --axis {axis.anatomical:<9} = voxel axis {axis.voxel_axis}: {axis.slices} slices of {axis.spacing_mm:g} mm{oblique}"
                )
        lines += [
            f"  values             {self.dtype}, {self.intensity_min:g} .. {self.intensity_max:g} "
            f"(0.5-99.5 percentiles {self.percentile_0_5:g} .. {self.percentile_99_5:g})",
            f"  modality           {self.modality} ({self.modality_from}); --window auto uses '{self.auto_window}'",
            "  coordinates",
            *(f"    {line}" for line in self.viewer_conventions),
        ]
        lines += [f"  warning: {note}" for note in self.warnings]
        return "\n".join(lines)


_TOWARDS = {"L": "left", "R": "right", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}


def _towards(code: str) -> str:
    return _TOWARDS.get(code, code)


def orientation_code(direction: tuple[float, ...]) -> str:
    """The three-letter code of the directions voxel axes i, j, k point towards (DICOM's
    convention as SimpleITK's DICOMOrientImageFilter gives it: identity is "LPS")."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(v) for v in direction])


def describe(volume: Volume) -> ScanInfo:
    """The facts about ``volume`` that ``medsam2 info`` prints."""
    mapping = anatomical_axes(volume.direction)
    degrees = obliquity_degrees(volume.direction)
    column = {"i": 0, "j": 1, "k": 2}
    size_xyz = list(reversed(volume.shape))
    axes = []
    for name in ANATOMICAL_AXES:
        c = column[mapping[name]]
        axes.append(AxisInfo(name, mapping[name], size_xyz[c], float(volume.spacing[c]), round(degrees[name], 2)))
    data = volume.array[..., 0] if volume.is_color else volume.array
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data.reshape(-1)
    sample = finite[:: max(1, finite.size // 2_000_000)].astype(np.float64)
    low_p, high_p = (float(v) for v in np.percentile(sample, [0.5, 99.5])) if sample.size else (math.nan, math.nan)
    window = choose_window(volume.array, "auto", volume.modality)
    if volume.modality:
        modality, source = volume.modality, "DICOM header"
    elif looks_like_ct(volume.array, None):
        modality, source = "CT", "values look like Hounsfield units"
    elif volume.is_2d:
        modality, source = "photograph or 2D image" if volume.is_color else "2D grey image", "file type"
    else:
        modality, source = "MR, US or PET (not CT)", "values are not Hounsfield units"
    notes = list(volume.warnings)
    if window.empty:
        notes.append(window.empty)
    oblique = [a for a in axes if a.degrees_off >= 0.5]
    if oblique and not volume.is_2d:
        notes.append(
            f"the voxel grid is oblique ({max(a.degrees_off for a in oblique):.1f} degrees): an anatomical --axis takes the "
            "nearest voxel axis, and --box-mm corners snap to the nearest voxel centres"
        )
    return ScanInfo(
        source=volume.source,
        size_xyz=size_xyz,
        spacing_xyz=[float(s) for s in volume.spacing],
        origin_xyz=[float(v) for v in volume.origin],
        direction=[float(v) for v in volume.direction],
        orientation=orientation_code(volume.direction),
        axes=axes,
        is_2d=volume.is_2d,
        spacing_known=volume.spacing_known,
        dtype=str(volume.array.dtype),
        intensity_min=float(finite.min()) if finite.size else math.nan,
        intensity_max=float(finite.max()) if finite.size else math.nan,
        percentile_0_5=low_p,
        percentile_99_5=high_p,
        modality=modality,
        modality_from=source,
        auto_window=window.name,
        viewer_conventions=list(VIEWER_CONVENTIONS),
        warnings=notes,
        data_files=data_file_names(volume),
    )
