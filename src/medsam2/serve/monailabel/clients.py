"""Which of the server's sessions belong to MONAI Label clients: the one per image that
``/infer?image=ID`` runs on, and those a client made with ``PUT /session/``. Only these are
closed to make room for the next image, and only the latter answer ``/infer?session_id=``
(a session of the page is never touched by a MONAI Label client)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class LabelClientSessions:
    """Session ids by image id, the uploaded sessions, and one lock per image (two quick clicks on
    one image open one session)."""

    by_image: dict[str, str] = field(default_factory=dict)
    uploaded: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _image_locks: dict[str, threading.Lock] = field(default_factory=dict)

    def image_lock(self, image_id: str) -> threading.Lock:
        """The lock held while the session of ``image_id`` is looked up or opened."""
        with self._lock:
            return self._image_locks.setdefault(image_id, threading.Lock())

    def of_image(self, image_id: str) -> str | None:
        with self._lock:
            return self.by_image.get(image_id)

    def set_image(self, image_id: str, session_id: str) -> None:
        with self._lock:
            self.by_image[image_id] = session_id

    def add_uploaded(self, session_id: str) -> None:
        with self._lock:
            self.uploaded.add(session_id)

    def is_uploaded(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self.uploaded

    def session_ids(self) -> set[str]:
        """Every session of MONAI Label clients (what may be closed to make room)."""
        with self._lock:
            return set(self.by_image.values()) | self.uploaded

    def forget(self, session_id: str) -> None:
        """Drop a closed session from every table."""
        with self._lock:
            self.uploaded.discard(session_id)
            for image_id in [i for i, s in self.by_image.items() if s == session_id]:
                del self.by_image[image_id]
