"""Peak resident memory of the process during one piece of work (not since the process began)."""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

_STATM = Path("/proc/self/statm")


def current_rss_mb() -> float | None:
    """Resident memory now, in MB (Linux /proc); None where it cannot be read."""
    try:
        pages = int(_STATM.read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Context manager sampling the resident memory every ``interval`` seconds in a thread;
    ``peak_mb`` is the highest value seen during the block. Where /proc is missing it falls back
    to the process's lifetime peak (getrusage), which is an upper bound."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            value = current_rss_mb()
            if value is not None:
                self.peak_mb = max(self.peak_mb, value)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        if current_rss_mb() is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.peak_mb = max(self.peak_mb, current_rss_mb() or 0.0)
        else:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.peak_mb = round(self.peak_mb, 1)
