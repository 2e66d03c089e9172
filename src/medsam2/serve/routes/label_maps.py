"""A label map opened onto a session: last week's work or another model's output, uploaded and
laid on the scan as objects to correct (:meth:`medsam2.engine.session.Session.open_labels`)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from medsam2.errors import MedSAM2Error
from medsam2.io.readers import read_mask
from medsam2.serve.deps import ServerState, State
from medsam2.serve.errors import ApiError
from medsam2.serve.opening import relative_message
from medsam2.serve.uploads import receive_upload
from medsam2.serve.views import summary

router = APIRouter()

_UPLOAD_BODY = {"requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
    "file": {"type": "string", "format": "binary"}, "names": {"type": "string"}}}}}}}


@router.post("/api/sessions/{session_id}/labels", openapi_extra=_UPLOAD_BODY)
async def open_label_map(session_id: str, request: Request, state: State) -> dict:
    """Lay a label map on the session's scan: multipart field ``file`` (NIfTI, NRRD, MHA, a
    ``.seg.nrrd``, or a DICOM SEG of the scan's series) on the scan's voxel grid, optional field
    ``names`` (JSON ``{"1": "liver"}``). Each label becomes an object shown voxel for voxel and
    corrected like a prompted one; a label the session has already is refused. The answer is the
    summary, with ``opened``: the labels opened."""
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace)
        if upload.file is None:
            raise ApiError(400, "no file in the upload: send the label map in the multipart field 'file'")
        names = _names(upload.fields.get("names"))
        name = upload.filename or upload.file.name
        return await run_in_threadpool(_open, state, session_id, upload.file, name, folder, names)


def _open(state: ServerState, session_id: str, path: Path, name: str, folder: Path, names: dict[int, str]) -> dict:
    with state.store.working(session_id) as served:
        try:
            labels = read_mask(path, served.session.volume, confine_to=folder)
            opened = served.session.open_labels(labels, names)
        except MedSAM2Error as exc:
            raise ApiError(400, relative_message(exc, path, name, (folder, served.folder))) from None
        with state.model_lock:
            return {"opened": opened, **summary(served)}


def _names(text: str | None) -> dict[int, str]:
    """The ``names`` field: JSON ``{"label": "name"}``."""
    if not text:
        return {}
    try:
        given = json.loads(text)
        if not isinstance(given, dict):
            raise ValueError
        return {int(label): str(value) for label, value in given.items()}
    except ValueError:
        raise ApiError(400, 'names is JSON {"1": "liver", "2": "spleen"}: label values and their names') from None
