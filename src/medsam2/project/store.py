"""A project's index: its cases and every version of each case's label map, in SQLite (WAL).

A version is immutable: its label file (``labels/CASE/vN.nii.gz``) is written atomically before
its row is committed, so an interrupted save (kill -9 included) leaves either nothing or a file
that no row names, which the next save of that case replaces. Two writers never lose an update:
numbering happens inside one ``BEGIN IMMEDIATE`` transaction, and a save based on a version that
is no longer the latest is kept as its own version, marked ``conflict``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam2.errors import InputError, UsageError
from medsam2.io.volume import suffix_of
from medsam2.project.sources import CaseSource, content_hash
from medsam2.project.vocabulary import STATUSES

INDEX_NAME = "project.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY, image TEXT NOT NULL, image_absolute TEXT NOT NULL, copied INTEGER NOT NULL,
    sha256 TEXT NOT NULL, added REAL NOT NULL, position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    case_id TEXT NOT NULL REFERENCES cases(case_id), version INTEGER NOT NULL, status TEXT NOT NULL,
    path TEXT NOT NULL, based_on INTEGER, conflict INTEGER NOT NULL, user TEXT, model TEXT,
    prompts TEXT, corrections INTEGER, seconds REAL, created REAL NOT NULL, PRIMARY KEY (case_id, version)
);
"""
#: a model's mean slice confidence on a case (what ``least-confident`` ranks by); added after
#: schema 1 was released, so it is created where missing whenever a project opens
_SCORES = """
CREATE TABLE IF NOT EXISTS scores (
    case_id TEXT NOT NULL REFERENCES cases(case_id), model TEXT NOT NULL, confidence REAL NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (case_id, model)
);
"""


@dataclass(frozen=True)
class CaseRecord:
    """One case: its image (relative paths are the project folder's) and the hash it had when added."""

    case_id: str
    image: Path
    copied: bool
    sha256: str


@dataclass(frozen=True)
class Provenance:
    """What made a saved label map. ``prompts`` is the prompts as JSON-able data (None: not known)."""

    user: str | None = None
    model: str | None = None
    prompts: object = None
    corrections: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class VersionRecord:
    """One saved label map of a case. ``path`` is relative to the project folder."""

    case_id: str
    version: int
    status: str
    path: Path
    based_on: int | None
    conflict: bool
    provenance: Provenance
    created: float


@dataclass
class ProjectStatus:
    """Counts for ``project status``: cases by the status of their latest version (``unlabelled``
    when none), and the cases whose image changed or went missing since they were added."""

    cases: int
    by_status: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"cases": self.cases, "by_status": self.by_status, "conflicts": self.conflicts,
                "changed": self.changed, "missing": self.missing}


class ProjectStore:
    """The index of the project folder ``root`` (see :func:`create_project`, :func:`open_project`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._db = sqlite3.connect(root / INDEX_NAME, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ProjectStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds the database's write lock from its start."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- cases ----------------------------------------------------------------------------------
    def add_cases(self, sources: list[CaseSource], copy: bool) -> list[CaseRecord]:
        """Add cases (by reference, or copied into ``images/``); a case name already held is refused.

        Raises:
            UsageError: a case name the project already holds.
        """
        held = {c.case_id for c in self.cases()}
        clash = next((s.case_id for s in sources if s.case_id in held), None)
        if clash is not None:
            raise UsageError(f"the project already holds a case '{clash}'")
        records = []
        for source in sources:
            image = self._copy_in(source) if copy else source.image.resolve()
            records.append(CaseRecord(source.case_id, image, copy, content_hash(image)))
        with self._writing() as db:
            start = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM cases").fetchone()[0]
            for offset, record in enumerate(records):
                relative = os.path.relpath(record.image, self.root.resolve())
                db.execute("INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (record.case_id, relative, str(record.image), int(record.copied), record.sha256, time.time(),
                            start + offset))
        return records

    def _copy_in(self, source: CaseSource) -> Path:
        """Copy a case's image into ``images/``; never over a file that is there (another case's).

        Raises:
            UsageError: ``images/`` holds that name already.
        """
        folder = self.root / "images"
        folder.mkdir(exist_ok=True)
        target = folder / (source.case_id if source.image.is_dir() else source.case_id + suffix_of(source.image))
        if target.exists():
            raise UsageError(f"the project's images/ holds {target.name} already; give the case another name")
        if source.image.is_dir():
            shutil.copytree(source.image, target)
        else:
            with open(source.image, "rb") as src, open(target, "xb") as out:  # exclusive: two writers, one wins
                shutil.copyfileobj(src, out)
            shutil.copystat(source.image, target)
        return target

    def cases(self) -> list[CaseRecord]:
        """The cases in the order they were added. An image is found relative to the project folder
        first (a project moved together with its images), then where it was when added."""
        rows = self._db.execute("SELECT case_id, image, image_absolute, copied, sha256 FROM cases ORDER BY position").fetchall()
        found = []
        for case_id, relative, absolute, copied, sha in rows:
            beside = Path(os.path.normpath(self.root.resolve() / relative))
            image = beside if copied or beside.exists() or not Path(absolute).exists() else Path(absolute)
            found.append(CaseRecord(case_id, image, bool(copied), sha))
        return found

    def case(self, case_id: str) -> CaseRecord:
        """Raises: InputError for a case the project does not hold."""
        found = next((c for c in self.cases() if c.case_id == case_id), None)
        if found is None:
            raise InputError(f"the project holds no case '{case_id}'")
        return found

    # -- versions -------------------------------------------------------------------------------
    def save_version(
        self, case_id: str, labels: np.ndarray, reference, status: str, based_on: int | None,
        provenance: Provenance = Provenance(),
    ) -> VersionRecord:
        """Save a new version of a case's label map (``labels``: (z, y, x) integers on
        ``reference``'s grid, a :class:`~medsam2.io.volume.Volume`), written in its geometry.

        ``based_on`` is the version the editor started from (None: none). When another version was
        saved meanwhile, this one is kept all the same, marked ``conflict``.

        Raises:
            UsageError: an unknown status; InputError: an unknown case, or a final label map with no structure.
        """
        from medsam2.io.writers import save_mask

        if status not in STATUSES:
            raise UsageError(f"unknown status '{status}'; choose {' or '.join(STATUSES)}")
        self.case(case_id)
        if status == "final" and not np.any(labels):
            raise InputError(f"a final label map of case '{case_id}' holds no structure (every voxel is 0); save it as a draft")
        folder = self.root / "labels" / case_id
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f".staged-{os.getpid()}-{time.monotonic_ns()}.nii.gz"
        save_mask(labels, reference, staged)  # the file first: a row never names a missing file
        try:
            with self._writing() as db:
                latest = db.execute("SELECT MAX(version) FROM versions WHERE case_id = ?", (case_id,)).fetchone()[0]
                number = (latest or 0) + 1
                target = folder / f"v{number}.nii.gz"
                os.replace(staged, target)  # a file left here by a save killed before its commit is no version
                conflict = latest is not None and based_on != latest
                db.execute(
                    "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (case_id, number, status, str(target.relative_to(self.root)), based_on, int(conflict),
                     provenance.user, provenance.model, None if provenance.prompts is None else json.dumps(provenance.prompts),
                     provenance.corrections, provenance.seconds, time.time()),
                )
        finally:
            staged.unlink(missing_ok=True)
        return self.version(case_id, number)

    def versions(self, case_id: str | None = None) -> list[VersionRecord]:
        query = "SELECT * FROM versions" + (" WHERE case_id = ?" if case_id else "") + " ORDER BY case_id, version"
        return [_version(row) for row in self._db.execute(query, (case_id,) if case_id else ()).fetchall()]

    def version(self, case_id: str, number: int) -> VersionRecord:
        row = self._db.execute("SELECT * FROM versions WHERE case_id = ? AND version = ?", (case_id, number)).fetchone()
        if row is None:
            raise InputError(f"case '{case_id}' has no version {number}")
        return _version(row)

    def final_cases(self) -> set[str]:
        """The cases with at least one final version."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT case_id FROM versions WHERE status = 'final'")}

    def latest(self, case_id: str, status: str | None = None) -> VersionRecord | None:
        """The case's newest version (of ``status`` when given), or None."""
        found = [v for v in self.versions(case_id) if status is None or v.status == status]
        return found[-1] if found else None

    # -- the models' confidence per case ---------------------------------------------------------
    def record_score(self, case_id: str, model: str, confidence: float) -> None:
        """Keep ``model``'s mean slice confidence (0-1) on a case (replacing an older one)."""
        with self._writing() as db:
            db.execute("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", (case_id, model, float(confidence), time.time()))

    def scores(self, model: str) -> dict[str, float]:
        """``model``'s mean slice confidence per case it has scored."""
        rows = self._db.execute("SELECT case_id, confidence FROM scores WHERE model = ?", (model,)).fetchall()
        return {case_id: confidence for case_id, confidence in rows}

    # -- the project's settings -----------------------------------------------------------------
    def meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value) -> None:
        with self._writing() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def status(self, check_files: bool = True) -> ProjectStatus:
        """Counts per status of each case's latest version; with ``check_files``, each image is
        hashed again to find changed and missing ones."""
        cases = self.cases()
        result = ProjectStatus(cases=len(cases), by_status={s: 0 for s in ("unlabelled", *STATUSES)})
        for case in cases:
            latest = self.latest(case.case_id)
            result.by_status["unlabelled" if latest is None else latest.status] += 1
            if check_files:
                if not case.image.exists():
                    result.missing.append(case.case_id)
                elif content_hash(case.image) != case.sha256:
                    result.changed.append(case.case_id)
        result.conflicts = sum(v.conflict for v in self.versions())
        return result


def _version(row) -> VersionRecord:
    case_id, version, status, path, based_on, conflict, user, model, prompts, corrections, seconds, created = row
    provenance = Provenance(user, model, None if prompts is None else json.loads(prompts), corrections, seconds)
    return VersionRecord(case_id, version, status, Path(path), based_on, bool(conflict), provenance, created)


def create_project(root: str | os.PathLike, sources: list[CaseSource], copy: bool = False) -> ProjectStore:
    """A new project in ``root`` (a missing or empty folder) holding ``sources``.

    Raises:
        UsageError: ``root`` already holds a project or other files.
    """
    root = Path(root)
    if (root / INDEX_NAME).exists():
        raise UsageError(f"{root} already holds a project; add to it with 'medsam2 project add' or choose another folder")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} is not an empty folder; a project needs a folder of its own")
    existed = root.exists()
    root.mkdir(parents=True, exist_ok=True)
    store = ProjectStore(root)
    try:
        store._db.executescript(_SCHEMA + _SCORES)
        store.set_meta("schema", SCHEMA_VERSION)
        store.add_cases(sources, copy)
    except BaseException:  # nothing half-made is left behind (the user's empty folder stays)
        store.close()
        if existed:
            for child in root.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return store


def open_project(root: str | os.PathLike) -> ProjectStore:
    """The project in ``root``.

    Raises:
        InputError: no project there, or one written by a newer medsam2.
    """
    root = Path(root)
    if not (root / INDEX_NAME).is_file():
        raise InputError(f"{root} holds no project ({INDEX_NAME}); create one with 'medsam2 project init {root} --images ...'")
    store = ProjectStore(root)
    schema = store.meta("schema")
    if schema != SCHEMA_VERSION:
        store.close()
        raise InputError(f"{root} is a project of schema {schema}; this medsam2 reads schema {SCHEMA_VERSION}")
    store._db.executescript(_SCORES)
    return store
