"""``medsam2 batch``: every study of a manifest, in local worker processes or on Ray."""

from __future__ import annotations

import sys
from pathlib import Path

from medsam2.cli.common import (
    add_common,
    add_input_limit,
    add_memory_option,
    add_model_options,
    add_multiview_option,
    model_options,
    read_limits,
    warn,
)


def add_parser(commands) -> None:
    """The ``batch`` subcommand's options."""
    from medsam2.io.formats import format_names
    from medsam2.io.slicing import AXES
    from medsam2.io.windows import WINDOW_CHOICES

    batch = commands.add_parser(
        "batch",
        help="segment every study of a manifest (CSV or JSONL), on this machine's cores or on a Ray cluster",
        description="MANIFEST rows: image (file or DICOM folder), optional case and output, and prompts (a prompts.json) "
        "or box / point / mask / label / name in the syntax of `segment` (several boxes or points separated by ';'). "
        "Relative paths are relative to the manifest. OUTDIR gets one label map per study and batch_report.csv/.jsonl.",
    )
    batch.add_argument("manifest", help="CSV or JSONL, one study per row")
    batch.add_argument("-o", "--output-dir", required=True, help="OUTDIR: label maps (unless a row names its output) and the report")
    batch.add_argument("--workers", type=int, help="worker processes (default: the cores / 2), each with its own model")
    batch.add_argument("--threads", type=int, help="threads per worker (default: the cores divided among the workers)")
    batch.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="run on Ray: a local instance, or a cluster at ADDRESS ('auto' or HOST:PORT); needs medsam2[ray]",
    )
    batch.add_argument("--resume", action="store_true", help="skip studies an earlier run finished; redo the others")
    batch.add_argument("--format", default="nii.gz", choices=format_names(3), help="label map format of default outputs")
    batch.add_argument("--axis", default="axial", choices=AXES, help="slicing direction (default axial)")
    batch.add_argument("--window", default="auto", choices=WINDOW_CHOICES, help="intensity window (default auto)")
    add_multiview_option(batch)  # a row's 'multiview' overrides it
    add_memory_option(batch)
    add_model_options(batch)
    add_input_limit(batch)
    add_common(batch)


def run_batch_command(args) -> int:
    """Run ``medsam2 batch``; exit code 1 when any study failed."""
    from medsam2.batch.manifest import read_manifest
    from medsam2.batch.pool import LocalPool, RayPool, default_workers
    from medsam2.batch.run import SegmentWorker, plan_batch, run_batch
    from medsam2.errors import UsageError

    model = model_options(args)  # an engine option the backbone does not take is refused here
    outdir = Path(args.output_dir)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"{outdir} exists and is not a folder")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers takes a positive integer, not {args.workers}")
    cases = read_manifest(args.manifest, outdir, args.format, args.axis, args.window, read_limits(args), args.overwrite,
                          multiview=args.multiview)
    outdir.mkdir(parents=True, exist_ok=True)
    plan_batch(cases, outdir, args.resume, args.overwrite)  # every refusal before a worker starts
    spec = SegmentWorker(model)
    if args.ray:
        pool = RayPool(spec, workers=args.workers, threads=args.threads, address=None if args.ray == "local" else args.ray)
    else:
        pool = LocalPool(spec, workers=args.workers or default_workers(), threads=args.threads)
    progress = not args.quiet and sys.stderr.isatty()

    def report(outcome) -> None:
        if outcome.status == "failed":
            warn(f"{outcome.case}: {outcome.error}")
        elif not args.quiet and not progress:
            print(f"{outcome.case}: ok, {outcome.slices} slices, {outcome.seconds:.1f} s ({outcome.worker})")

    try:
        summary = run_batch(cases, pool, outdir, resume=args.resume, overwrite=args.overwrite, progress=progress, on_outcome=report)
    finally:
        if args.ray:
            pool.close()
    counts = summary.counts()
    if not args.quiet:
        rate = counts["ok"] / summary.seconds * 3600 if summary.seconds else 0.0
        print(
            f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in {summary.seconds:.1f} s "
            f"({rate:.0f} studies/hour on {summary.pool}); report: {outdir / 'batch_report.csv'}"
        )
    return 1 if counts["failed"] else 0
