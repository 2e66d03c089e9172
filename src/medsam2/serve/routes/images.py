"""A session's other images of the study: add one (an upload or a path under ``--data``), list
them, fetch one for the page, and choose which the model sees."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from medsam2.serve.bodies import DataPathBody, ModelInputBody
from medsam2.serve.datadir import resolve_data_path
from medsam2.serve.deps import Served, ServerState, State
from medsam2.serve.errors import ApiError, validation_text
from medsam2.serve.study_images import add_study_image, choose_model_input, describe_images, image_file, room_for_one, study_image
from medsam2.serve.uploads import receive_upload, unpack_zip
from medsam2.serve.views import stem

router = APIRouter()

_ADD_BODIES = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
    "application/json": {"schema": DataPathBody.model_json_schema()},
}}}


@router.post("/api/sessions/{session_id}/images", openapi_extra=_ADD_BODIES)
async def add_image(session_id: str, request: Request, state: State) -> dict:
    """Add another image of the study (FLAIR beside T1c, PET over CT): a multipart upload (field
    ``file``: NIfTI, NRRD, MHA or a zip of a DICOM series) or JSON ``{"path": ...}`` under
    ``--data``. An image on another grid is resampled onto the scan's (SimpleITK, linear, by the
    headers' positions: no registration). The answer lists the session's images."""
    room_for_one(state, session_id)  # refused before a byte of the image arrives
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = DataPathBody.model_validate_json(await request.body())
        except ValidationError as exc:
            raise ApiError(400, validation_text(exc.errors())) from None
        path = resolve_data_path(state.settings.data_dir, body.path)
        return await run_in_threadpool(_add, state, session_id, path, body.path, state.settings.data_dir, False)
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace)
        if upload.file is None:
            raise ApiError(400, "no file in the upload: send the image in the multipart field 'file'")
        return await run_in_threadpool(_add, state, session_id, upload.file, upload.filename or upload.file.name, folder, True)


def _add(state: ServerState, session_id: str, path, name: str, confine_to, uploaded: bool) -> dict:
    """Read the image onto the session's grid, in a worker thread (an uploaded zip of a DICOM series unpacked first)."""
    if uploaded and path.name.lower().endswith(".zip"):
        path = unpack_zip(path, confine_to / "series", state.settings.max_upload_bytes)
    with state.store.working(session_id) as served:
        add_study_image(state, served, path, name, confine_to)
        return {"images": describe_images(served)}


@router.get("/api/sessions/{session_id}/images")
def list_images(served: Served) -> dict:
    """The session's images: the scan (0) and the others, with which the model sees."""
    return {"images": describe_images(served)}


@router.get("/api/sessions/{session_id}/images/{index}")
def image(index: int, served: Served):
    """Image ``index`` on the scan's grid, as NIfTI (what the page shows)."""
    shown = study_image(served, index)
    name = served.name if shown is None else shown.name
    return FileResponse(image_file(served, index), media_type="application/octet-stream", filename=f"{stem(name)}.nii.gz")


@router.put("/api/sessions/{session_id}/model-input")
def model_input(session_id: str, body: ModelInputBody, state: State) -> dict:
    """Choose the image the model sees from now on (0: the scan): later propagations and
    corrections encode it; the answers so far stay. The answer lists the session's images."""
    with state.store.working(session_id) as served:
        with state.model_lock:
            choose_model_input(served, body.image, body.window)
        return {"images": describe_images(served)}
