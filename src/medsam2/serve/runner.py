"""The uvicorn server on a socket bound before it starts (a port in use is a one-line error, and
port 0 gives a free port whose URL is printed)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

import uvicorn

from medsam2.engine.segmenter import Segmenter
from medsam2.errors import UsageError
from medsam2.serve.app import create_app
from medsam2.serve.settings import ServeSettings


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``.

    Raises:
        UsageError: the port is in use or the address is not this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
            raise UsageError(f"port {port} on {host} is in use; pass another --port (0 picks a free one)") from None
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --host or --port") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


@dataclass
class RunningServer:
    """A server started by :func:`start_in_thread` (tests, benchmarks): ``url``, then ``stop()``."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_server(settings: ServeSettings, segmenter: Segmenter) -> uvicorn.Server:
    app = create_app(settings, segmenter)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def start_in_thread(settings: ServeSettings, segmenter: Segmenter) -> RunningServer:
    """Start the server in a background thread of this process; returns once it accepts requests."""
    settings = settings.checked()
    sock = bind(settings.host, settings.port)
    server = make_server(settings, segmenter)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="medsam2-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server stopped while starting")
        thread.join(timeout=0.05)
    return RunningServer(url_of(sock), server, thread)
