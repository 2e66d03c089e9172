"""The server's open sessions: at most ``max_sessions``, each with its own folder, closed when idle.

Every session has a lock: one request works on it at a time (a propagation holds it until it ends,
even if its client went away, so that the session is never left half-changed). The model is shared
by every session and its calls are serialized by one more lock (OpenVINO's compiled models and
the SAM 2 predictor are not safe under concurrent calls).
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from medsam2.engine.session import Session
from medsam2.serve.errors import ApiError, not_found

#: a request waits this long for a session busy with another request before it gets 409
BUSY_WAIT_SECONDS = 600.0


@dataclass(frozen=True)
class CaseLink:
    """What ties a session to its project case.

    Attributes:
        case_id: the case.
        based_on: the case's newest version when the session opened (a save is based on it).
        model: the model the session runs (a model version's name, or ``bundled``).
        opened: ``time.monotonic()`` at opening (a save records the seconds since).
        shown: the saved version laid on the scan when it opened (None: the scan alone).
    """

    case_id: str
    based_on: int | None
    model: str
    opened: float
    shown: int | None = None


@dataclass(frozen=True)
class StudyImage:
    """Another image of the session's study, on the scan's grid (``POST .../images``).

    Attributes:
        name: what it was called (upload name or path under ``--data``).
        volume: its voxels on the scan's grid (:func:`medsam2.io.resample.resample_onto`).
        resampled: whether it had to be resampled onto that grid.
        window_presets: the display windows the page offers for it.
    """

    name: str
    volume: object  # medsam2.io.volume.Volume
    resampled: bool
    window_presets: dict[str, list[float]]


@dataclass
class ServedSession:
    """One scan open in the server.

    Attributes:
        id: the session's id in URLs (random, unguessable).
        name: what the scan was called (upload name or path under ``--data``).
        session: the engine's session.
        folder: the session's own folder (its upload, the scan as NIfTI, label maps being sent).
        window_presets: the display windows the page offers ({name: [low, high]}, computed once).
        lock: held by the request working on the session.
        last_used: ``time.monotonic()`` of the last request.
        pacs: the series' address where it was opened from ``--dicomweb`` (Save to PACS stores there), else None.
        case: the project case it was opened from (``serve --project``), else None.
    """

    id: str
    name: str
    session: Session
    folder: Path
    window_presets: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    pacs: object | None = None  # medsam2.io.dicomweb.SeriesAddress
    case: CaseLink | None = None
    #: the session's revision (``session.history.revision``) when it was last autosaved
    saved_revision: int = 0
    #: the autosave folder's name (default: the session id; a reopened autosave keeps its own)
    autosave_key: str | None = None
    #: autosaved as it changes (False: a MONAI Label client's, whose work its save_label keeps)
    autosave: bool = True
    #: the study's other images (``POST .../images``), numbered from 1 (0 is the scan)
    images: list[StudyImage] = field(default_factory=list)

    def held_bytes(self) -> int:
        """Bytes of voxels the session holds: its scan and its other images."""
        return self.session.volume.array.nbytes + sum(image.volume.array.nbytes for image in self.images)


class SessionStore:
    """Sessions by id, with a cap on how many are open and an idle timeout.

    Arguments:
        root: the server's temporary folder (each session gets a folder under it).
        max_sessions: how many may be open (or being opened) at once.
        idle_seconds: a session not used for this long is closed by :meth:`expire`.
        volume_budget: bytes the open sessions' voxels may take together (:meth:`volume_room`).
        max_uploads: uploads arriving at once (an upload takes no session slot until it has arrived).
    """

    def __init__(self, root: Path, max_sessions: int, idle_seconds: float, volume_budget: int = 2**62,
                 max_uploads: int | None = None) -> None:
        self.root = root
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.volume_budget = volume_budget
        self.max_uploads = max_uploads if max_uploads is not None else 2 * max_sessions
        self._sessions: dict[str, ServedSession] = {}
        self._reserved = 0
        self._uploading = 0
        self._claims: dict[Path, int] = {}
        self._lock = threading.Lock()
        #: held while a scan is read, so that two scans read at once cannot both fit the same room
        self.reading = threading.Lock()
        #: called with a session that changed, before a request gives it back (holding it)
        self.on_change: Callable[[ServedSession], None] | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder for an upload as it arrives (no session slot yet); removed with what it
        holds when the block ends, unless a session took it (:meth:`add` renames it).

        Raises:
            ApiError: 429 when ``max_uploads`` uploads are arriving already.
        """
        with self._lock:
            if self._uploading >= self.max_uploads:
                raise ApiError(429, f"{self.max_uploads} uploads are arriving already, the most this server takes; retry later")
            self._uploading += 1
        folder = None
        try:
            with self._opening(None) as folder:
                yield folder
        finally:
            with self._lock:
                self._uploading -= 1
            if folder is not None:  # what is left of it once the request is done (a session renamed it away)
                shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def reserve(self, folder: Path | None = None) -> Iterator[Path]:
        """A slot for a session being opened, with its folder (``folder``, or a fresh one); the
        folder is removed if the opening fails (nothing of a refused upload stays behind).

        Raises:
            ApiError: 429 when ``max_sessions`` are open or being opened.
        """
        self.expire()
        with self._lock:
            if len(self._sessions) + self._reserved >= self.max_sessions:
                count = f"{self.max_sessions} session{'s are' if self.max_sessions != 1 else ' is'} open"
                raise ApiError(429, f"{count}, the most this server allows; close one (DELETE) or retry later")
            self._reserved += 1
        try:
            with self._opening(folder) as opened:
                yield opened
        finally:
            with self._lock:
                self._reserved -= 1

    @contextmanager
    def _opening(self, folder: Path | None) -> Iterator[Path]:
        """``folder`` (or a fresh one), removed with its claim on the volume budget if the block fails."""
        if folder is None:
            folder = self.root / f"opening-{secrets.token_hex(8)}"
            folder.mkdir()
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            with self._lock:
                self._claims.pop(folder, None)
            raise

    def volume_room(self) -> int:
        """Bytes of voxels that one more scan may take: the budget less the open sessions' scans
        and those being opened."""
        with self._lock:
            used = sum(served.held_bytes() for served in self._sessions.values()) + sum(self._claims.values())
        return self.volume_budget - used

    def claim(self, folder: Path, n_bytes: int) -> None:
        """Count a scan read for the session being opened in ``folder`` against the budget until it is added or fails."""
        with self._lock:
            self._claims[folder] = n_bytes

    def add(
        self, name: str, session: Session, folder: Path, window_presets: dict[str, list[float]], pacs: object | None = None
    ) -> ServedSession:
        """Register an opened session (its folder is renamed after its id, and the DICOM files the
        scan was read from there are found under the new name)."""
        session_id = secrets.token_urlsafe(12)
        home = folder.rename(self.root / session_id)
        volume = session.volume
        if volume.dicom_files and all(p.is_relative_to(folder) for p in volume.dicom_files):
            volume.dicom_files = tuple(home / p.relative_to(folder) for p in volume.dicom_files)
        if volume.data_files and all(p.is_relative_to(folder) for p in volume.data_files):
            volume.data_files = tuple(home / p.relative_to(folder) for p in volume.data_files)
        served = ServedSession(session_id, name, session, home, window_presets, pacs=pacs)
        with self._lock:
            self._claims.pop(folder, None)
            self._sessions[session_id] = served
        return served

    def get(self, session_id: str) -> ServedSession:
        """The session, marked as used now.

        Raises:
            ApiError: 404 when there is no such session.
        """
        with self._lock:
            served = self._sessions.get(session_id)
            if served is None:
                raise not_found(session_id)
            served.last_used = time.monotonic()
            return served

    @contextmanager
    def working(self, session_id: str) -> Iterator[ServedSession]:
        """The session, held for one request (others on it wait, or get 409 after a long wait)."""
        served = self.acquire(session_id)
        try:
            yield served
        finally:
            self.release(served)

    def acquire(self, session_id: str) -> ServedSession:
        """The session with its lock taken; give it back with :meth:`release`.

        Raises:
            ApiError: 404 (no such session, or it was closed while waiting), 409 (busy too long).
        """
        served = self.get(session_id)
        if not served.lock.acquire(timeout=BUSY_WAIT_SECONDS):
            raise ApiError(409, f"session {session_id} is busy with another request; retry when it has finished")
        with self._lock:
            if self._sessions.get(session_id) is not served:
                served.lock.release()
                raise not_found(session_id)
        return served

    def release(self, served: ServedSession) -> None:
        """Give a session back; first, where it changed since, call :attr:`on_change` (the autosave)."""
        try:
            if self.on_change is not None and served.autosave and served.session.history.revision != served.saved_revision:
                self.on_change(served)
        finally:
            served.last_used = time.monotonic()
            served.lock.release()

    def delete(self, session_id: str) -> None:
        """Close a session once no request works on it, and remove its folder.

        Raises:
            ApiError: 404 when there is no such session.
        """
        served = self.acquire(session_id)
        with self._lock:
            self._sessions.pop(session_id, None)
        served.lock.release()
        shutil.rmtree(served.folder, ignore_errors=True)

    def expire(self) -> list[str]:
        """Close the sessions idle longer than ``idle_seconds`` (not those working); their ids."""
        now = time.monotonic()
        closed = []
        with self._lock:
            for session_id, served in list(self._sessions.items()):
                if now - served.last_used > self.idle_seconds and served.lock.acquire(blocking=False):
                    del self._sessions[session_id]
                    served.lock.release()
                    closed.append(served)
        for served in closed:
            shutil.rmtree(served.folder, ignore_errors=True)
        return [served.id for served in closed]

    def close_idlest(self, among: set[str]) -> str | None:
        """Close the least recently used session of ``among`` that no request works on; its id
        (None when there is none to close)."""
        with self._lock:
            for served in sorted((s for i, s in self._sessions.items() if i in among), key=lambda s: s.last_used):
                if served.lock.acquire(blocking=False):
                    del self._sessions[served.id]
                    served.lock.release()
                    break
            else:
                return None
        shutil.rmtree(served.folder, ignore_errors=True)
        return served.id

    def close_all(self) -> None:
        with self._lock:
            closed = list(self._sessions.values())
            self._sessions.clear()
        for served in closed:
            shutil.rmtree(served.folder, ignore_errors=True)
