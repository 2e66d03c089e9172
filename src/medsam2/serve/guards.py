"""What every request passes before a route sees it: the Host, the Origin, the API key, the body's size.

- **Host** (DNS rebinding): a page on ``evil.example`` whose name is made to point at 127.0.0.1
  reaches a loopback server with ``Host: evil.example``. A loopback server answers only the
  loopback names, its bound address and ``--allowed-host`` names; others get 421.
- **Origin** (cross-site requests): a page on another site can POST a form or a multipart
  upload to the server without reading the answer. A state-changing request (any method but
  GET, HEAD, OPTIONS) whose ``Origin`` (or, without one, ``Referer``) is not the server's own
  origin or an ``--allowed-origin`` gets 403. A request with neither header (curl, Python, the
  MONAI Label client) is not from a page and passes.
- **API key**: with a key, ``/api``, ``/monailabel``, ``/docs``, ``/redoc`` and ``/openapi.json``
  need ``Authorization: Bearer KEY`` (compared in constant time); the page itself asks for it, and
  MONAI Label clients get it as their token from ``/monailabel/auth/token`` (open, as is
  ``/monailabel/auth/``, which tells them a key is needed).
- **Body size**: every body but the file uploads (capped by ``--max-upload-mb`` as they stream)
  is capped at ``--max-json-mb``, by its Content-Length and while it arrives; 413 past it.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: the names a loopback server always answers to
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: the paths the API key guards
KEYED_PREFIXES = ("/api", "/monailabel", "/docs", "/redoc", "/openapi.json")
#: where a MONAI Label client logs in (with the key as its password): open without a key
OPEN_PATHS = frozenset({"/monailabel/auth", "/monailabel/auth/token"})
#: the multipart file uploads (method, path without a trailing slash): the scan's cap, not a JSON body's
FILE_UPLOADS = (
    ("POST", re.compile(r"/api/sessions")),
    ("POST", re.compile(r"/api/sessions/[^/]+/labels")),
    ("POST", re.compile(r"/api/sessions/[^/]+/images")),
    ("PUT", re.compile(r"/monailabel/(datastore|datastore/label|session)")),
    ("POST", re.compile(r"/monailabel/infer/[^/]+")),
)
#: methods that change nothing (the Origin check lets them through)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class RequestPolicy:
    """What :class:`RequestGuard` enforces.

    Attributes:
        allowed_hosts: Host names answered (lower case, no port); None: any.
        allowed_origins: origins accepted besides the request's own (``scheme://host[:port]``).
        api_key: the key the keyed paths need; None: no key.
        api_users: (name, key) of annotators who each have a key of their own: any of them opens
            the keyed paths too, and the request then carries the name (``request.state.user``).
        max_body_bytes: the cap on every body but the file uploads (:data:`FILE_UPLOADS`).
    """

    allowed_hosts: frozenset[str] | None
    allowed_origins: frozenset[str]
    api_key: str | None
    max_body_bytes: int
    api_users: tuple[tuple[str, str], ...] = ()

    def user_of(self, token: str) -> tuple[bool, str | None]:
        """Whether ``token`` is a key of this server, and whose (None: the shared ``api_key``).
        Every key is compared, in constant time each, whichever matches."""
        matched, user = False, None
        if self.api_key is not None and hmac.compare_digest(token.encode(), self.api_key.encode()):
            matched = True
        for name, key in self.api_users:
            if hmac.compare_digest(token.encode(), key.encode()):
                matched, user = True, name
        return matched, user


def host_name(host_header: str) -> str:
    """The name in a Host header: lower case, without the port or an IPv6 address's brackets."""
    text = host_header.strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL (lower case, the scheme's default port dropped); None
    for what is not an http(s) URL with a host (``null``, ``file://``, garbage)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != _DEFAULT_PORTS[parts.scheme] else "")


def _netloc_of_origin(origin: str) -> str:
    """``host[:port]`` of an origin, the port kept only where it is not the scheme's default."""
    return origin.split("://", 1)[1]


def _own_netlocs(host_header: str) -> set[str]:
    """What an Origin's ``host[:port]`` may be to count as this server's own: the Host header as
    sent, and without a default port."""
    text = host_header.strip().lower()
    netlocs = {text}
    for port in (":80", ":443"):
        if text.endswith(port):
            netlocs.add(text[: -len(port)])
    return netlocs


def allowed_hosts_for(bind_host: str, extra: tuple[str, ...], loopback: bool) -> frozenset[str] | None:
    """The Host names a server bound to ``bind_host`` answers: on loopback, the loopback names,
    the bound address and ``extra``; elsewhere ``extra`` where given, else any (None)."""
    if loopback:
        return frozenset({*LOOPBACK_NAMES, host_name(bind_host), *extra})
    return frozenset(extra) if extra else None


class RequestGuard:
    """ASGI middleware that checks each HTTP request against a :class:`RequestPolicy` before the app sees it."""

    def __init__(self, app: ASGIApp, policy: RequestPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        if self._is_upload(scope, headers):
            await self.app(scope, receive, send)
            return
        limit = self.policy.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, _too_large(limit))
            return
        await self.app(scope, _capped(receive, limit), send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, message) for a request refused before the app, else None."""
        policy = self.policy
        host = headers.get("host")
        if policy.allowed_hosts is not None:
            if host is None:
                return 400, "the request has no Host header"
            if host_name(host) not in policy.allowed_hosts:
                return 421, (f"this server does not answer to the host name {host_name(host)!r}; open it by the address it "
                             "printed, or start it with --allowed-host NAME")
        if scope["method"] not in SAFE_METHODS:
            sender = headers.get("origin") or headers.get("referer")
            if sender is not None:
                origin = origin_of(sender)
                own = _own_netlocs(host or "")
                if origin is None or (_netloc_of_origin(origin) not in own and origin not in policy.allowed_origins):
                    return 403, (f"a request from the page at {origin or sender.split('?')[0][:100]!r} may not change this "
                                 "server; open the page from the server itself, or start it with --allowed-origin ORIGIN")
        path = scope["path"]
        keyed = path.startswith(KEYED_PREFIXES) and path.rstrip("/") not in OPEN_PATHS
        if (policy.api_key is not None or policy.api_users) and keyed:
            given = headers.get("authorization", "")
            token = given[7:] if given[:7].lower() == "bearer " else ""
            matched, user = policy.user_of(token)
            if not matched:
                what = "missing" if not given else "wrong"
                return 401, f"API key {what}: send the header 'Authorization: Bearer KEY' with the server's key"
            scope.setdefault("state", {})["user"] = user
        return None

    def _is_upload(self, scope: Scope, headers: dict[str, str]) -> bool:
        path = scope["path"].rstrip("/")
        return (any(scope["method"] == method and pattern.fullmatch(path) for method, pattern in FILE_UPLOADS)
                and headers.get("content-type", "").lower().startswith("multipart/form-data"))


def _too_large(limit: int) -> str:
    return f"the request body is larger than the server's limit of {limit / 2**20:g} MB (--max-json-mb)"


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises a 413 once more than ``limit`` body bytes have arrived."""
    received = 0

    async def capped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, _too_large(limit))
        return message

    return capped


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
