"""MONAI Label's REST protocol under ``/monailabel``: point 3D Slicer's MONAI Label module, OHIF's
MONAI Label mode or ``monailabel.client`` at ``http://HOST:PORT/monailabel``.

The project is the datastore (:mod:`.monailabel_datastore`), ``medsam2`` the one
model (``deepgrow``: clicks and an ROI, :mod:`medsam2.serve.monailabel.infer_request`) and the one
trainer (the project's background training), and the project's strategies the active-learning
strategies. A model, strategy or trainer medsam2 does not have (scribbles, scoring methods, WSI)
is answered 404. Every error is ``{"error": "one line"}``; the API key and every other rule of
the server apply here too.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from medsam2._version import __version__
from medsam2.project.strategies import next_case
from medsam2.project.vocabulary import STRATEGIES
from medsam2.serve.deps import ServerState, State
from medsam2.serve.errors import ApiError
from medsam2.serve.guards import RequestPolicy
from medsam2.serve.monailabel.datastore import DEFAULT_LABEL, datastore_stats, label_names
from medsam2.serve.monailabel.infer_request import read_infer_request
from medsam2.serve.monailabel.inference import AXIS, answer, check_output, image_session, segment
from medsam2.serve.opening import open_scan
from medsam2.serve.project_cases import NO_PROJECT, project_of, start_scoring, start_training
from medsam2.serve.store import ServedSession
from medsam2.serve.uploads import Upload, receive_upload
from medsam2.serve.views import stem

router = APIRouter(prefix="/monailabel", tags=["MONAI Label"])

#: the one model and trainer
MODEL = "medsam2"
#: how long ``params`` may be (clicks and names)
PARAMS_BYTES = 256 * 1024
STRATEGY_TEXT = {
    "first": "the next case without a final label, in the project's order",
    "random": "a random case without a final label",
    "least-confident": "the case the active model is least sure of (its mean slice confidence)",
}
#: MONAI Label's words for the training's states
TRAIN_STATES = {"idle": "NONE", "running": "RUNNING", "finished": "DONE", "failed": "ERROR", "cancelled": "STOPPED"}


@router.get("/info/")
def info(state: State) -> dict:
    """The app: its labels, the ``medsam2`` model (``deepgrow``, 3D), trainer and strategies, the datastore's counts."""
    labels, stats, name, trainers, strategies, train_stats = [DEFAULT_LABEL], {"total": 0, "completed": 0}, "medsam2", {}, {}, {}
    if state.settings.project is not None:
        with project_of(state) as store:
            labels, stats, name = label_names(store), datastore_stats(store), store.root.name
        trainers = {MODEL: {"description": "fine-tunes the mask decoder on the project's final labels", "config": {}}}
        strategies = {s: {"description": STRATEGY_TEXT[s]} for s in STRATEGIES}
        train_stats = {MODEL: _train_status(state)}
    model = {"type": "deepgrow", "labels": labels, "dimension": 3, "config": {},
             "description": "medsam2: clicks or an ROI on one slice, propagated through the scan"}
    return {"name": name, "description": "medsam2 promptable 3D segmentation", "version": __version__, "labels": labels,
            "models": {MODEL: model}, "trainers": trainers, "strategies": strategies, "scoring": {}, "train_stats": train_stats,
            "datastore": stats}


# -- auth: the server's API key as the password ---------------------------------------------------
@router.get("/auth/")
def auth(state: State) -> dict:
    """Whether a key is needed (``serve --api-key`` or ``--api-keys``)."""
    return {"enabled": state.settings.api_key is not None or bool(state.settings.api_users)}


@router.post("/auth/token")
async def token(request: Request, state: State) -> dict:
    """Log in (form fields ``username``, ``password``): the password is an API key of the
    server, and the answer's token is that key. The user name is not checked (a key of
    ``--api-keys`` says whose it is)."""
    if not request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        raise ApiError(400, "log in with a form (application/x-www-form-urlencoded): username, password")
    form = await request.form(max_files=0, max_fields=10)
    key = str(form.get("password") or "")
    settings = state.settings
    matched, _ = RequestPolicy(None, frozenset(), settings.api_key, 0, api_users=settings.api_users).user_of(key)
    if not matched and (settings.api_key is not None or settings.api_users):
        raise ApiError(401, "wrong password: give one of the server's API keys as the password")
    return {"access_token": key, "token_type": "bearer"}


@router.get("/auth/token/valid")
def token_valid() -> dict:
    """200 while the token (the key) opens the server (the guard has checked it)."""
    return {}


# -- active learning and training -----------------------------------------------------------------
@router.post("/activelearning/{strategy}")
def next_sample(strategy: str, state: State) -> dict:
    """The next case to annotate by one of the project's strategies (``{}`` when every case is final).
    The body (the client's ``client_id``) is not read."""
    if strategy not in STRATEGIES:
        raise ApiError(404, f"no strategy '{strategy}'; this server has {', '.join(STRATEGIES)}")
    with project_of(state) as store:
        chosen = next_case(store, strategy)
        if strategy == "least-confident":
            start_scoring(state, store)
    if chosen.case_id is None:
        return {}
    return {"id": chosen.case_id, "name": chosen.case_id, "strategy": strategy, "remaining": chosen.remaining,
            "confidence": chosen.confidence}


def _train_status(state: ServerState) -> dict:
    if state.training is None:
        raise ApiError(404, NO_PROJECT)
    status = state.training.status().to_dict()
    return {**status, "status": TRAIN_STATES[status["state"]]}


@router.post("/train/")
@router.post("/train/{model}")
def train(state: State, model: str = MODEL) -> dict:
    """Start the project's background training (429 while one runs)."""
    if model != MODEL:
        raise ApiError(404, f"no trainer '{model}'; this server has {MODEL}")
    _train_status(state)
    with project_of(state) as store:
        if not start_training(state, store):
            raise ApiError(429, "the project is training already; wait for it or stop it (DELETE /train/)")
    return _train_status(state)


@router.get("/train/")
def training(state: State, check_if_running: bool = False) -> dict:
    """The training's state and log; 404 when none has run here (``check_if_running``: when none runs)."""
    status = _train_status(state)
    if status["state"] == "idle" or (check_if_running and status["state"] != "running"):
        raise ApiError(404, "no training is running" if check_if_running else "no training has run on this server")
    return status


@router.delete("/train/")
def stop_training(state: State) -> dict:
    """Stop the running training (nothing it made becomes active); its state after."""
    _train_status(state)
    state.training.cancel()
    return _train_status(state)


# -- inference and sessions -----------------------------------------------------------------------
@router.post("/infer/{model}")
async def infer(model: str, request: Request, state: State, image: str = "", session_id: str = "", output: str = "all"):
    """Segment a structure from clicks and/or an ROI (field ``params``, see
    :mod:`medsam2.serve.monailabel.infer_request`) on a case or PACS series (``image``), a session
    made with ``PUT /session/`` (``session_id``) or an uploaded image (field ``file``). The answer:
    the label file (1 the structure) and ``params`` as one multipart answer (``output=all``, the
    default), the file alone (``image``) or the JSON alone (``json``)."""
    began = time.perf_counter()
    if model != MODEL:
        raise ApiError(404, f"no model '{model}'; this server has {MODEL} (deepgrow: clicks and an ROI)")
    check_output(output)
    if session_id and not state.label_clients.is_uploaded(session_id):
        raise ApiError(404, f"no MONAI Label session {session_id!r} (PUT /session/ makes one)")
    with state.store.staging() as folder:
        upload = await _infer_body(request, state, folder)
        params = upload.fields.get("params")
        if session_id:
            served = await run_in_threadpool(state.store.acquire, session_id)
        elif upload.file is not None:  # a session for this call only
            with state.store.reserve(folder):
                opened = await run_in_threadpool(open_scan, state, folder, upload.file, upload.filename or "upload", AXIS, "auto",
                                                 None, folder)
            opened.autosave = False
            try:
                return await run_in_threadpool(_infer, state, state.store.acquire(opened.id), params, output, began)
            finally:
                state.store.delete(opened.id)
        elif image:
            served = await run_in_threadpool(image_session, state, image)
        else:
            raise ApiError(400, "name the scan: ?image=ID (a project case or PACS series), ?session_id=ID (PUT /session/) "
                                "or the field 'file'")
    return await run_in_threadpool(_infer, state, served, params, output, began)


async def _infer_body(request: Request, state: ServerState, folder: Path) -> Upload:
    """The ``/infer`` body: multipart (``params``, optional ``file``), a urlencoded form or none."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        return await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace, max_field_bytes=PARAMS_BYTES)
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = await request.form(max_files=0, max_fields=20)
        return Upload(fields={k: str(v) for k, v in form.items()})
    return Upload()


def _infer(state: ServerState, served: ServedSession, params: str | None, output: str, began: float):
    """Run one ``/infer`` on a held session and give it back."""
    try:
        request = read_infer_request(params, tuple(served.session.volume.array.shape[:3]))
        mask = segment(state, served, request)
        return answer(served, mask, request, output, _label_name(state), began)
    finally:
        state.store.release(served)


def _label_name(state: ServerState) -> str:
    if state.settings.project is None:
        return DEFAULT_LABEL
    with project_of(state) as store:
        return label_names(store)[0]


@router.put("/session/")
async def create_session(request: Request, state: State, expiry: int = 0, uncompress: bool = False) -> dict:
    """Open an uploaded image (multipart field ``files``: one NIfTI, NRRD, MHA or a zip of a DICOM
    series) for later ``/infer`` calls; it closes after the server's idle time (``expiry`` is not
    taken: ``--session-idle-minutes`` decides) or to make room for another client's image."""
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace, file_field="files",
                                      max_field_bytes=PARAMS_BYTES)
        if upload.file is None:
            raise ApiError(400, "no image in the upload: send it in the multipart field 'files'")
        with state.store.reserve(folder):
            served = await run_in_threadpool(open_scan, state, folder, upload.file, upload.filename or "upload", AXIS, "auto",
                                             None, folder)
    served.autosave = False
    state.label_clients.add_uploaded(served.id)
    return {"session_id": served.id, "session_info": _session_json(state, served)}


def _session_json(state: ServerState, served: ServedSession) -> dict:
    idle = state.settings.session_idle_minutes * 60
    return {"name": stem(served.name), "image": served.name, "shape_zyx": list(served.session.volume.array.shape[:3]),
            "last_access_ts": int(time.time() - (time.monotonic() - served.last_used)), "expiry": int(idle)}


def _uploaded(state: ServerState, session_id: str) -> ServedSession:
    if not state.label_clients.is_uploaded(session_id):
        raise ApiError(404, f"no MONAI Label session {session_id!r}")
    try:
        return state.store.get(session_id)
    except ApiError:
        state.label_clients.forget(session_id)
        raise


@router.get("/session/{session_id}")
def get_session(session_id: str, state: State) -> dict:
    return {"session_id": session_id, **_session_json(state, _uploaded(state, session_id))}


@router.delete("/session/{session_id}")
def remove_session(session_id: str, state: State) -> dict:
    answer_json = {"session_id": session_id, **_session_json(state, _uploaded(state, session_id))}
    state.store.delete(session_id)
    state.label_clients.forget(session_id)
    return answer_json
