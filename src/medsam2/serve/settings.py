"""The options of ``medsam2 serve`` and the checks made before the server starts."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from medsam2.engine.options import ModelOptions
from medsam2.errors import UsageError

#: the environment variable that gives the API key when ``--api-key`` is not given
API_KEY_VARIABLE = "MEDSAM2_API_KEY"


def physical_memory_bytes() -> int | None:
    """This machine's memory in bytes (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


#: the shortest key ``--api-keys`` accepts (characters)
MIN_USER_KEY_CHARS = 16


def read_api_users(path: str | os.PathLike) -> tuple[tuple[str, str], ...]:
    """The annotators' keys of ``--api-keys FILE``: one ``NAME KEY`` per line (blank lines and
    lines from ``#`` on are skipped); names and keys unique, keys of 16 characters or more.

    Raises:
        UsageError: a missing file, a line that is not two words, a short or repeated key, a repeated name.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--api-keys {path}: {exc.strerror or exc}") from None
    users: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise UsageError(f"--api-keys {path}, line {number}: write one annotator per line as NAME KEY")
        name, key = words
        if len(key) < MIN_USER_KEY_CHARS:
            raise UsageError(f"--api-keys {path}, line {number}: {name}'s key is shorter than {MIN_USER_KEY_CHARS} characters; "
                             "make one with python -c 'import secrets; print(secrets.token_urlsafe())'")
        if any(name == n for n, _ in users) or any(key == k for _, k in users):
            raise UsageError(f"--api-keys {path}, line {number}: {name} or its key appears twice")
        users.append((name, key))
    if not users:
        raise UsageError(f"--api-keys {path} names nobody; write one annotator per line as NAME KEY")
    return tuple(users)


def default_volume_budget_mb() -> float:
    """A quarter of this machine's memory in MB (4096 where it cannot be read)."""
    total = physical_memory_bytes()
    return round(total / 4 / 2**20) if total else 4096.0


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
        api_users: (name, key) per annotator (:func:`read_api_users`): each key opens the server
            as ``api_key`` does, and a project save made with it is recorded under the name.
        model: the model every session shares.
        feature_cache_mb: each session's feature cache budget.
        dicomweb: a PACS's DICOMweb root (``dicomweb://HOST:PORT/PATH``): the page lists its series
            (QIDO-RS), opens them (WADO-RS) and saves SEG / RT-STRUCT back (STOW-RS); None: no PACS.
        max_volume_mb: the server-wide budget for the voxels of the open scans (as stored: a 512 x
            512 x 300 int16 CT is 150 MB); a scan that would pass it is refused with 413 from its
            header, before its voxels are read. None: a quarter of the machine's memory.
        max_json_mb: the largest JSON body (prompts, masks included); 413 past it, counted as it arrives.
        upload_min_kbps, upload_grace_seconds: an upload must keep an average of this many kB/s
            after its first ``upload_grace_seconds``; a slower one is dropped with 408.
        allowed_hosts: Host names accepted besides the loopback names and the bound address (a
            loopback server refuses any other Host with 421: DNS rebinding). Off loopback, Host
            is checked only where some are given.
        allowed_origins: origins (``https://name[:port]``) accepted for state-changing requests
            besides the server's own (a reverse proxy that rewrites the Host header).
        project: an annotation project (:mod:`medsam2.project`): its cases are listed and opened
            with its active model, sessions save into it, and it trains in the background.
        retrain_every: with a project, start training after every this many new final labels (0: never by itself).
        train_args: more ``medsam2 train`` options for the background training (e.g. ``("--epochs", "3")``).
        feature_disk_mb: with a project, the disk its cases' features may take (``DIR/cache/features``).
        score_cases: with a project, score its open cases in the background (``medsam2 project
            score``: what ``least-confident`` ranks by; it fills the feature cache too).
        save_dir: where every session's labels are autosaved as the annotator works (and can be
            reopened after a restart); default with a project ``PROJECT/autosave``, else none.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path | None = None
    max_sessions: int = 4
    session_idle_minutes: float = 30.0
    max_upload_mb: float = 2048.0
    api_key: str | None = None
    api_users: tuple[tuple[str, str], ...] = ()
    model: ModelOptions = field(default_factory=ModelOptions)
    feature_cache_mb: float = 1024.0
    dicomweb: str | None = None
    max_volume_mb: float | None = None
    max_json_mb: float = 1.0
    upload_min_kbps: float = 32.0
    upload_grace_seconds: float = 10.0
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    project: Path | None = None
    retrain_every: int = 0
    train_args: tuple[str, ...] = ()
    feature_disk_mb: float = 8192.0
    score_cases: bool = True
    save_dir: Path | None = None

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
        if not is_loopback(self.host) and key is None and not self.api_users:
            raise UsageError(
                f"--host {self.host} lets other machines in: give an API key with --api-key KEY or {API_KEY_VARIABLE}, "
                "or keep the default --host 127.0.0.1"
            )
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port {self.port} is not a port number (0..65535; 0 picks a free one)")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise UsageError(f"--data {self.data_dir} is not a folder")
        if self.retrain_every < 0:
            raise UsageError(f"--retrain-every takes a count of final labels (0: never), not {self.retrain_every}")
        if (self.retrain_every or self.train_args) and self.project is None:
            raise UsageError("--retrain-every and --train-epochs train a project: give --project DIR")
        volume_mb = self.max_volume_mb if self.max_volume_mb is not None else default_volume_budget_mb()
        for name, value in (("--max-sessions", self.max_sessions), ("--session-idle-minutes", self.session_idle_minutes),
                            ("--max-upload-mb", self.max_upload_mb), ("--max-volume-mb", volume_mb),
                            ("--max-json-mb", self.max_json_mb), ("--upload-min-kbps", self.upload_min_kbps),
                            ("the upload grace", self.upload_grace_seconds), ("--feature-disk-mb", self.feature_disk_mb)):
            if not value > 0:
                raise UsageError(f"{name} must be positive, not {value}")
        hosts = tuple(_host_name(name) for name in self.allowed_hosts)
        origins = tuple(_origin(text) for text in self.allowed_origins)
        data_dir = Path(self.data_dir).resolve() if self.data_dir is not None else None
        dicomweb = None
        if self.dicomweb is not None:
            from medsam2.io.dicomweb import server_root

            dicomweb = server_root(self.dicomweb)
        project = Path(self.project).resolve() if self.project is not None else None
        save_dir = Path(self.save_dir) if self.save_dir is not None else project / "autosave" if project is not None else None
        if save_dir is not None and save_dir.exists() and not save_dir.is_dir():
            raise UsageError(f"--save-dir {save_dir} is not a folder")
        save_dir = None if save_dir is None else save_dir.resolve()
        return replace(self, data_dir=data_dir, project=project, save_dir=save_dir, api_key=key, dicomweb=dicomweb, max_volume_mb=volume_mb,
                       allowed_hosts=hosts, allowed_origins=origins)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_volume_bytes(self) -> int:
        return int((self.max_volume_mb if self.max_volume_mb is not None else default_volume_budget_mb()) * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)


def _host_name(text: str) -> str:
    """``--allowed-host`` as the name a Host header carries (lower case, no port, no brackets)."""
    name = text.strip().lower()
    if not name or "/" in name or " " in name:
        raise UsageError(f"--allowed-host takes a host name such as annotate.example.org, not {text!r}")
    return name


def _origin(text: str) -> str:
    """``--allowed-origin`` as ``scheme://host[:port]`` (lower case, default ports dropped)."""
    from medsam2.serve.guards import origin_of

    origin = origin_of(text)
    if origin is None:
        raise UsageError(f"--allowed-origin takes an origin such as https://annotate.example.org, not {text!r}")
    return origin
