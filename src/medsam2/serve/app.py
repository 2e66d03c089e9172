"""The server's routes: the REST API under ``/api`` (the page uses nothing else) and the page itself.

Every error is ``{"error": "one line"}`` with 400 (bad input; the command line's message), 401
(API key), 403 (a request from another site's page), 404 (no such session), 408 (an upload too
slow), 409 (busy), 413 (too large), 421 (a Host name the server does not answer to) or 429 (too
many sessions). What every request passes first is in :mod:`medsam2.serve.guards`.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from medsam2._version import __version__
from medsam2.engine.sanity import LOW_CONFIDENCE
from medsam2.engine.segmenter import Segmenter
from medsam2.errors import InputTooLarge, MedSAM2Error
from medsam2.io.colours import PALETTE
from medsam2.io.formats import DICOM_KINDS, format_names, label_format
from medsam2.io.limits import DEFAULT_MAX_INPUT_BYTES, ReadLimits
from medsam2.io.slicing import AXES
from medsam2.io.volume import load_volume, save_mask, suffix_of
from medsam2.io.windows import WINDOW_CHOICES
from medsam2.prompts.parse import Box, MaskPrompt, Point
from medsam2.serve.bodies import (
    CorrectionBody,
    OpenBody,
    PromptBody,
    PropagateBody,
    PushBody,
    decode_mask,
    one_kind,
    run_lengths,
)
from medsam2.serve.datadir import list_scans, resolve_data_path
from medsam2.serve.errors import ApiError
from medsam2.serve.guards import RequestGuard, RequestPolicy, allowed_hosts_for
from medsam2.serve.settings import ServeSettings, is_loopback
from medsam2.serve.store import ServedSession, SessionStore
from medsam2.serve.uploads import UploadPace, receive_upload, unpack_zip
from medsam2.serve.viewer_files import FRAME_AXES, window_presets, write_viewer_nifti

log = logging.getLogger("medsam2.serve")

STATIC = Path(__file__).parent / "static"
#: label map formats GET .../labels writes (the registry's names and older spellings)
LABEL_FORMATS = format_names()
#: the name a DICOM format's download is saved as (NAME.dcm)
_DICOM_DOWNLOAD_NAMES = {"dicom-seg": "seg", "rtstruct": "rtstruct"}
#: what a 429 answer's Retry-After header says (seconds)
RETRY_AFTER_SECONDS = 5


@dataclass
class ServerState:
    """What every request shares: settings, the model (and the lock its calls take), the sessions."""

    settings: ServeSettings
    segmenter: Segmenter
    root: Path
    store: SessionStore
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    checkpoint_sha256: str | None = None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: ServeSettings, segmenter: Segmenter) -> FastAPI:
    """The FastAPI app over one shared model.

    Arguments:
        settings: checked settings (:meth:`ServeSettings.checked`).
        segmenter: the model every session uses.

    The app's temporary folder is made now and removed when it shuts down, with every session.
    """
    root = Path(tempfile.mkdtemp(prefix="medsam2-serve-"))
    store = SessionStore(root, settings.max_sessions, settings.session_idle_minutes * 60, volume_budget=settings.max_volume_bytes)
    state = ServerState(settings, segmenter, root, store)
    pace = UploadPace(settings.upload_min_kbps * 1024, settings.upload_grace_seconds)

    def sweep() -> None:
        period = min(30.0, max(0.2, settings.session_idle_minutes * 60 / 4))
        while not state.stop.wait(period):
            for session_id in state.store.expire():
                log.info("session %s expired", session_id)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        sweeper = threading.Thread(target=sweep, name="medsam2-session-expiry", daemon=True)
        sweeper.start()
        try:
            yield
        finally:
            state.stop.set()
            state.store.close_all()
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(
        title="medsam2 serve", version=__version__, lifespan=lifespan,
        description="Promptable segmentation of 3D scans: open a scan, prompt one slice, propagate, correct, save. "
        "Coordinates are 0-based voxel indices; 'slice' is along the session's axis.",
    )
    app.state.medsam2 = state
    app.add_middleware(RequestGuard, policy=RequestPolicy(
        allowed_hosts=allowed_hosts_for(settings.host, settings.allowed_hosts, is_loopback(settings.host)),
        allowed_origins=frozenset(settings.allowed_origins), api_key=settings.api_key, max_body_bytes=settings.max_json_bytes,
    ))

    # -- errors and the key ------------------------------------------------------------------------
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
        return _error(400, _validation_text(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    # -- the server ------------------------------------------------------------------------------
    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/info")
    def info() -> dict:
        backbone = segmenter.backbone
        plan = backbone.plan
        return {
            "version": __version__,
            "backbone": backbone.name,
            "checkpoint": _checkpoint_identity(state),
            "runtime": plan.runtime,
            "precision": plan.precision,
            "device": str(backbone.device),
            "memory": segmenter.memory,
            "settings": asdict(segmenter.settings),
            "limits": {
                "max_sessions": settings.max_sessions,
                "session_idle_minutes": settings.session_idle_minutes,
                "max_upload_mb": settings.max_upload_mb,
                "max_volume_mb": round(settings.max_volume_bytes / 2**20, 1),
                "volume_mb_free": round(max(0, state.store.volume_room()) / 2**20, 1),
                "max_json_mb": settings.max_json_mb,
                "upload_min_kbps": settings.upload_min_kbps,
            },
            "sessions_open": len(state.store),
            "data_folder": settings.data_dir is not None,
            "dicomweb": settings.dicomweb,
            "axes": list(AXES),
            "windows": list(WINDOW_CHOICES),
            "label_formats": list(LABEL_FORMATS),
            "low_confidence": LOW_CONFIDENCE,
            "palette": [[int(v) for v in row] for row in PALETTE],
        }

    @app.get("/api/data")
    def data() -> dict:
        if settings.data_dir is None:
            return {"scans": []}
        return {"scans": [asdict(entry) for entry in list_scans(settings.data_dir)]}

    @app.get("/api/dicomweb")
    def pacs_series() -> dict:
        """The image series on the ``--dicomweb`` PACS (QIDO-RS), newest study first."""
        if settings.dicomweb is None:
            raise ApiError(404, "this server has no PACS; start it with --dicomweb URL")
        from medsam2.io.dicomweb import list_series

        try:
            entries = list_series(settings.dicomweb)
        except MedSAM2Error as exc:
            raise ApiError(502, one_line(exc)) from None
        return {"server": settings.dicomweb, "series": [asdict(entry) for entry in entries]}

    # -- sessions --------------------------------------------------------------------------------
    @app.post(
        "/api/sessions",
        openapi_extra={"requestBody": {"content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}, "axis": {"type": "string"}, "window": {"type": "string"}}}},
            "application/json": {"schema": OpenBody.model_json_schema()},
        }}},
    )
    async def open_session(request: Request) -> dict:
        """Open a scan: a multipart upload (field ``file``: NIfTI, NRRD, MHA or a zip of a DICOM
        series; optional ``axis``, ``window``) or JSON ``{"path": ...}`` under ``--data``.

        An upload takes a session slot only once it has arrived (a slow one holds no slot)."""
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = OpenBody.model_validate_json(await request.body())
            except ValidationError as exc:
                raise ApiError(400, _validation_text(exc.errors())) from None
            if (body.path is None) == (body.dicomweb is None):
                raise ApiError(400, "give either 'path' (a scan under --data) or 'dicomweb' (a series on the PACS)")
            with state.store.reserve() as folder:
                if body.dicomweb is not None:
                    pacs, path, name = await run_in_threadpool(_fetch, settings, body.dicomweb.study, body.dicomweb.series, folder)
                    confine_to = folder
                else:
                    path, name, pacs = resolve_data_path(settings.data_dir, body.path), body.path, None
                    confine_to = settings.data_dir
                served = await run_in_threadpool(_open, state, folder, path, name, body.axis, body.window, pacs, confine_to)
            return session_info(served)
        with state.store.staging() as folder:
            upload = await receive_upload(request, folder, settings.max_upload_bytes, pace)
            if upload.file is None:
                raise ApiError(400, "no file in the upload: send the scan in the multipart field 'file'")
            path, name = upload.file, upload.filename or upload.file.name
            axis, window = upload.fields.get("axis", "axial"), upload.fields.get("window", "auto")
            with state.store.reserve(folder):
                served = await run_in_threadpool(_open, state, folder, path, name, axis, window, None, folder)
        return session_info(served)

    @app.get("/api/sessions/{session_id}")
    def get_session(session_id: str) -> dict:
        return session_info(state.store.get(session_id))

    @app.get("/api/sessions/{session_id}/volume")
    def volume(session_id: str):
        served = state.store.get(session_id)
        return FileResponse(served.folder / "volume.nii.gz", media_type="application/octet-stream",
                            filename=f"{_stem(served.name)}.nii.gz")

    @app.delete("/api/sessions/{session_id}")
    def delete(session_id: str) -> dict:
        state.store.delete(session_id)
        return {"deleted": session_id}

    # -- prompts, propagation, corrections -------------------------------------------------------
    @app.post("/api/sessions/{session_id}/objects/{label}/prompts")
    def prompt(session_id: str, label: int, body: PromptBody) -> dict:
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

    @app.post("/api/sessions/{session_id}/propagate")
    def propagate(session_id: str, body: PropagateBody | None = None):
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

    @app.post("/api/sessions/{session_id}/objects/{label}/corrections")
    def correct(session_id: str, label: int, body: CorrectionBody):
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

    @app.post("/api/sessions/{session_id}/objects/{label}/adapt")
    def adapt(session_id: str, label: int) -> dict:
        """Learn from the object's prompted and corrected slices (two or more) and propagate it again
        (``Session.adapt``): the summary, with ``adapt``: the slices learned from, slices decoded, seconds."""
        with state.store.working(session_id) as served:
            with state.model_lock:
                outcome = served.session.adapt(label)
                return {"adapt": asdict(outcome), **summary(served)}

    @app.post("/api/sessions/{session_id}/undo")
    def undo(session_id: str) -> dict:
        with state.store.working(session_id) as served:
            served.session.undo()
            with state.model_lock:
                return summary(served)

    # -- results ---------------------------------------------------------------------------------
    @app.get("/api/sessions/{session_id}/labels")
    def labels(session_id: str, format: str = "nii.gz"):
        """The label map of the segmented objects in the input's geometry (all zeros before any)."""
        if format not in LABEL_FORMATS:
            raise ApiError(400, f"unknown format {format!r}; choose one of {', '.join(LABEL_FORMATS)}")
        with state.store.working(session_id) as served:
            # the label map alone uses no model: it does not wait for other sessions' propagations
            result = served.session.result(propagate_pending=False, sanity=False)
            out = _write_labels(served, result, format)
        chosen = label_format(format)
        suffix = f"{_DICOM_DOWNLOAD_NAMES[chosen.dicom_kind]}.dcm" if chosen.dicom_kind else f"labels{chosen.suffix}"
        return FileResponse(out, media_type="application/octet-stream", filename=f"{_stem(served.name)}_{suffix}",
                            background=BackgroundTask(out.unlink, missing_ok=True))

    @app.post("/api/sessions/{session_id}/push")
    def push(session_id: str, body: PushBody | None = None) -> dict:
        """Store the label map as a DICOM SEG or RT-STRUCT on the PACS the series came from (STOW-RS)."""
        from medsam2.io.dicomweb import store

        body = body or PushBody()
        with state.store.working(session_id) as served:
            if served.pacs is None:
                raise ApiError(400, "this scan was not opened from the PACS; save it as a file instead")
            result = served.session.result(propagate_pending=False, sanity=False)
            if not result.report.objects:
                raise ApiError(409, "nothing is segmented yet; propagate first")
            out = _write_labels(served, result, body.format)
            try:
                uid = store(served.pacs.root, out)
            except MedSAM2Error as exc:
                raise ApiError(502, one_line(exc)) from None
            finally:
                out.unlink(missing_ok=True)
        return {"stored": uid, "format": body.format, "server": served.pacs.root, "study": served.pacs.study_uid}

    @app.get("/api/sessions/{session_id}/report")
    def report(session_id: str) -> dict:
        """The report ``medsam2 segment --report`` writes, for the segmented objects."""
        with state.store.working(session_id) as served:
            with state.model_lock:
                data = served.session.result(propagate_pending=False).report.to_dict()
        data["input"] = served.name
        return data

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return app


def _validation_text(errors: list) -> str:
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = first.get("msg", "invalid request")
    return f"{where}: {message}" if where else message


def _stem(name: str) -> str:
    base = Path(name).name
    suffix = suffix_of(Path(base))
    return (base[: -len(suffix)] if suffix and base.endswith(suffix) else base) or "scan"


def _write_labels(served: ServedSession, result, format: str) -> Path:
    """The session's label map written in its folder under a name of its own (the response reads it
    after the session is free again); a DICOM format names the model that made it."""
    from medsam2.engine.jobs import provenance_of

    chosen = label_format(format)
    out = served.folder / f"labels-{secrets.token_hex(6)}{chosen.suffix}"
    names = {obj.label: obj.name for obj in result.report.objects}
    kind = chosen.dicom_kind or DICOM_KINDS[0]
    return save_mask(result.labels, served.session.volume, out, names=names, dicom_kind=kind, provenance=provenance_of(result))


def _fetch(settings: ServeSettings, study: str, series: str, folder: Path):
    """Retrieve a series of the PACS into the session's folder; (its address, the folder, a name
    for it: patient ID, modality and series number, e.g. ``P123_CT_2``)."""
    import pydicom

    from medsam2.io.dicomweb import SeriesAddress, fetched_series

    address = SeriesAddress(settings.dicomweb, study, series)
    target = folder / "series"
    target.mkdir()
    try:
        with fetched_series(address, target) as fetched:
            header = pydicom.dcmread(next(fetched.iterdir()), stop_before_pixels=True)
    except MedSAM2Error as exc:
        raise ApiError(502, one_line(exc)) from None
    parts = [str(header.get(key, "")) for key in ("PatientID", "Modality", "SeriesNumber")]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", "_".join(p for p in parts if p)).strip("-") or "pacs-series"
    return address, fetched, name


def _checkpoint_identity(state: ServerState) -> dict | None:
    """The model's weights as ``{"name": file name, "sha256": ...}`` (never the path on the server's disk)."""
    checkpoint = getattr(state.segmenter.backbone, "checkpoint", None)
    if not checkpoint:
        return None
    if state.checkpoint_sha256 is None:
        from medsam2.backbones.runtime import file_sha256

        state.checkpoint_sha256 = file_sha256(Path(checkpoint))
    return {"name": Path(checkpoint).name, "sha256": state.checkpoint_sha256}


def _relative_message(exc: BaseException, path: Path, name: str, folders: tuple[Path | None, ...]) -> str:
    """The error's line with the scan's path as the client named it and every server folder left out."""
    text = one_line(exc).replace(str(path), name)
    for folder in folders:
        if folder is not None:
            text = text.replace(str(folder) + "/", "").replace(str(folder), ".")
    return text


def _open(
    state: ServerState, folder: Path, path: Path, name: str, axis: str, window: str, pacs=None, confine_to: Path | None = None,
) -> ServedSession:
    """Read the scan (its data files only from ``confine_to``; its voxels only where they fit the
    server's volume budget), open a session on it and write the viewer's copy (in a worker thread)."""
    settings = state.settings
    room = 0
    try:
        if suffix_of(path).lower() == ".zip":
            path = unpack_zip(path, folder / "series", settings.max_upload_bytes)
        with state.store.reading:
            room = state.store.volume_room()
            if room <= 0:
                raise InputTooLarge("no room")
            volume = load_volume(path, limits=ReadLimits(min(room, DEFAULT_MAX_INPUT_BYTES)), confine_to=confine_to)
            state.store.claim(folder, volume.array.nbytes)
        session = state.segmenter.open(volume, axis=axis, window=window, feature_cache_mb=settings.feature_cache_mb)
    except InputTooLarge:
        raise ApiError(413, f"{name} does not fit the memory this server keeps for open scans ({_mb(max(0, room))} MB free of "
                            f"{_mb(settings.max_volume_bytes)} MB, --max-volume-mb); close a session or raise the budget") from None
    except MedSAM2Error as exc:
        raise ApiError(400, _relative_message(exc, path, name, (folder, settings.data_dir))) from None
    write_viewer_nifti(volume, folder / "volume.nii.gz")
    return state.store.add(name, session, folder, window_presets(volume, session.intensity), pacs=pacs)


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.0f}"


def session_info(served: ServedSession) -> dict:
    """What the page needs to show a session's scan and place its prompts."""
    session = served.session
    volume = session.volume
    return {
        "session": served.id,
        "name": served.name,
        "shape_zyx": list(volume.shape),
        "spacing_xyz": [float(s) for s in volume.spacing],
        "axis": session.axis,
        "voxel_axis": session.voxel_axis,
        "frame_axes": FRAME_AXES[session.voxel_axis],
        "frames": list(session.shape),
        "is_2d": volume.is_2d,
        "dicom": bool(volume.dicom_files),
        "pacs": served.pacs is not None,
        "window": {"name": session.intensity.name, "low": session.intensity.low, "high": session.intensity.high},
        "window_presets": served.window_presets,
        "labels": session.labels,
        "pending": session.pending_labels(),
    }


def summary(served: ServedSession) -> dict:
    """Per segmented object: size, extent, confidence per slice and the slices to review; call
    with the model lock held (sanity checks may decode)."""
    session = served.session
    report = session.result(propagate_pending=False).report
    objects = []
    for obj in report.objects:
        objects.append({
            "label": obj.label, "name": obj.name, "volume_ml": obj.volume_ml, "area_pixels": obj.area_pixels,
            "first_slice": obj.first_slice, "last_slice": obj.last_slice, "slices": len(obj.slices),
            "mean_confidence": obj.mean_confidence, "prompted_slices": obj.prompted_slices,
            "confidence_per_slice": {str(k): round(v, 4) for k, v in obj.confidence_per_slice.items()},
            "low_confidence_slices": [k for k, v in obj.confidence_per_slice.items() if v < LOW_CONFIDENCE],
        })
    return {"objects": objects, "pending": session.pending_labels(), "labels": session.labels, "warnings": report.warnings,
            "corrections": report.corrections}


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
