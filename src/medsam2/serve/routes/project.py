"""``serve --project DIR``: the project's cases, the next case to annotate, a case opened as a
session, a session saved as a new version, any version's label map, and the background training.
Without ``--project`` every route here answers 404."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from medsam2.project.models import active_model_name
from medsam2.project.strategies import next_case
from medsam2.serve.bodies import CaseOpenBody, ProjectSaveBody
from medsam2.serve.deps import ServerState, State
from medsam2.serve.errors import ApiError
from medsam2.serve.project_cases import (
    NO_PROJECT,
    open_case,
    project_listing,
    project_of,
    save_case,
    start_scoring,
    start_training,
    version_dict,
)
from medsam2.serve.views import session_info, summary

router = APIRouter()


@router.get("/api/project")
def project(state: State) -> dict:
    """The project: every case with the status and provenance of its newest version, the counts
    per status, the model versions and the active one, the strategies ``next`` takes."""
    with project_of(state) as store:
        listing = project_listing(store)
    listing["training"] = _training(state).status().to_dict()["state"]
    listing["scoring"] = "off" if state.scoring is None else state.scoring.status().to_dict()["state"]
    listing["retrain_every"] = state.settings.retrain_every
    return listing


@router.get("/api/project/next")
def next_to_annotate(state: State, strategy: str = "first", seed: int | None = None, skip: str = "") -> dict:
    """The case to annotate next among those with no final label: ``first`` (the project's order),
    ``random`` (``seed`` repeats a draw) or ``least-confident`` (the active model's lowest mean slice
    confidence first, recorded when cases are saved; unscored cases after, in order). ``skip``:
    comma-separated cases to leave out (the one on screen). ``case`` is null when all are final."""
    with project_of(state) as store:
        chosen = next_case(store, strategy, seed, frozenset(filter(None, skip.split(","))))
        if strategy == "least-confident":  # a model activated since: score the cases for it
            start_scoring(state, store)
    return {"case": chosen.case_id, "strategy": chosen.strategy, "remaining": chosen.remaining, "confidence": chosen.confidence}


@router.get("/api/project/scores")
def scoring_status(state: State) -> dict:
    """The background scoring of the open cases (``medsam2 project score``: the active model's
    confidence on each, from the final labels' structures as one-prompt supports): its state and
    log, and the scores of the active model so far."""
    with project_of(state) as store:
        scores = store.scores(active_model_name(store))
    run = {"state": "off"} if state.scoring is None else state.scoring.status().to_dict()
    return {**run, "scores": scores}


@router.post("/api/project/cases/{case_id}/sessions")
async def open_project_case(case_id: str, state: State, body: CaseOpenBody | None = None) -> dict:
    """Open a case as a session with the project's active model (a model activated since the
    server started is loaded first), with a saved version's labels as editable objects (``version``:
    null the newest, 0 none); ``shown`` is the version on screen, ``based_on`` the one a save
    builds on (the newest), ``summary`` the objects as the session's summary gives them."""
    body = body or CaseOpenBody()
    with state.store.reserve() as folder:
        served = await run_in_threadpool(open_case, state, folder, case_id, body.axis, body.window, body.version)
    link = served.case
    answer = {**session_info(served), "case": case_id, "based_on": link.based_on, "shown": link.shown, "model": link.model}
    if link.shown is not None:
        answer["summary"] = await run_in_threadpool(_summary_of, state, served.id)
    return answer


def _summary_of(state: ServerState, session_id: str) -> dict:
    with state.store.working(session_id) as served, state.model_lock:
        return summary(served)


@router.get("/api/project/cases/{case_id}/versions")
def versions(case_id: str, state: State) -> dict:
    """Every saved version of a case, oldest first."""
    with project_of(state) as store:
        store.case(case_id)
        return {"case": case_id, "versions": [version_dict(v) for v in store.versions(case_id)]}


@router.get("/api/project/cases/{case_id}/versions/{number}/labels")
def version_labels(case_id: str, number: int, state: State):
    """A saved version's label map (NIfTI, in the case image's geometry)."""
    with project_of(state) as store:
        path = store.root / store.version(case_id, number).path
    return FileResponse(path, media_type="application/octet-stream", filename=f"{case_id}_v{number}.nii.gz")


@router.post("/api/sessions/{session_id}/project")
def save_to_project(session_id: str, body: ProjectSaveBody, state: State, request: Request) -> dict:
    """Save the session's label map as a new version of its case (``draft`` or ``final``). A save
    based on a version that is no longer the newest is kept, marked ``conflict``. With a key of
    ``--api-keys`` the version is recorded under the key's name (``user``, if given, must be it)."""
    keyed = getattr(request.state, "user", None)
    if keyed is not None and body.user not in (None, keyed):
        raise ApiError(403, f"this API key belongs to {keyed}; a save made with it is recorded as {keyed} (leave user out)")
    with state.store.working(session_id) as served:
        return save_case(state, served, body.status, keyed or body.user)


@router.get("/api/project/train")
def training_status(state: State) -> dict:
    """The background training: ``idle``, ``running``, ``finished``, ``failed`` or ``cancelled``,
    with the end of its log."""
    return _training(state).status().to_dict()


@router.post("/api/project/train", status_code=202)
def train(state: State) -> dict:
    """Start ``medsam2 train --project DIR`` in the background (lower priority, half the cores);
    409 while a run goes on. A better model becomes active; new sessions use it."""
    training = _training(state)
    with project_of(state) as store:
        if not start_training(state, store):
            raise ApiError(409, "the project is training already; wait for it or cancel it with DELETE /api/project/train")
    return training.status().to_dict()


@router.delete("/api/project/train")
def cancel_training(state: State) -> Response:
    """Stop the running training (nothing it made becomes active); 409 when none runs."""
    if not _training(state).cancel():
        raise ApiError(409, "no training is running")
    return Response(status_code=204)


def _training(state: ServerState):
    if state.training is None:
        raise ApiError(404, NO_PROJECT)
    return state.training
