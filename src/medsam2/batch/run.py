"""A batch: every case of a manifest through a worker pool, the report written after every case.

``OUTDIR/batch_report.csv`` and ``batch_report.jsonl`` hold one line per case (case, status ok /
failed / skipped, the one-line error, slices, volume per object, seconds, worker, output, image, and
the warnings ``medsam2 segment`` gives for the study: a list in JSONL, joined with " | " in CSV);
each line is flushed to disk as its case finishes, so a crash loses nothing finished. ``resume``
skips the cases whose report line says ok (or skipped) and whose output is there and readable,
and redoes the others (a half-written case: its output is replaced).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from medsam2.batch.manifest import BatchCase
from medsam2.batch.pool import Completed
from medsam2.engine.jobs import run_segment_job
from medsam2.engine.options import ModelOptions
from medsam2.engine.segmenter import Segmenter
from medsam2.errors import InputError, MedSAM2Error, OutputError
from medsam2.io.atomic import remove_stale_temporaries
from medsam2.io.guard import read_header

REPORT_COLUMNS = ("case", "status", "error", "slices", "volume_ml", "seconds", "worker", "output", "image", "warnings")
#: what joins a case's warnings in the CSV report (the JSONL report has them as a list)
WARNING_SEPARATOR = " | "


@dataclass
class CaseOutcome:
    """What became of one case.

    Attributes:
        status: "ok", "failed" or "skipped" (finished by an earlier run).
        error: the one-line error of a failed case ("" otherwise).
        slices: slices holding any object; volume_ml: mL per label.
        seconds: wall time of the case in its worker.
        warnings: the report's warnings, as ``medsam2 segment`` gives them for the study (sanity
            warnings on a result that looks like the answer to a mistaken prompt among them).
    """

    case: str
    status: str
    error: str = ""
    slices: int = 0
    volume_ml: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    worker: str = ""
    output: str = ""
    image: str = ""
    warnings: list[str] = field(default_factory=list)

    def csv_row(self) -> dict[str, object]:
        row = asdict(self)
        row["volume_ml"] = ";".join(f"{label}:{ml:.2f}" for label, ml in sorted(self.volume_ml.items()))
        row["warnings"] = WARNING_SEPARATOR.join(self.warnings)
        return row

    @classmethod
    def from_json(cls, data: dict) -> CaseOutcome:
        data = dict(data)
        data["volume_ml"] = {int(k): float(v) for k, v in (data.get("volume_ml") or {}).items()}
        notes = data.get("warnings")  # (none in a report written before they were kept)
        data["warnings"] = [str(note) for note in notes] if isinstance(notes, list) else []
        return cls(**{k: v for k, v in data.items() if k in REPORT_COLUMNS})


@dataclass(frozen=True)
class SegmentWorker:
    """A pool worker that segments cases (:class:`~medsam2.batch.pool.WorkerSpec`)."""

    model: ModelOptions

    def build(self) -> Segmenter:
        return Segmenter.from_options(self.model)

    def run(self, segmenter: Segmenter, case: BatchCase) -> CaseOutcome:
        started = time.perf_counter()
        outcome = CaseOutcome(case.case, "failed", output=str(case.job.output), image=str(case.job.image))
        try:
            result = run_segment_job(case.job, lambda: segmenter)
        except MedSAM2Error as exc:
            outcome.error = str(exc).splitlines()[0]
        except Exception as exc:  # one case's bug must not stop the others: reported as that case's error
            outcome.error = f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]
        else:
            outcome.status = "ok"
            outcome.slices = len({s for obj in result.report.objects for s in obj.slices})
            outcome.volume_ml = {obj.label: round(obj.volume_ml, 3) for obj in result.report.objects if obj.volume_ml is not None}
            outcome.warnings = list(result.report.warnings)
        outcome.seconds = round(time.perf_counter() - started, 3)
        return outcome

    def died(self, case: BatchCase, reason: str) -> CaseOutcome:
        return CaseOutcome(case.case, "failed", error=f"not segmented: {reason}", output=str(case.job.output), image=str(case.job.image))


class BatchReport:
    """``batch_report.csv`` and ``.jsonl`` in OUTDIR, a line per case, flushed as each case ends."""

    def __init__(self, outdir: Path) -> None:
        self.csv_path = outdir / "batch_report.csv"
        self.jsonl_path = outdir / "batch_report.jsonl"

    def exists(self) -> bool:
        return self.csv_path.exists() or self.jsonl_path.exists()

    def previous(self) -> dict[str, CaseOutcome]:
        """The last line of each case in an earlier run's JSONL report (lines cut by a crash are ignored)."""
        found: dict[str, CaseOutcome] = {}
        if not self.jsonl_path.is_file():
            return found
        for line in self.jsonl_path.read_text().splitlines():
            try:
                outcome = CaseOutcome.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
            found[outcome.case] = outcome
        return found

    def start(self, kept: list[CaseOutcome]) -> None:
        """Begin the report anew with the lines of cases an earlier run finished."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        for outcome in kept:
            writer.writerow(outcome.csv_row())
        self._write(self.csv_path, buffer.getvalue(), "w")
        self._write(self.jsonl_path, "".join(json.dumps(asdict(o)) + "\n" for o in kept), "w")

    def add(self, outcome: CaseOutcome) -> None:
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS).writerow(outcome.csv_row())
        self._write(self.csv_path, buffer.getvalue(), "a")
        self._write(self.jsonl_path, json.dumps(asdict(outcome)) + "\n", "a")

    @staticmethod
    def _write(path: Path, text: str, mode: str) -> None:
        with path.open(mode, encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def _complete(outcome: CaseOutcome | None, case: BatchCase) -> bool:
    """An earlier run finished this case: its line says so and its output is there and readable."""
    if outcome is None or outcome.status not in ("ok", "skipped") or not case.job.output.is_file():
        return False
    try:
        read_header(case.job.output)
    except InputError:
        return False
    return True


@dataclass
class BatchSummary:
    """The outcome of every case, in manifest order."""

    outcomes: list[CaseOutcome]
    seconds: float
    pool: str

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> dict[str, int]:
        return {status: sum(o.status == status for o in self.outcomes) for status in ("ok", "failed", "skipped")}


def plan_batch(cases: list[BatchCase], outdir: Path, resume: bool, overwrite: bool) -> tuple[list[BatchCase], list[CaseOutcome]]:
    """The cases to run and those an earlier run finished (with ``resume``), checked before anything runs.

    Raises:
        OutputError: OUTDIR holds a report (without ``resume`` or ``overwrite``), or an output exists.
    """
    report = BatchReport(outdir)
    if report.exists() and not (resume or overwrite):
        raise OutputError(f"{outdir} holds a batch report; pass --resume to continue it or --overwrite to start again")
    previous = report.previous() if resume else {}
    todo, kept = [], []
    for case in cases:
        if resume and _complete(previous.get(case.case), case):
            kept.append(replace(previous[case.case], status="skipped"))
            continue
        if case.job.output.exists() and not (resume or overwrite):
            raise OutputError(f"row {case.row} ({case.case}): {case.job.output} exists; pass --overwrite or --resume")
        # a case redone on resume replaces what an interrupted run left of it
        todo.append(replace(case, job=replace(case.job, overwrite=case.job.overwrite or resume or overwrite)))
    for case in todo:
        case.job.check_outputs()
    # checked above with the user's flags; from here a case may replace its own outputs, so that a
    # study run again after its worker died (mid-write: the label map written, its label
    # description not yet) replaces what that worker left instead of failing on it
    return [replace(case, job=replace(case.job, overwrite=True)) for case in todo], kept


def run_batch(
    cases: list[BatchCase],
    pool,
    outdir: Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    on_outcome: Callable[[CaseOutcome], None] | None = None,
) -> BatchSummary:
    """Run every case through ``pool`` (a :class:`~medsam2.batch.pool.LocalPool` or ``RayPool``).

    A failing case never stops the others. Ctrl-C stops the workers, removes what they left
    half-written, and re-raises; the report keeps every case finished before it.
    """
    started = time.perf_counter()
    outdir.mkdir(parents=True, exist_ok=True)
    todo, kept = plan_batch(cases, outdir, resume, overwrite)
    report = BatchReport(outdir)
    report.start(kept)
    outcomes: dict[str, CaseOutcome] = {o.case: o for o in kept}
    bar = tqdm(total=len(todo), unit="study", desc="batch", disable=not progress)
    try:
        completed: Completed
        for completed in pool.run(todo):
            outcome: CaseOutcome = completed.outcome
            outcome.worker = outcome.worker or completed.worker
            report.add(outcome)
            outcomes[outcome.case] = outcome
            bar.update(1)
            if on_outcome is not None:
                on_outcome(outcome)
    except KeyboardInterrupt:
        for case in todo:  # the workers are gone: their temporaries are stale now
            remove_stale_temporaries(case.job.output.resolve().parent, case.job.output.name)
        raise
    finally:
        bar.close()
    ordered = [outcomes[c.case] for c in cases if c.case in outcomes]
    describe = getattr(pool, "describe", lambda: type(pool).__name__)()
    return BatchSummary(ordered, round(time.perf_counter() - started, 2), describe)
