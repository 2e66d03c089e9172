"""What the routes share, as FastAPI dependencies: the server's state (kept on ``app.state.medsam2``
by :func:`medsam2.serve.app.create_app`), its settings, its sessions and the session a URL names.

A route that holds a session for its whole work takes it with ``store.working(session_id)`` in its
body (not as a dependency), so that the session's lock is released exactly where it was before and a
bad body is refused (400) before the session is looked up (404).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from medsam2.engine.segmenter import Segmenter
from medsam2.serve.monailabel.clients import LabelClientSessions
from medsam2.serve.project_training import ProjectTraining
from medsam2.serve.settings import ServeSettings
from medsam2.serve.store import ServedSession, SessionStore
from medsam2.serve.uploads import UploadPace


@dataclass
class ServerState:
    """What every request shares: settings, the model (and the lock its calls take), the sessions;
    on a project, the active model's name and the background training."""

    settings: ServeSettings
    segmenter: Segmenter
    root: Path
    store: SessionStore
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    checkpoint_sha256: str | None = None
    #: how slowly an upload may arrive
    pace: UploadPace = field(default_factory=UploadPace)
    #: ``--project``: the model version the segmenter runs (``bundled``: none), taken when it is replaced
    model_name: str | None = None
    #: ``--project``: the folder name of the segmenter's features on disk (None: not computed yet)
    feature_key: str | None = None
    segmenter_lock: threading.Lock = field(default_factory=threading.Lock)
    #: ``--project``: the project's background training
    training: ProjectTraining | None = None
    #: ``--project``: the background scoring of its open cases (``medsam2 project score``)
    scoring: ProjectTraining | None = None
    #: the sessions of MONAI Label clients (``/monailabel``)
    label_clients: LabelClientSessions = field(default_factory=LabelClientSessions)


async def get_state(request: Request) -> ServerState:
    return request.app.state.medsam2


State = Annotated[ServerState, Depends(get_state)]


async def get_settings(state: State) -> ServeSettings:
    return state.settings


Settings = Annotated[ServeSettings, Depends(get_settings)]


async def get_store(state: State) -> SessionStore:
    return state.store


Store = Annotated[SessionStore, Depends(get_store)]


def served_session(session_id: str, store: Store) -> ServedSession:
    """The session the URL names, marked as used now (not held).

    Raises:
        ApiError: 404 when there is no such session.
    """
    return store.get(session_id)


Served = Annotated[ServedSession, Depends(served_session)]
