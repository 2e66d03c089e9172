"""One MONAI Label ``/infer``: the session it runs on, the structure its prompts give, and the
answer in the form MONAI Label's clients read (the label file alone, the JSON alone, or both as
one ``multipart/form-data`` answer)."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable

import numpy as np
from fastapi.responses import JSONResponse, Response

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


def image_session(state: ServerState, image_id: str) -> ServedSession:
    """The session that ``/infer?image=ID`` runs on, held (give it back with
    ``state.store.release``): opened on first use and kept while it stays open (it counts against
    ``--max-sessions`` and closes when idle). ``ID`` is a project case (its scan alone, with the
    project's active model; reopened when another model became active) or, with ``--dicomweb``, a
    series of the PACS by its SeriesInstanceUID (as OHIF names the series on screen).

    Raises:
        ApiError: 404 for an ID that is neither.
    """
    clients = state.label_clients
    with clients.image_lock(image_id):
        known = clients.of_image(image_id)
        if known is not None:
            try:
                served = state.store.acquire(known)
            except ApiError:  # closed meanwhile (idle, or to make room)
                served = None
            if served is not None and (served.case is None or served.case.model == _active_model(state)):
                return served
            if served is not None:  # a newer model became active: its answers are wanted
                state.store.release(served)
                _close(state, known)
        if state.settings.project is not None and image_id in case_ids(state):
            served = _making_room(state, lambda: _open_case(state, image_id))
        elif state.settings.dicomweb is not None:
            served = _making_room(state, lambda: _open_series(state, image_id))
        else:
            where = "no case" if state.settings.project is not None else "no project (serve --project DIR) and no PACS (--dicomweb)"
            raise ApiError(404, f"image '{image_id}': this server has {where} of that name")
        served.autosave = False  # a client's work is saved by its save_label
        clients.set_image(image_id, served.id)
        return state.store.acquire(served.id)


def _close(state: ServerState, session_id: str) -> None:
    try:
        state.store.delete(session_id)
    except ApiError:  # closed meanwhile
        pass
    state.label_clients.forget(session_id)


def _making_room(state: ServerState, opening: Callable[[], ServedSession]) -> ServedSession:
    """``opening()``, and when the server is full (429: ``--max-sessions``; 413: ``--max-volume-mb``)
    again after closing the least recently used session of a MONAI Label client that no request
    works on (an annotator moving on to the next sample leaves the last one behind; sessions of
    the page are never closed for it)."""
    while True:
        try:
            return opening()
        except ApiError as exc:
            if exc.status not in (413, 429):
                raise
            closed = state.store.close_idlest(state.label_clients.session_ids())
            if closed is None:
                raise
            state.label_clients.forget(closed)


def _open_case(state: ServerState, case_id: str) -> ServedSession:
    with state.store.reserve() as folder:
        return open_case(state, folder, case_id, AXIS, "auto", version=0)


def _active_model(state: ServerState) -> str | None:
    if state.settings.project is None:
        return None
    with project_of(state) as store:
        return active_model_name(store)


def case_ids(state: ServerState) -> set[str]:
    """The project's case names."""
    with project_of(state) as store:
        return {c.case_id for c in store.cases()}


def _open_series(state: ServerState, series_uid: str) -> ServedSession:
    """A session on a series of the ``--dicomweb`` PACS named by its SeriesInstanceUID alone."""
    from medsam2.errors import InputError
    from medsam2.io.dicomweb import find_series
    from medsam2.serve.opening import fetch_series, open_scan
    from medsam2.serve.project_cases import current_segmenter

    try:
        address = find_series(state.settings.dicomweb, series_uid)
    except InputError as exc:
        raise ApiError(404 if "holds no series" in str(exc) or "is not a DICOM" in str(exc) else 502, str(exc)) from None
    segmenter = None
    if state.settings.project is not None:
        with project_of(state) as store:
            segmenter, _ = current_segmenter(state, store)
    with state.store.reserve() as folder:
        pacs, path, name = fetch_series(state.settings, address.study_uid, series_uid, folder)
        return open_scan(state, folder, path, name, AXIS, "auto", pacs, folder, segmenter=segmenter)


def segment(state: ServerState, served: ServedSession, request: InferRequest) -> np.ndarray:
    """The structure the request's prompts give, (k, j, i) bool on the scan's grid: the prompts
    are one new object of the session, propagated, read and removed again (the session is left
    as it was). Call holding the session."""
    session = served.session
    if request.finds_nothing:
        return np.zeros(session.volume.array.shape[:3], dtype=bool)
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


def check_output(output: str) -> str:
    """``output`` if medsam2 answers it (checked before any work).

    Raises:
        ApiError: 400 for another (``dicom_seg`` included).
    """
    if output not in OUTPUTS:
        raise ApiError(400, f"output {output!r} is not one medsam2 answers; choose one of {', '.join(OUTPUTS)}")
    return output


def answer(served: ServedSession, mask: np.ndarray, request: InferRequest, output: str, name: str, began: float) -> Response:
    """The answer to ``/infer``: the label file (0 background, 1 the structure, on the scan's grid)
    and/or the JSON ``params`` (``label_names``, ``latencies``, the slices found), as ``output`` asks."""
    check_output(output)
    present = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    params = {"label_names": {request.label or name: 1}, "latencies": {"total": round(time.perf_counter() - began, 3)},
              "slices": [int(present[0]), int(present[-1])] if present.size else [], "voxels": int(mask.sum())}
    if output == "json":
        return JSONResponse(params)
    data = label_file_bytes(mask, served, request)
    filename = f"{safe_stem(served.name)}_medsam2{request.result_extension}"
    if output == "image":
        return Response(content=data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    return multipart_answer(params, filename, data)


def label_file_bytes(mask: np.ndarray, served: ServedSession, request: InferRequest) -> bytes:
    """``mask`` as the label file the request asks for (type, voxel type, compression), in the scan's geometry."""
    import SimpleITK as sitk

    from medsam2.io.writers import image_in_geometry

    out = served.folder / f"monailabel-{secrets.token_hex(6)}{request.result_extension}"
    try:
        image = image_in_geometry(mask.astype(np.dtype(request.result_dtype)), served.session.volume)
        sitk.WriteImage(image, str(out), useCompression=request.result_compress)
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


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
