"""The autosaves of ``--save-dir`` (:mod:`medsam2.serve.autosave`): list them, open one again
(after a restart, or after its session expired), remove one."""

from __future__ import annotations

import shutil
import time

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from medsam2.errors import MedSAM2Error
from medsam2.io.readers import read_mask
from medsam2.serve.autosave import LABELS, SCAN, autosave_folder, list_autosaves, read_note
from medsam2.serve.deps import ServerState, State
from medsam2.serve.errors import ApiError, one_line
from medsam2.serve.opening import open_scan
from medsam2.serve.store import CaseLink
from medsam2.serve.views import session_info, summary

router = APIRouter()


@router.get("/api/autosaves")
def autosaves(state: State) -> dict:
    """The autosaved sessions, newest first: ``key``, the scan's ``name``, ``saved`` (seconds since
    the epoch), ``objects`` and the project ``case``."""
    return {"enabled": state.settings.save_dir is not None,
            "autosaves": [note.__dict__ for note in list_autosaves(state.settings.save_dir)]}


@router.post("/api/autosaves/{key}/sessions")
async def reopen(key: str, state: State) -> dict:
    """Open an autosave as a new session: its scan with its labels as objects to correct; later
    changes are autosaved to the same place. The answer is the session, with its ``summary``."""
    folder = autosave_folder(state.settings.save_dir, key)
    with state.store.reserve() as session_folder:
        served = await run_in_threadpool(_reopen, state, key, folder, session_folder)
    with state.store.working(served.id) as held, state.model_lock:
        return {**session_info(held), "summary": summary(held), "autosave": key}


def _reopen(state: ServerState, key: str, folder, session_folder):
    from medsam2.serve.project_cases import current_segmenter, project_of

    note = read_note(folder)
    segmenter, model, latest, is_case = None, "bundled", None, False
    if note.case is not None and state.settings.project is not None:
        with project_of(state) as store:
            is_case = note.case in {c.case_id for c in store.cases()}
            if is_case:
                segmenter, model = current_segmenter(state, store)  # the project's active model
                latest = store.latest(note.case)
    served = open_scan(state, session_folder, folder / SCAN, note.name, "axial", "auto", confine_to=folder, segmenter=segmenter)
    try:
        labels = read_mask(folder / LABELS, served.session.volume, confine_to=folder)
        if labels.any():
            served.session.open_labels(labels, {o["label"]: o["name"] for o in note.objects if o.get("name")})
    except MedSAM2Error as exc:
        state.store.delete(served.id)
        raise ApiError(400, f"autosave {key} cannot be opened: {one_line(exc)}") from None
    served.autosave_key = key
    served.saved_revision = served.session.history.revision  # what is on disk already
    if is_case:  # Save draft and Finish save into the case again
        served.case = CaseLink(note.case, None if latest is None else latest.version, model, time.monotonic())
    return served


@router.delete("/api/autosaves/{key}")
def remove(key: str, state: State) -> dict:
    """Remove an autosave (the sessions open on it go on, and save there again when they change)."""
    shutil.rmtree(autosave_folder(state.settings.save_dir, key))
    return {"deleted": key}
