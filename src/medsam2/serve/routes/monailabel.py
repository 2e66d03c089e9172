"""MONAI Label's REST protocol under ``/monailabel``: point 3D Slicer's MONAI Label module, OHIF's
MONAI Label mode or ``monailabel.client`` at ``http://HOST:PORT/monailabel``.

The project is the datastore (:mod:`medsam2.serve.monailabel.datastore`), ``medsam2`` the one
model (``deepgrow``: clicks and an ROI, :mod:`medsam2.serve.monailabel.infer_request`) and the one
trainer (the project's background training), and the project's strategies the active-learning
strategies. A model, strategy or trainer medsam2 does not have (scribbles, scoring methods, WSI)
is answered 404. Every error is ``{"error": "one line"}``; the API key and every other rule of
the server apply here too.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from medsam2._version import __version__
from medsam2.errors import MedSAM2Error
from medsam2.io.volume import suffix_of
from medsam2.project.store import Provenance
from medsam2.project.strategies import next_case
from medsam2.project.vocabulary import STRATEGIES
from medsam2.serve.deps import ServerState, State
from medsam2.serve.errors import ApiError, one_line
from medsam2.serve.guards import RequestPolicy
from medsam2.serve.monailabel.datastore import (
    DEFAULT_LABEL,
    datastore_listing,
    datastore_stats,
    label_names,
    label_values,
    label_version,
    new_image_id,
    read_label_upload,
    status_of_tag,
)
from medsam2.serve.monailabel.infer_request import read_infer_request
from medsam2.serve.monailabel.inference import AXIS, answer, image_session, segment
from medsam2.serve.opening import open_scan
from medsam2.serve.project_cases import NO_PROJECT, after_save, project_of, start_scoring, start_training, version_dict
from medsam2.serve.uploads import Upload, receive_upload, unpack_zip
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
    form = await request.form()
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


# -- the datastore --------------------------------------------------------------------------------
@router.get("/datastore/")
def datastore(state: State, output: str = "stats") -> dict | list:
    """The project as a datastore: ``stats`` (counts), ``all`` (every image with its labels per
    tag) or ``train`` (the cases with a final label)."""
    with project_of(state) as store:
        if output == "all":
            return datastore_listing(store)
        stats = datastore_stats(store)
    if output not in ("stats", "train"):
        raise ApiError(400, f"output {output!r}: choose stats, all or train")
    return stats if output == "stats" else stats["train"]


@router.put("/datastore/")
async def add_image(request: Request, state: State, image: str | None = None) -> dict:
    """Add an image to the project (multipart field ``file``: NIfTI, NRRD, MHA or a zip of a DICOM
    series), copied into its ``images/``; ``image`` names it (default: the file's name). An id the
    project holds already is refused (409): its saved versions belong to that image."""
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace, max_field_bytes=PARAMS_BYTES)
        if upload.file is None:
            raise ApiError(400, "no file in the upload: send the image in the multipart field 'file'")
        image_id = new_image_id(image, upload.filename)
        await run_in_threadpool(_add_image, state, image_id, upload, folder)
    return {"image": image_id}


def _add_image(state: ServerState, image_id: str, upload: Upload, folder: Path) -> None:
    from medsam2.io.readers import load_volume
    from medsam2.project.sources import CaseSource
    from medsam2.serve.opening import relative_message

    path = upload.file
    if suffix_of(path).lower() == ".zip":
        path = unpack_zip(path, folder / "series", state.settings.max_upload_bytes)
    try:
        load_volume(path, confine_to=folder)  # an image medsam2 cannot read is refused now, not when opened
    except MedSAM2Error as exc:
        raise ApiError(400, relative_message(exc, path, upload.filename or image_id, (folder,))) from None
    with project_of(state) as store:
        if image_id in {c.case_id for c in store.cases()}:
            raise ApiError(409, f"the project holds an image '{image_id}' already; give the upload another id (?image=ID)")
        store.add_cases([CaseSource(image_id, path)], copy=True)


@router.put("/datastore/label")
async def save_label(request: Request, state: State, image: str, tag: str = "final") -> dict:
    """Save a label map (multipart field ``label``: a label file on the image's voxel grid, or
    OHIF's ``.bin``, the raw uint8 voxels). On a project case it becomes a new version: ``final``
    for the tag ``final``, a draft for any other; a final save sets off retraining
    (``--retrain-every``) and scoring as a save from the page does. On a series of the
    ``--dicomweb`` PACS it is stored there as a DICOM SEG of that series."""
    user = getattr(request.state, "user", None)
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace, file_field="label",
                                      max_field_bytes=PARAMS_BYTES)
        if upload.file is None:
            raise ApiError(400, "no label in the upload: send the label map in the multipart field 'label'")
        params = _params_of(upload)
        client = params.get("client_id") if isinstance(params.get("client_id"), str) else None
        if state.settings.project is not None and image in _case_ids(state):
            return await run_in_threadpool(_save_version, state, image, tag, upload, folder, user or client)
        if state.settings.dicomweb is not None:
            return await run_in_threadpool(_store_on_pacs, state, image, upload, folder, label_values(params))
        raise ApiError(404, f"image '{image}': this server has no case of that name" if state.settings.project is not None
                       else "this server has no project (serve --project DIR) and no PACS (--dicomweb) to save labels to")


def _params_of(upload: Upload) -> dict:
    try:
        params = json.loads(upload.fields.get("params") or "{}")
    except ValueError:
        raise ApiError(400, "params is not JSON") from None
    return params if isinstance(params, dict) else {}


def _case_ids(state: ServerState) -> set[str]:
    with project_of(state) as store:
        return {c.case_id for c in store.cases()}


def _save_version(state: ServerState, image: str, tag: str, upload: Upload, folder: Path, user: str | None) -> dict:
    from medsam2.io.readers import load_volume

    status = status_of_tag(tag)
    with project_of(state) as store:
        volume = load_volume(store.case(image).image)
        labels = read_label_upload(upload, volume, folder)
        latest = store.latest(image)
        provenance = Provenance(user=user, prompts={"client": "monailabel", "tag": tag})
        version = store.save_version(image, labels, volume, status, None if latest is None else latest.version, provenance)
        training = after_save(state, store, status)
    return {"image": image, "label": image, "tag": tag, **version_dict(version), "training_started": training}


def _store_on_pacs(state: ServerState, series_uid: str, upload: Upload, folder: Path, names: dict[int, str]) -> dict:
    from medsam2.io.dicom_seg import Provenance as SegProvenance
    from medsam2.io.dicomweb import store
    from medsam2.io.writers import save_mask

    session_id = image_session(state, series_uid)
    with state.store.working(session_id) as served:
        volume = served.session.volume
        labels = read_label_upload(upload, volume, folder)
        if not labels.any():
            raise ApiError(400, "the label map holds no structure (every voxel is 0); nothing is stored")
        out = served.folder / f"seg-{secrets.token_hex(6)}.dcm"
        try:
            save_mask(labels, volume, out, names={v: names.get(v) for v in map(int, np.unique(labels)) if v} or None,
                      provenance=SegProvenance(__version__, backbone=served.session.engine.backbone.name))
            uid = store(served.pacs.root, out)
        except MedSAM2Error as exc:
            raise ApiError(502, one_line(exc)) from None
        finally:
            out.unlink(missing_ok=True)
    return {"image": series_uid, "label": uid, "stored": "dicom-seg"}


@router.get("/datastore/image")
def download_image(image: str, state: State, check_only: bool = False, check_sum: str | None = None):
    """The case's image file (a DICOM series as NIfTI); ``check_only``: 200 if it exists and, with
    ``check_sum`` (``SHA256:HEX`` or ``HEX``), has those bytes, else 404."""
    with project_of(state) as store:
        case = next((c for c in store.cases() if c.case_id == image), None)
    if case is None or not case.image.exists():
        raise ApiError(404, f"the project holds no image '{image}'")
    if check_only:
        if check_sum and check_sum.split(":")[-1].lower() != case.sha256:
            raise ApiError(404, f"image '{image}' has other bytes than that checksum")
        return {}
    if case.image.is_file():
        return FileResponse(case.image, media_type="application/octet-stream", filename=f"{image}{suffix_of(case.image)}")
    out = _series_as_nifti(state, case.image)
    return FileResponse(out, media_type="application/octet-stream", filename=f"{image}.nii.gz",
                        background=BackgroundTask(out.unlink, missing_ok=True))


def _series_as_nifti(state: ServerState, folder: Path) -> Path:
    import secrets

    import SimpleITK as sitk

    from medsam2.io.readers import load_volume
    from medsam2.io.writers import image_in_geometry

    volume = load_volume(folder)
    out = state.root / f"series-{secrets.token_hex(6)}.nii.gz"
    sitk.WriteImage(image_in_geometry(volume.array, volume), str(out), useCompression=True)
    return out


@router.get("/datastore/label")
def download_label(label: str, state: State, tag: str = "final"):
    """The case's label of ``tag`` (``final``: its newest final version; ``draft``: its newest draft), NIfTI."""
    with project_of(state) as store:
        version = label_version(store, label, tag)
        path = store.root / version.path
    return FileResponse(path, media_type="application/octet-stream", filename=f"{label}.nii.gz")


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
    :mod:`medsam2.serve.monailabel.infer_request`) on a case (``image``), a session made with
    ``PUT /session/`` (``session_id``) or an uploaded image (field ``file``). The answer: the
    label file (1 the structure) and ``params`` as one multipart answer (``output=all``, the
    default), the file alone (``image``) or the JSON alone (``json``)."""
    began = time.perf_counter()
    if model != MODEL:
        raise ApiError(404, f"no model '{model}'; this server has {MODEL} (deepgrow: clicks and an ROI)")
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace, max_field_bytes=PARAMS_BYTES)
        params = upload.fields.get("params")
        if session_id:
            return await run_in_threadpool(_infer, state, session_id, params, output, began)
        if upload.file is not None:  # a session for this call only
            with state.store.reserve(folder):
                served = await run_in_threadpool(open_scan, state, folder, upload.file, upload.filename or "upload", AXIS, "auto",
                                                 None, folder)
            try:
                return await run_in_threadpool(_infer, state, served.id, params, output, began)
            finally:
                state.store.delete(served.id)
        if not image:
            raise ApiError(400, "name the scan: ?image=ID (a project case), ?session_id=ID (PUT /session/) or the field 'file'")
    session = await run_in_threadpool(image_session, state, image)
    return await run_in_threadpool(_infer, state, session, params, output, began)


def _infer(state: ServerState, session_id: str, params: str | None, output: str, began: float):
    with state.store.working(session_id) as served:
        request = read_infer_request(params, tuple(served.session.volume.array.shape[:3]))
        mask = segment(state, served, request)
        return answer(served, mask, request, output, _label_name(state), began)


def _label_name(state: ServerState) -> str:
    if state.settings.project is None:
        return DEFAULT_LABEL
    with project_of(state) as store:
        return label_names(store)[0]


@router.put("/session/")
async def create_session(request: Request, state: State, expiry: int = 0, uncompress: bool = False) -> dict:
    """Open an uploaded image (multipart field ``files``: one NIfTI, NRRD, MHA or a zip of a DICOM
    series) for later ``/infer`` calls; it closes after the server's idle time (``expiry`` is not
    taken: ``--session-idle-minutes`` decides)."""
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace, file_field="files",
                                      max_field_bytes=PARAMS_BYTES)
        if upload.file is None:
            raise ApiError(400, "no image in the upload: send it in the multipart field 'files'")
        with state.store.reserve(folder):
            served = await run_in_threadpool(open_scan, state, folder, upload.file, upload.filename or "upload", AXIS, "auto",
                                             None, folder)
    return {"session_id": served.id, "session_info": _session_json(state, served)}


def _session_json(state: ServerState, served) -> dict:
    idle = state.settings.session_idle_minutes * 60
    return {"name": stem(served.name), "image": served.name, "shape_zyx": list(served.session.volume.array.shape[:3]),
            "last_access_ts": int(time.time() - (time.monotonic() - served.last_used)), "expiry": int(idle)}


@router.get("/session/{session_id}")
def get_session(session_id: str, state: State) -> dict:
    return {"session_id": session_id, **_session_json(state, state.store.get(session_id))}


@router.delete("/session/{session_id}")
def remove_session(session_id: str, state: State) -> dict:
    served = state.store.get(session_id)
    answer_json = {"session_id": session_id, **_session_json(state, served)}
    state.store.delete(session_id)
    return answer_json
