"""Sessions: open a scan (an upload, a path under ``--data`` or a series on the PACS), read a
session's info and its scan, close it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from medsam2.serve.bodies import OpenBody
from medsam2.serve.datadir import resolve_data_path
from medsam2.serve.deps import Served, ServerState, State, Store
from medsam2.serve.errors import ApiError, validation_text
from medsam2.serve.opening import fetch_series, open_scan
from medsam2.serve.uploads import receive_upload
from medsam2.serve.views import session_info, stem

router = APIRouter()

#: the request bodies POST /api/sessions takes, for the OpenAPI page (the route reads the body itself)
_OPEN_BODIES = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"}, "axis": {"type": "string"}, "window": {"type": "string"}}}},
    "application/json": {"schema": OpenBody.model_json_schema()},
}}}


@router.post("/api/sessions", openapi_extra=_OPEN_BODIES)
async def open_session(request: Request, state: State) -> dict:
    """Open a scan: a multipart upload (field ``file``: NIfTI, NRRD, MHA or a zip of a DICOM
    series; optional ``axis``, ``window``) or JSON ``{"path": ...}`` under ``--data``.

    An upload takes a session slot only once it has arrived (a slow one holds no slot)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        return await _open_named(request, state)
    return await _open_upload(request, state)


async def _open_named(request: Request, state: ServerState) -> dict:
    """Open a scan named by a JSON body: a path under ``--data`` or a series on the PACS."""
    settings = state.settings
    try:
        body = OpenBody.model_validate_json(await request.body())
    except ValidationError as exc:
        raise ApiError(400, validation_text(exc.errors())) from None
    if (body.path is None) == (body.dicomweb is None):
        raise ApiError(400, "give either 'path' (a scan under --data) or 'dicomweb' (a series on the PACS)")
    with state.store.reserve() as folder:
        if body.dicomweb is not None:
            pacs, path, name = await run_in_threadpool(fetch_series, settings, body.dicomweb.study, body.dicomweb.series, folder)
            confine_to = folder
        else:
            path, name, pacs = resolve_data_path(settings.data_dir, body.path), body.path, None
            confine_to = settings.data_dir
        served = await run_in_threadpool(open_scan, state, folder, path, name, body.axis, body.window, pacs, confine_to)
    return session_info(served)


async def _open_upload(request: Request, state: ServerState) -> dict:
    """Open the scan of a multipart upload, received into a staging folder before it takes a slot."""
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace)
        if upload.file is None:
            raise ApiError(400, "no file in the upload: send the scan in the multipart field 'file'")
        path, name = upload.file, upload.filename or upload.file.name
        axis, window = upload.fields.get("axis", "axial"), upload.fields.get("window", "auto")
        with state.store.reserve(folder):
            served = await run_in_threadpool(open_scan, state, folder, path, name, axis, window, None, folder)
    return session_info(served)


@router.get("/api/sessions/{session_id}")
def get_session(served: Served) -> dict:
    return session_info(served)


@router.get("/api/sessions/{session_id}/volume")
def volume(served: Served):
    return FileResponse(served.folder / "volume.nii.gz", media_type="application/octet-stream",
                        filename=f"{stem(served.name)}.nii.gz")


@router.delete("/api/sessions/{session_id}")
def delete(session_id: str, store: Store) -> dict:
    store.delete(session_id)
    return {"deleted": session_id}
