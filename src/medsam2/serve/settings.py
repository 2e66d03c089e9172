"""The options of ``medsam2 serve`` and the checks made before the server starts."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from medsam2.errors import UsageError
from medsam2.jobs import ModelOptions

#: the environment variable that gives the API key when ``--api-key`` is not given
API_KEY_VARIABLE = "MEDSAM2_API_KEY"


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """What the server allows and where it reads scans from.

    Attributes:
        host, port: where it listens (port 0: any free port).
        data_dir: the folder whose scans the page lists and ``{"path": ...}`` opens; None: uploads only.
        max_sessions: sessions open at once; one more is refused with 429.
        session_idle_minutes: a session untouched this long is closed and its memory freed.
        max_upload_mb: an upload larger than this is refused with 413 (and nothing of it kept).
        api_key: every ``/api`` call must send ``Authorization: Bearer KEY``; None: no key.
        model: the model every session shares.
        feature_cache_mb: each session's feature cache budget.
        dicomweb: a PACS's DICOMweb root (``dicomweb://HOST:PORT/PATH``): the page lists its series
            (QIDO-RS), opens them (WADO-RS) and saves SEG / RT-STRUCT back (STOW-RS); None: no PACS.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path | None = None
    max_sessions: int = 4
    session_idle_minutes: float = 30.0
    max_upload_mb: float = 2048.0
    api_key: str | None = None
    model: ModelOptions = field(default_factory=ModelOptions)
    feature_cache_mb: float = 1024.0
    dicomweb: str | None = None

    def checked(self) -> ServeSettings:
        """These settings with the API key taken from the environment where not given, after checks.

        Raises:
            UsageError: a host other than loopback without an API key, a data folder that is not a
                folder, or limits that are not positive.
        """
        key = self.api_key if self.api_key is not None else os.environ.get(API_KEY_VARIABLE) or None
        if key is not None and not key.strip():
            raise UsageError("the API key is empty; give a long random string, e.g. from "
                             "python -c 'import secrets; print(secrets.token_urlsafe())'")
        if not is_loopback(self.host) and key is None:
            raise UsageError(
                f"--host {self.host} lets other machines in: give an API key with --api-key KEY or {API_KEY_VARIABLE}, "
                "or keep the default --host 127.0.0.1"
            )
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port {self.port} is not a port number (0..65535; 0 picks a free one)")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise UsageError(f"--data {self.data_dir} is not a folder")
        for name, value in (("--max-sessions", self.max_sessions), ("--session-idle-minutes", self.session_idle_minutes),
                            ("--max-upload-mb", self.max_upload_mb)):
            if not value > 0:
                raise UsageError(f"{name} must be positive, not {value}")
        data_dir = Path(self.data_dir).resolve() if self.data_dir is not None else None
        dicomweb = None
        if self.dicomweb is not None:
            from medsam2.io.dicomweb import server_root

            dicomweb = server_root(self.dicomweb)
        return ServeSettings(self.host, self.port, data_dir, self.max_sessions, self.session_idle_minutes, self.max_upload_mb,
                             key, self.model, self.feature_cache_mb, dicomweb)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
