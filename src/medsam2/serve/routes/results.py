"""A session's results: the label map as a file, stored on the PACS, and the report."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from medsam2.errors import MedSAM2Error
from medsam2.io.formats import DICOM_KINDS, label_format
from medsam2.io.writers import save_mask
from medsam2.serve.bodies import PushBody
from medsam2.serve.deps import State
from medsam2.serve.errors import ApiError, one_line
from medsam2.serve.store import ServedSession
from medsam2.serve.views import DICOM_DOWNLOAD_NAMES, LABEL_FORMATS, stem

router = APIRouter()


@router.get("/api/sessions/{session_id}/labels")
def labels(session_id: str, state: State, format: str = "nii.gz"):
    """The label map of the segmented objects in the input's geometry (all zeros before any)."""
    if format not in LABEL_FORMATS:
        raise ApiError(400, f"unknown format {format!r}; choose one of {', '.join(LABEL_FORMATS)}")
    with state.store.working(session_id) as served:
        # the label map alone uses no model: it does not wait for other sessions' propagations
        result = served.session.result(propagate_pending=False, sanity=False)
        out = write_labels(served, result, format)
    chosen = label_format(format)
    suffix = f"{DICOM_DOWNLOAD_NAMES[chosen.dicom_kind]}.dcm" if chosen.dicom_kind else f"labels{chosen.suffix}"
    return FileResponse(out, media_type="application/octet-stream", filename=f"{stem(served.name)}_{suffix}",
                        background=BackgroundTask(out.unlink, missing_ok=True))


@router.post("/api/sessions/{session_id}/push")
def push(session_id: str, state: State, body: PushBody | None = None) -> dict:
    """Store the label map as a DICOM SEG or RT-STRUCT on the PACS the series came from (STOW-RS)."""
    from medsam2.io.dicomweb import store

    body = body or PushBody()
    with state.store.working(session_id) as served:
        if served.pacs is None:
            raise ApiError(400, "this scan was not opened from the PACS; save it as a file instead")
        result = served.session.result(propagate_pending=False, sanity=False)
        if not result.report.objects:
            raise ApiError(409, "nothing is segmented yet; propagate first")
        out = write_labels(served, result, body.format)
        try:
            uid = store(served.pacs.root, out)
        except MedSAM2Error as exc:
            raise ApiError(502, one_line(exc)) from None
        finally:
            out.unlink(missing_ok=True)
    return {"stored": uid, "format": body.format, "server": served.pacs.root, "study": served.pacs.study_uid}


@router.get("/api/sessions/{session_id}/report")
def report(session_id: str, state: State) -> dict:
    """The report ``medsam2 segment --report`` writes, for the segmented objects."""
    with state.store.working(session_id) as served:
        with state.model_lock:
            data = served.session.result(propagate_pending=False).report.to_dict()
    data["input"] = served.name
    return data


def write_labels(served: ServedSession, result, format: str) -> Path:
    """The session's label map written in its folder under a name of its own (the response reads it
    after the session is free again); a DICOM format names the model that made it."""
    from medsam2.engine.jobs import provenance_of

    chosen = label_format(format)
    out = served.folder / f"labels-{secrets.token_hex(6)}{chosen.suffix}"
    names = {obj.label: obj.name for obj in result.report.objects}
    kind = chosen.dicom_kind or DICOM_KINDS[0]
    return save_mask(result.labels, served.session.volume, out, names=names, dicom_kind=kind, provenance=provenance_of(result))
