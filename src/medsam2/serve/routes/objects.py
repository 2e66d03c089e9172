"""A session's objects: prompts, propagation, corrections (erasing among them), adapting, filling
between slices, removing islands, smoothing, multi-view, the 3D brush, renaming, removing, undo and redo.

Propagation and corrections answer with JSON lines (``application/x-ndjson``): one per decoded
slice, then the summary (:func:`medsam2.serve.views.summary`) with ``"finished": true``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from medsam2.engine.session import Session
from medsam2.errors import MedSAM2Error
from medsam2.prompts.parse import Box, MaskPrompt, Point
from medsam2.serve.bodies import (
    BrushBody,
    CorrectionBody,
    IslandsBody,
    ObjectPatchBody,
    PromptBody,
    PropagateBody,
    SmoothBody,
    decode_mask,
    one_kind,
    run_lengths,
)
from medsam2.serve.deps import ServerState, State
from medsam2.serve.errors import ApiError, one_line
from medsam2.serve.store import ServedSession
from medsam2.serve.views import summary

log = logging.getLogger("medsam2.serve")

router = APIRouter()


@router.post("/api/sessions/{session_id}/objects/{label}/prompts")
def prompt(session_id: str, label: int, body: PromptBody, state: State) -> dict:
    """Add a prompt to an object not propagated yet (a new label creates the object)."""
    with state.store.working(session_id) as served:
        session = served.session
        kind = one_kind(body, ("box", "point", "mask"))
        rows, cols = session.shape[1:]
        if kind == "box":
            session.add_prompts(label, body.name, boxes=[Box(body.box.slice, *body.box.box)])
        elif kind == "point":
            x, y = body.point.point
            session.add_prompts(label, body.name, points=[Point(body.point.slice, x, y, body.point.positive)])
        else:
            session.add_prompts(label, body.name, masks=[MaskPrompt(body.mask.slice, decode_mask(body.mask, rows, cols))])
        return {"label": label, "pending": session.pending_labels()}


@router.post("/api/sessions/{session_id}/propagate")
def propagate(session_id: str, state: State, body: PropagateBody | None = None):
    """Segment the pending objects; streams one JSON line per decoded slice, then the summary."""
    body = body or PropagateBody()
    served = state.store.acquire(session_id)
    try:
        session = served.session
        updates = session.propagate(labels=body.labels, masks=body.masks)  # unknown labels: 400 here
        if not any(body.labels is None or v in body.labels for v in session.pending_labels()):
            raise ApiError(400, "nothing to propagate: add a prompt to an object first (segmented objects are corrected instead)")
    except BaseException:
        state.store.release(served)
        raise

    def work(emit: Callable[[dict], None]) -> dict:
        for update in updates:
            line = {"label": update.label, "slice": update.slice, "done": update.done, "total": update.total}
            if update.mask is not None:
                line["rle"] = run_lengths(update.mask)
            emit(line)
        return summary(served)

    return _stream(state, served, work)


@router.post("/api/sessions/{session_id}/objects/{label}/corrections")
def correct(session_id: str, label: int, body: CorrectionBody, state: State):
    """Correct one slice of an object and propagate the change; streams as propagate does."""
    with state.store.working(session_id) as served:
        session = served.session
        kind = one_kind(body, ("box", "point", "mask", "erase"))
        if label not in session.labels:
            raise ApiError(400, f"no object with label {label} in the session; POST .../objects/{label}/prompts first")
        rows, cols = session.shape[1:]
        with state.model_lock:
            if kind == "box":
                outcome = session.correct(label, body.box.slice, box=body.box.box)
            elif kind == "point":
                outcome = session.correct(label, body.point.slice, points=[(*body.point.point, int(body.point.positive))])
            elif kind == "mask":
                outcome = session.correct(label, body.mask.slice, mask=decode_mask(body.mask, rows, cols))
            else:
                outcome = session.correct(label, body.erase.slice, erase=decode_mask(body.erase, rows, cols))
            final = summary(served)
        slices = [outcome.slice, *outcome.decoded_slices]
        lines = [{"label": label, "slice": s, "done": i + 1, "total": len(slices)} for i, s in enumerate(slices)]
        lines.append({"finished": True, "correction": asdict(outcome), **final})
    return StreamingResponse((json.dumps(line) + "\n" for line in lines), media_type="application/x-ndjson")


@router.post("/api/sessions/{session_id}/objects/{label}/adapt")
def adapt(session_id: str, label: int, state: State) -> dict:
    """Learn from the object's prompted and corrected slices (two or more) and propagate it again
    (``Session.adapt``): the summary, with ``adapt``: the slices learned from, slices decoded, seconds."""
    return _changed(state, session_id, lambda session: session.adapt(label), "adapt")


@router.post("/api/sessions/{session_id}/objects/{label}/fill")
def fill_between(session_id: str, label: int, state: State) -> dict:
    """*Fill between slices*: the empty slices between the object's slices get shape-based
    interpolations (``Session.fill_between``): the summary, with ``fill``: the slices filled and
    those they were filled from."""
    return _changed(state, session_id, lambda session: session.fill_between(label), "fill")


@router.post("/api/sessions/{session_id}/objects/{label}/islands")
def remove_islands(session_id: str, label: int, state: State, body: IslandsBody | None = None) -> dict:
    """Remove small islands: keep the object's largest 3D island (or every one of at least
    ``min_voxels``): the summary, with ``islands``: the islands and voxels removed, the islands kept."""
    min_voxels = (body or IslandsBody()).min_voxels
    return _changed(state, session_id, lambda session: session.remove_islands(label, min_voxels), "islands")


@router.post("/api/sessions/{session_id}/objects/{label}/multiview")
def multiview(session_id: str, label: int, state: State) -> dict:
    """Fuse the object with passes along the two other axes boxed on it (``Session.fuse_views``,
    as ``segment --multiview``): the summary, with ``multiview``: the axes, voxels added and removed, seconds."""
    return _changed(state, session_id, lambda session: session.fuse_views(label), "multiview")


@router.post("/api/sessions/{session_id}/objects/{label}/smooth")
def smooth(session_id: str, label: int, state: State, body: SmoothBody | None = None) -> dict:
    """Smooth an object in 3D (``Session.smooth``): the summary, with ``smooth``: the kernel's
    radius in voxels, the slices changed, the voxels added and removed."""
    body = body or SmoothBody()
    return _changed(state, session_id, lambda session: session.smooth(label, body.method, body.kernel_mm), "smooth")


@router.post("/api/sessions/{session_id}/objects/{label}/brush")
def brush(session_id: str, label: int, body: BrushBody, state: State) -> dict:
    """A stroke of the spherical 3D brush (``Session.paint_sphere``): paints (or erases) every voxel
    within ``radius_mm`` of the stroke; a new label creates the object; nothing propagates. The
    summary, with ``brush``: the slices and voxels changed."""
    def paint(session: Session):
        return session.paint_sphere(label, body.slice, decode_mask(body, *session.shape[1:]), body.radius_mm,
                                    erase=body.erase, within=body.within, name=body.name)

    return _changed(state, session_id, paint, "brush")


@router.patch("/api/sessions/{session_id}/objects/{label}")
def change_object(session_id: str, label: int, body: ObjectPatchBody, state: State) -> dict:
    """Rename an object (``name``) and/or lock or unlock it (``locked``: a locked object wins every
    voxel it shares with another), each one undo step: the summary."""
    if body.name is None and body.locked is None:
        raise ApiError(400, 'give "name", "locked" or both')
    def change(session: Session) -> None:
        if body.name is not None:
            session.rename(label, body.name)
        if body.locked is not None:
            session.lock(label, body.locked)

    return _changed(state, session_id, change)


@router.delete("/api/sessions/{session_id}/objects/{label}")
def remove(session_id: str, label: int, state: State) -> dict:
    """Remove an object with its prompts and answers (one undo step): the summary."""
    return _changed(state, session_id, lambda session: session.remove(label))


@router.post("/api/sessions/{session_id}/undo")
def undo(session_id: str, state: State) -> dict:
    """Take back the last step (add, propagate, correct, adapt, rename, remove): the summary."""
    return _changed(state, session_id, lambda session: session.undo())


@router.post("/api/sessions/{session_id}/redo")
def redo(session_id: str, state: State) -> dict:
    """Make again the step the last undo took back: the summary."""
    return _changed(state, session_id, lambda session: session.redo())


def _changed(state: ServerState, session_id: str, change: Callable[[Session], object], key: str | None = None) -> dict:
    """Make one change to the session, holding it and the model (a change may decode, and so may
    the summary's checks), and answer the summary, with ``key``: what ``change`` returned (a
    dataclass) where ``key`` is given."""
    with state.store.working(session_id) as served, state.model_lock:
        outcome = change(served.session)
        return {key: asdict(outcome), **summary(served)} if key else summary(served)


def _stream(state: ServerState, served: ServedSession, work: Callable[[Callable[[dict], None]], dict]) -> StreamingResponse:
    """Run ``work`` in its own thread with the model lock, streaming what it emits as JSON lines.

    The session's lock (held by the caller) is released when the work ends, which it does even if
    the client goes away, so that the session is never left half-propagated.
    """
    lines: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            with state.model_lock:
                final = work(lines.put)
            lines.put({"finished": True, **final})
        except MedSAM2Error as exc:
            lines.put({"error": one_line(exc)})
        except Exception as exc:  # noqa: BLE001 (reported to the client and logged)
            log.exception("propagation failed")
            lines.put({"error": f"internal error: {type(exc).__name__}: {one_line(exc)}"})
        finally:
            state.store.release(served)
            lines.put(None)

    threading.Thread(target=run, name=f"medsam2-propagate-{served.id}", daemon=True).start()

    def body() -> Iterator[str]:
        while (item := lines.get()) is not None:
            yield json.dumps(item) + "\n"

    return StreamingResponse(body(), media_type="application/x-ndjson")
