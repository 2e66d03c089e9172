"""Worker pools that each hold a model: local processes, or Ray actors on a machine or a cluster.

A pool runs tasks of a :class:`WorkerSpec`: ``build()`` once per worker (the model), then
``run(state, task)`` per task, which returns an outcome and does not raise for a bad case. Both
pools yield :class:`Completed` as tasks finish, in any order; a worker that dies is replaced and
its task run again (up to ``retries`` times), so a crash loses no task.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Protocol

from medsam2.errors import InputError, MedSAM2Error, UsageError


class WorkerSpec(Protocol):
    """What a worker does; picklable (it travels to spawned processes and Ray actors)."""

    def build(self) -> Any:
        """The worker's state (its model), built once per worker."""

    def run(self, state: Any, task: Any) -> Any:
        """One task's outcome; a bad case is an outcome, not an exception."""

    def died(self, task: Any, reason: str) -> Any:
        """The outcome of a task whose worker died every time it ran it."""


@dataclass(frozen=True)
class Completed:
    """A finished task: its position in the task list, its outcome, and the worker that ran it."""

    index: int
    outcome: Any
    worker: str


def available_cores() -> int:
    """Cores this process may use (its CPU affinity where the system says it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: cores per worker when the number of workers is not given (see default_workers)
THREADS_PER_WORKER = 2


def default_workers() -> int:
    """Workers for this machine's cores, :data:`THREADS_PER_WORKER` threads each."""
    return max(1, available_cores() // THREADS_PER_WORKER)


def threads_per_worker(workers: int) -> int:
    """Cores divided among the workers (at least one thread each)."""
    return max(1, available_cores() // max(1, workers))


def _worker_main(spec: WorkerSpec, threads: int, name: str, tasks, results) -> None:
    """A local worker process: build the state, then run tasks until the ``None`` sentinel."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    torch.set_num_threads(threads)
    try:
        state = spec.build()
    except MedSAM2Error as exc:  # no model, no worker: the parent stops the batch with this error
        results.put(("fatal", name, None, exc))
        return
    results.put(("ready", name, None, None))
    while True:
        item = tasks.get()
        if item is None:
            return
        index, task = item
        results.put(("start", name, index, None))
        results.put(("done", name, index, spec.run(state, task)))


class LocalPool:
    """``workers`` spawned processes on this machine, each with its own model and ``threads`` threads.

    Arguments:
        spec: what each worker builds and runs.
        workers: processes (at least 1).
        threads: torch / OpenVINO threads per process (default: the cores divided among them).
        retries: how often a task whose worker died is run again before it is given up.
    """

    def __init__(self, spec: WorkerSpec, workers: int, threads: int | None = None, retries: int = 2) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise UsageError(f"--workers takes a positive integer, not {workers!r}")
        self.spec = spec
        self.workers = workers
        self.threads = threads or threads_per_worker(workers)
        self.retries = retries
        self._context = get_context("spawn")  # a fresh interpreter per worker: no forked threads or OpenVINO state
        self._processes: dict[str, Any] = {}
        self._ready: set[str] = set()
        self._serial = 0

    def describe(self) -> str:
        plural = "es" if self.workers > 1 else ""
        return f"{self.workers} local worker process{plural} x {self.threads} thread{'s' if self.threads > 1 else ''}"

    def _start(self, tasks, results) -> None:
        self._serial += 1
        name = f"local-{self._serial}"
        process = self._context.Process(target=_worker_main, args=(self.spec, self.threads, name, tasks, results), daemon=True)
        process.start()
        self._processes[name] = process

    def run(self, tasks: Sequence[Any], on_start: Callable[[int, str], None] | None = None) -> Iterator[Completed]:
        """Run every task; yields each as it finishes. Ctrl-C stops the workers and re-raises."""
        if not tasks:
            return
        task_queue, results = self._context.Queue(), self._context.Queue()
        for index, task in enumerate(tasks):
            task_queue.put((index, task))
        for _ in range(min(self.workers, len(tasks))):
            self._start(task_queue, results)
        running: dict[str, int] = {}
        attempts = [0] * len(tasks)
        left = len(tasks)
        deaths_before_ready = 0
        try:
            while left:
                try:
                    kind, name, index, outcome = results.get(timeout=0.5)
                except queue.Empty:
                    for name, process in list(self._processes.items()):
                        if process.exitcode is None:
                            continue
                        del self._processes[name]
                        if name not in self._ready:
                            deaths_before_ready += 1
                            if deaths_before_ready > self.retries:
                                raise InputError(f"batch workers die while loading the model (exit code {process.exitcode})") from None
                        lost = running.pop(name, None)
                        if lost is not None:
                            attempts[lost] += 1
                            if attempts[lost] > self.retries:
                                left -= 1
                                yield Completed(lost, self.spec.died(tasks[lost], f"its worker died {attempts[lost]} times"), name)
                            else:
                                task_queue.put((lost, tasks[lost]))
                        if left and len(self._processes) < min(self.workers, left):
                            self._start(task_queue, results)
                    if not self._processes and left:
                        self._start(task_queue, results)
                    continue
                if kind == "fatal":
                    raise outcome
                if kind == "ready":
                    self._ready.add(name)
                elif kind == "start":
                    running[name] = index
                    if on_start is not None:
                        on_start(index, name)
                elif kind == "done":
                    running.pop(name, None)
                    left -= 1
                    yield Completed(index, outcome, name)
        finally:
            for _ in self._processes:
                task_queue.put(None)
            deadline = time.monotonic() + (5 if not left else 0)
            for process in self._processes.values():
                process.join(timeout=max(0.0, deadline - time.monotonic()))
                if process.exitcode is None:
                    process.terminate()
                    process.join(timeout=5)
            self._processes.clear()


#: with it at 0, a local Ray instance uses the loopback address for every service (Ray's own switch)
RAY_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _ray(local: bool):
    if local and "ray" not in sys.modules:
        # a local instance and its workers then listen and talk on 127.0.0.1 only (the variable is
        # read when ray is imported, here and in the processes Ray starts)
        os.environ.setdefault(RAY_LOCAL_ONLY_ENV, "0")
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'medsam2[ray]'") from None
    return ray


class _RayWorker:
    """A Ray actor that holds one worker's state."""

    def __init__(self, spec: WorkerSpec, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.spec = spec
        self.state = spec.build()

    def name(self) -> str:
        return f"ray-{os.uname().nodename}-{os.getpid()}"

    def pid(self) -> int:
        return os.getpid()

    def run(self, index: int, task: Any) -> tuple[int, Any, str]:
        return index, self.spec.run(self.state, task), self.name()


class RayPool:
    """Ray actors that hold a model each; a task whose actor dies is run again on its restarted actor.

    Arguments:
        spec: what each actor builds and runs.
        workers: actors (default: one per GPU when the cluster has GPUs, else one per ``threads`` cores).
        threads: CPU cores per actor (default: this machine's cores divided among ``workers``).
        address: a running cluster ("auto" or "HOST:PORT"); None starts a local Ray instance.
        retries: how often a task is run again when its actor dies.
    """

    def __init__(self, spec: WorkerSpec, workers: int | None = None, threads: int | None = None,
                 address: str | None = None, retries: int = 2) -> None:
        ray = _ray(local=not address)
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=available_cores(), object_store_memory=200 * 1024**2, **options)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", available_cores()))
        if workers is None:
            workers = gpus or max(1, cpus // (threads or THREADS_PER_WORKER))
        self.workers = workers
        self.threads = threads or max(1, cpus // workers)
        actor_options = {"num_cpus": self.threads, "max_restarts": -1, "max_task_retries": retries}
        if gpus:
            actor_options["num_gpus"] = 1
        actor_class = ray.remote(**actor_options)(_RayWorker)
        self.actors = [actor_class.remote(spec, self.threads) for _ in range(workers)]
        self._ray = ray

    def describe(self) -> str:
        return f"{self.workers} Ray actor{'s' if self.workers > 1 else ''} x {self.threads} CPU{'s' if self.threads > 1 else ''}"

    def run(self, tasks: Sequence[Any], on_start: Callable[[int, str], None] | None = None) -> Iterator[Completed]:
        """Run every task on the actors; yields each as it finishes."""
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        try:
            for index, outcome, worker in pool.map_unordered(lambda actor, item: actor.run.remote(*item), list(enumerate(tasks))):
                yield Completed(index, outcome, worker)
        except self._ray.exceptions.RayError as exc:  # an actor that cannot start, or retries used up
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MedSAM2Error):
                raise cause from None
            raise InputError(f"the Ray workers failed: {str(exc).strip().splitlines()[0]}") from None

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        if self._owns_ray:
            self._ray.shutdown()
