"""The project's training in the background of the server: ``medsam2 train --project DIR`` (and
the scoring of its open cases, ``medsam2 project score DIR``) in a process of its own, at a lower
priority and on a bounded number of threads, so that annotation goes on while it runs. One run
at a time; its log is kept in ``DIR/logs/``; a cancel stops the run's whole process group (a
killed run activates nothing: the project saves a model only at its end).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: the nice increment of the training process (the server's requests go first)
TRAINING_NICENESS = 10
#: how much of the log a status answer carries (characters, from the end)
LOG_TAIL_CHARS = 4000


def training_threads(cores: int | None = None) -> int:
    """Threads the training process may use: half the machine's cores (at least one), the rest
    being the annotators'."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // 2)


@dataclass(frozen=True)
class TrainingStatus:
    """Where the project's training stands.

    Attributes:
        state: ``idle`` (never started here), ``running``, ``finished`` (exit 0), ``failed`` or ``cancelled``.
        started: ``time.time()`` of the run's start (None when idle).
        seconds: how long it has run (or ran).
        exit_code: the process's exit status once it ended.
        log: the end of its output (the last :data:`LOG_TAIL_CHARS` characters).
        log_file: the log's path relative to the project folder.
    """

    state: str
    started: float | None = None
    seconds: float | None = None
    exit_code: int | None = None
    log: str = ""
    log_file: str | None = None

    def to_dict(self) -> dict:
        return {"state": self.state, "started": self.started, "seconds": None if self.seconds is None else round(self.seconds, 1),
                "exit_code": self.exit_code, "log": self.log, "log_file": self.log_file}


class ProjectTraining:
    """Starts, watches and cancels the background training of one project.

    Arguments:
        project: the project folder.
        threads: threads the run may use (default :func:`training_threads`).
        niceness: how much lower the run's CPU priority is than the server's (0: the same).
        command: the ``medsam2`` subcommand that runs, before the project folder (default training's).
        log_name: the start of its logs' names in ``DIR/logs/``.
    """

    def __init__(self, project: Path, threads: int | None = None, niceness: int = TRAINING_NICENESS,
                 command: tuple[str, ...] = ("train", "--project"), log_name: str = "train") -> None:
        self.project = project
        self.command = command
        self.log_name = log_name
        self.threads = threads or training_threads()
        self.niceness = niceness
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._log: Path | None = None
        self._started: float | None = None
        self._ended: float | None = None
        self._cancelled = False

    @property
    def running(self) -> bool:
        with self._lock:
            return self._process is not None and self._process.poll() is None

    def start(self, arguments: tuple[str, ...] = ()) -> bool:
        """Start a run with more ``medsam2 train`` options (e.g. ``("--epochs", "3")``); False (and
        nothing started) when one is running already."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return False
            logs = self.project / "logs"
            logs.mkdir(exist_ok=True)
            self._log = logs / f"{self.log_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
            command = [sys.executable, "-m", "medsam2.cli", *self.command, str(self.project), *arguments]
            with self._log.open("w") as log:
                self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 env=env, start_new_session=True, preexec_fn=self._lower_priority)
            self._started, self._ended, self._cancelled = time.time(), None, False
            return True

    def cancel(self) -> bool:
        """Stop the running run (its process group); False when none runs."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                return False
            self._cancelled = True
        _stop_group(process)
        return True

    def status(self) -> TrainingStatus:
        with self._lock:
            process, log, started = self._process, self._log, self._started
            if process is None:
                return TrainingStatus("idle")
            code = process.poll()
            if code is not None and self._ended is None:
                self._ended = time.time()
            ended, cancelled = self._ended, self._cancelled
        state = "running" if code is None else "cancelled" if cancelled else "finished" if code == 0 else "failed"
        seconds = (ended or time.time()) - started
        return TrainingStatus(state, started, seconds, code, _tail(log), str(log.relative_to(self.project)))

    def _lower_priority(self) -> None:  # runs in the child before exec
        if self.niceness:
            os.nice(self.niceness)

    def close(self) -> None:
        """Stop a running run (the server is shutting down)."""
        self.cancel()


def _stop_group(process: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    """SIGTERM to the run's process group, SIGKILL when it has not ended after the grace time."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_CHARS))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
