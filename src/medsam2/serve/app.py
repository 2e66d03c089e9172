"""The server's app: the REST API under ``/api`` (the page uses nothing else) and the page itself.

Every error is ``{"error": "one line"}`` with 400 (bad input; the command line's message), 401
(API key), 403 (a request from another site's page), 404 (no such session), 408 (an upload too
slow), 409 (busy), 413 (too large), 421 (a Host name the server does not answer to) or 429 (too
many sessions). What every request passes first is in :mod:`medsam2.serve.guards`; the routes are
in :mod:`medsam2.serve.routes`, one module per resource, and what they share in :mod:`medsam2.serve.deps`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from medsam2._version import __version__
from medsam2.engine.segmenter import Segmenter
from medsam2.errors import MedSAM2Error
from medsam2.serve.deps import ServerState
from medsam2.serve.errors import ApiError, one_line, validation_text
from medsam2.serve.guards import RequestGuard, RequestPolicy, allowed_hosts_for
from medsam2.serve.routes import ROUTERS
from medsam2.serve.settings import ServeSettings, is_loopback
from medsam2.serve.store import SessionStore
from medsam2.serve.uploads import UploadPace

__all__ = ["RETRY_AFTER_SECONDS", "STATIC", "create_app"]

log = logging.getLogger("medsam2.serve")

STATIC = Path(__file__).parent / "static"
#: what a 429 answer's Retry-After header says (seconds)
RETRY_AFTER_SECONDS = 5


def create_app(settings: ServeSettings, segmenter: Segmenter) -> FastAPI:
    """The FastAPI app over one shared model.

    Arguments:
        settings: checked settings (:meth:`ServeSettings.checked`).
        segmenter: the model every session uses.

    The app's temporary folder is made now and removed when it shuts down, with every session.
    """
    root = Path(tempfile.mkdtemp(prefix="medsam2-serve-"))
    store = SessionStore(root, settings.max_sessions, settings.session_idle_minutes * 60, volume_budget=settings.max_volume_bytes)
    state = ServerState(settings, segmenter, root, store,
                        pace=UploadPace(settings.upload_min_kbps * 1024, settings.upload_grace_seconds))
    if settings.save_dir is not None:
        from functools import partial

        from medsam2.serve.autosave import write_autosave

        settings.save_dir.mkdir(parents=True, exist_ok=True)
        store.on_change = partial(write_autosave, settings.save_dir)
    if settings.project is not None:
        from medsam2.project.models import active_model_name
        from medsam2.project.store import open_project
        from medsam2.serve.project_training import ProjectTraining

        with open_project(settings.project) as project:
            state.model_name = active_model_name(project)
        state.training = ProjectTraining(settings.project)
        if settings.score_cases:
            state.scoring = ProjectTraining(settings.project, command=("project", "score"), log_name="score")
    app = FastAPI(
        title="medsam2 serve", version=__version__, lifespan=_lifespan(state),
        description="Promptable segmentation of 3D scans: open a scan, prompt one slice, propagate, correct, save. "
        "Coordinates are 0-based voxel indices; 'slice' is along the session's axis.",
    )
    app.state.medsam2 = state
    app.add_middleware(RequestGuard, policy=RequestPolicy(
        allowed_hosts=allowed_hosts_for(settings.host, settings.allowed_hosts, is_loopback(settings.host)),
        allowed_origins=frozenset(settings.allowed_origins), api_key=settings.api_key, max_body_bytes=settings.max_json_bytes,
        api_users=settings.api_users,
    ))
    if settings.allowed_origins:  # outside the guard: a browser's preflight carries no key
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.allowed_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["Content-Disposition"])
    _add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return app


def _lifespan(state: ServerState):
    """The app's lifespan: the idle sessions' sweeper while it runs; every session and the
    temporary folder removed when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        sweeper = threading.Thread(target=_sweep, args=(state,), name="medsam2-session-expiry", daemon=True)
        sweeper.start()
        if state.scoring is not None:
            from medsam2.serve.project_cases import project_of, start_scoring

            with project_of(state) as project:
                start_scoring(state, project)
        try:
            yield
        finally:
            state.stop.set()
            for run in (state.training, state.scoring):
                if run is not None:
                    run.close()
            state.store.close_all()
            shutil.rmtree(state.root, ignore_errors=True)

    return lifespan


def _sweep(state: ServerState) -> None:
    """Close idle sessions until the server stops."""
    period = min(30.0, max(0.2, state.settings.session_idle_minutes * 60 / 4))
    while not state.stop.wait(period):
        for session_id in state.store.expire():
            log.info("session %s expired", session_id)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answered as ``{"error": "one line"}``."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        response = _error(exc.status, exc.message)
        if exc.status == 429:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(MedSAM2Error)
    async def medsam2_error(request: Request, exc: MedSAM2Error):
        return _error(400, one_line(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        return _error(400, validation_text(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
