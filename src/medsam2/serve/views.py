"""What the routes answer with: a session as the page sees it, the segmented objects' summary, and
the names downloads are saved as."""

from __future__ import annotations

from pathlib import Path

from medsam2.engine.sanity import LOW_CONFIDENCE
from medsam2.io.formats import format_names
from medsam2.io.volume import suffix_of
from medsam2.serve.store import ServedSession
from medsam2.serve.viewer_files import FRAME_AXES

#: label map formats GET .../labels writes (the registry's names and older spellings)
LABEL_FORMATS = format_names()
#: the name a DICOM format's download is saved as (NAME.dcm)
DICOM_DOWNLOAD_NAMES = {"dicom-seg": "seg", "rtstruct": "rtstruct"}


def stem(name: str) -> str:
    """The scan's name without folders or its suffix: what its downloads are named after."""
    base = Path(name).name
    suffix = suffix_of(Path(base))
    return (base[: -len(suffix)] if suffix and base.endswith(suffix) else base) or "scan"


def session_info(served: ServedSession) -> dict:
    """What the page needs to show a session's scan and place its prompts."""
    session = served.session
    volume = session.volume
    return {
        "session": served.id,
        "name": served.name,
        "shape_zyx": list(volume.shape),
        "spacing_xyz": [float(s) for s in volume.spacing],
        "axis": session.axis,
        "voxel_axis": session.voxel_axis,
        "frame_axes": FRAME_AXES[session.voxel_axis],
        "frames": list(session.shape),
        "is_2d": volume.is_2d,
        "dicom": bool(volume.dicom_files),
        "pacs": served.pacs is not None,
        "window": {"name": session.intensity.name, "low": session.intensity.low, "high": session.intensity.high},
        "window_presets": served.window_presets,
        "labels": session.labels,
        "pending": session.pending_labels(),
    }


def summary(served: ServedSession) -> dict:
    """Per segmented object: size, extent, confidence per slice and the slices to review (low
    confidence, and gaps: empty slices inside its range); call
    with the model lock held (sanity checks may decode)."""
    session = served.session
    report = session.result(propagate_pending=False).report
    objects = []
    for obj in report.objects:
        low = [k for k, v in obj.confidence_per_slice.items() if v < LOW_CONFIDENCE]
        present = set(obj.slices)
        gaps = [] if obj.first_slice is None else [k for k in range(obj.first_slice, obj.last_slice + 1) if k not in present]
        objects.append({
            "label": obj.label, "name": obj.name, "volume_ml": obj.volume_ml, "area_pixels": obj.area_pixels,
            "first_slice": obj.first_slice, "last_slice": obj.last_slice, "slices": len(obj.slices),
            "mean_confidence": obj.mean_confidence, "prompted_slices": obj.prompted_slices,
            "confidence_per_slice": {str(k): round(v, 4) for k, v in obj.confidence_per_slice.items()},
            "low_confidence_slices": low,
            # slices inside the object's range where it has no mask: a gap an annotator checks
            "gap_slices": gaps,
            "review_slices": sorted(set(low) | set(gaps)),
        })
    locked = session.locked_labels()
    for obj in objects:
        obj["locked"] = obj["label"] in locked
    return {"objects": objects, "pending": session.pending_labels(), "labels": session.labels, "warnings": report.warnings,
            "corrections": report.corrections}
