"""No lost work: every session's labels written to the server's ``--save-dir`` as the annotator works.

After each request that changed a session (a prompt, a propagation, a correction, an undo...),
before the session is given back, its label map and a note of what it is are written, atomically,
to ``SAVE_DIR/KEY/`` (``KEY``: the session id, or the autosave it was reopened from):

- ``scan.nii.gz``: the scan as the page shows it (written once; a colour image as its luminance),
- ``labels.nii.gz``: the segmented objects' label map in the scan's geometry,
- ``autosave.json``: the scan's name, the objects' labels and names, the project case, the time.

An idle session that expires, or a server that stops, leaves them there; ``GET /api/autosaves``
lists them and ``POST /api/autosaves/KEY/sessions`` opens one again.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medsam2.io.atomic import atomic_write, write_json_atomic
from medsam2.serve.errors import ApiError
from medsam2.serve.store import ServedSession

log = logging.getLogger("medsam2.serve")

SCAN, LABELS, NOTE = "scan.nii.gz", "labels.nii.gz", "autosave.json"
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class AutosaveNote:
    """What an autosave holds (``autosave.json``)."""

    key: str
    name: str
    saved: float
    objects: list[dict] = field(default_factory=list)
    case: str | None = None


def write_autosave(root: Path, served: ServedSession) -> None:
    """Write the session's labels (and, the first time, its scan) under ``root``; call holding the
    session. A failure is logged, never raised: the annotator's request goes on."""
    try:
        key = served.autosave_key or served.id
        folder = root / key
        folder.mkdir(parents=True, exist_ok=True)
        scan = folder / SCAN
        if not scan.exists():
            atomic_write(scan, lambda tmp: shutil.copyfile(served.folder / "volume.nii.gz", tmp))
        objects = _save_labels(served, folder / LABELS)
        note = AutosaveNote(key, served.name, time.time(), objects, None if served.case is None else served.case.case_id)
        write_json_atomic(asdict(note), folder / NOTE, overwrite=True)
        served.autosave_key = key
        served.saved_revision = served.session.history.revision
    except Exception:  # noqa: BLE001 (logged; the next change tries again)
        log.exception("autosave of session %s failed", served.id)


def _save_labels(served: ServedSession, path: Path) -> list[dict]:
    """Write the segmented objects' label map (no model call); their labels and names."""
    from medsam2.io.writers import save_mask

    result = served.session.result(propagate_pending=False, sanity=False)
    names = {obj.label: obj.name for obj in result.report.objects}
    save_mask(result.labels, served.session.volume, path, overwrite=True, names=names)
    return [{"label": label, "name": name} for label, name in names.items()]


def list_autosaves(root: Path | None) -> list[AutosaveNote]:
    """The autosaves under ``root``, newest first (an unreadable one is left out)."""
    if root is None or not root.is_dir():
        return []
    notes = []
    for folder in root.iterdir():
        try:
            data = json.loads((folder / NOTE).read_text())
            if (folder / LABELS).is_file() and (folder / SCAN).is_file():
                notes.append(AutosaveNote(**data))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(notes, key=lambda n: n.saved, reverse=True)


def autosave_folder(root: Path | None, key: str) -> Path:
    """The folder of autosave ``key``.

    Raises:
        ApiError: 404 when there is no such autosave (or the server keeps none).
    """
    if root is None:
        raise ApiError(404, "this server keeps no autosaves; start it with --save-dir DIR (or --project DIR)")
    folder = root / key
    if not _KEY.fullmatch(key) or not (folder / NOTE).is_file():
        raise ApiError(404, f"no autosave {key[:70]!r}")
    return folder


def read_note(folder: Path) -> AutosaveNote:
    return AutosaveNote(**json.loads((folder / NOTE).read_text()))
