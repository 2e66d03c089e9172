"""One MONAI Label ``/infer``: the session it runs on, the structure its prompts give, and the
answer in the form MONAI Label's clients read (the label file alone, the JSON alone, or both as
one ``multipart/form-data`` answer)."""

from __future__ import annotations

import json
import re
import secrets
import time

import numpy as np
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.background import BackgroundTask

from medsam2.io.writers import save_mask
from medsam2.project.models import active_model_name
from medsam2.serve.deps import ServerState
from medsam2.serve.errors import ApiError
from medsam2.serve.monailabel.infer_request import InferRequest
from medsam2.serve.project_cases import open_case, project_of
from medsam2.serve.store import ServedSession
from medsam2.serve.views import stem

#: the answers ``output`` may ask for (MONAI Label's; ``dicom_seg`` needs its DICOMweb datastore)
OUTPUTS = ("all", "image", "json")
#: the sessions a case's ``/infer`` calls open are sliced along the patient's axial axis
AXIS = "axial"


def case_session(state: ServerState, case_id: str) -> str:
    """The id of the session that ``/infer?image=CASE`` runs on: the one opened for the case
    before, while it is open and runs the project's active model; else a new one (the scan
    alone, no saved version laid on it). It counts against ``--max-sessions`` and closes when idle."""
    known = state.label_client_sessions.get(case_id)
    if known is not None:
        try:
            served = state.store.get(known)
        except ApiError:
            served = None
        if served is not None:
            with project_of(state) as store:
                active = active_model_name(store)
            if served.case is not None and served.case.model == active:
                return known
            state.store.delete(known)  # a newer model became active: its answers are wanted
    with state.store.reserve() as folder:
        served = open_case(state, folder, case_id, AXIS, "auto", version=0)
    state.label_client_sessions[case_id] = served.id
    return served.id


def segment(state: ServerState, served: ServedSession, request: InferRequest) -> np.ndarray:
    """The structure the request's prompts give, (k, j, i) bool on the scan's grid: the prompts
    are one new object of the session, propagated, read and removed again (the session is left
    as it was). Call holding the session."""
    session = served.session
    label = max(session.labels, default=0) + 1
    boxes, points = request.prompts(session.voxel_axis)
    with state.model_lock:
        session.add_prompts(label, request.label, boxes=boxes, points=points)
        try:
            for _ in session.propagate(labels=[label]):
                pass
            labels = session.result(propagate_pending=False, sanity=False).labels
        finally:
            session.remove(label)
    return request.confine(labels == label)


def answer(served: ServedSession, mask: np.ndarray, request: InferRequest, output: str, name: str, began: float) -> Response:
    """The answer to ``/infer``: the label file (0 background, 1 the structure, on the scan's grid)
    and/or the JSON ``params`` (``label_names``, ``latencies``, the slices found), as ``output`` asks."""
    if output not in OUTPUTS:
        raise ApiError(400, f"output {output!r} is not one medsam2 answers; choose one of {', '.join(OUTPUTS)}")
    present = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    params = {"label_names": {request.label or name: 1}, "latencies": {"total": round(time.perf_counter() - began, 3)},
              "slices": [int(present[0]), int(present[-1])] if present.size else [], "voxels": int(mask.sum())}
    if output == "json":
        return JSONResponse(params)
    out = served.folder / f"monailabel-{secrets.token_hex(6)}{request.result_extension}"
    save_mask(mask.astype(np.uint8), served.session.volume, out)
    filename = f"{safe_stem(served.name)}_medsam2{request.result_extension}"
    if output == "image":
        return FileResponse(out, media_type="application/octet-stream", filename=filename,
                            background=BackgroundTask(out.unlink, missing_ok=True))
    try:
        data = out.read_bytes()
    finally:
        out.unlink(missing_ok=True)
    return multipart_answer(params, filename, data)


def multipart_answer(params: dict, filename: str, data: bytes) -> Response:
    """``params`` (JSON) and one file as a ``multipart/form-data`` answer, as MONAI Label's
    ``/infer`` sends them (its clients parse it with ``cgi.FieldStorage``)."""
    boundary = secrets.token_hex(16)
    body = b"".join([
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'.encode(),
        json.dumps(params).encode(), b"\r\n",
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(),
        data, f"\r\n--{boundary}--\r\n".encode(),
    ])
    return Response(content=body, media_type=f"multipart/form-data; boundary={boundary}")


def safe_stem(name: str) -> str:
    """The scan's name as a safe file name stem (a client writes the answer under its own folder by it)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem(name)).strip("._") or "scan"
