"""``medsam2 evaluate``: methods side by side on a labelled dataset with simulated prompts."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from medsam2.cli.common import OUTPUT_FORMATS, add_common, add_model_options, engine_settings, int_list, model_options, warn


def add_parser(commands) -> None:
    """The ``evaluate`` subcommand's options."""
    from medsam2.io.slicing import AXES
    from medsam2.io.windows import WINDOW_CHOICES

    ev = commands.add_parser(
        "evaluate",
        help="measure methods side by side on a labelled dataset with simulated prompts",
        description="Datasets: nnU-Net/MSD layout (imagesTr/, labelsTr/, dataset.json) or images/ + labels/.",
    )
    ev.add_argument("dataset", help="dataset folder")
    ev.add_argument("-o", "--output-dir", required=True, help="RESULTS_DIR for per_case.csv, summary.csv/.md, results.json")
    ev.add_argument(
        "--protocol", default="box-mid",
        help="box-mid (default), box-largest, click-mid, box-every-K, oneprompt, or interactive-N (N = 1..10 rounds of corrections)",
    )
    ev.add_argument("--correction", default="box", choices=("box", "click"),
                    help="interactive-N: correct the worst slice with its reference box (default) or one click")
    ev.add_argument("--methods", default="confidence,oracle",
                    help="comma-separated: confidence, fifo, none, oracle, adapt (default: confidence,oracle; the "
                    "oneprompt protocol takes confidence, none (the support alone) and oracle; adapt, with "
                    "interactive-N only, learns from each round's corrections as the page's 'Learn from my corrections')")
    ev.add_argument("--labels", help="comma-separated label values to evaluate (default: every label found)")
    ev.add_argument("--cases", type=int, help="only the first N cases")
    ev.add_argument("--seed", type=int, default=0, help="seed of the prompt jitter")
    ev.add_argument("--jitter", type=int, default=0, help="move box edges at random by up to this many pixels")
    ev.add_argument("--nsd-tol", type=float, default=2.0, help="NSD tolerance in mm (default 2)")
    ev.add_argument("--axis", default="axial", choices=AXES)
    ev.add_argument("--window", default="auto", choices=WINDOW_CHOICES)
    add_model_options(ev)
    ev.add_argument("--save-predictions", action="store_true", help="write every method's masks under RESULTS_DIR/predictions")
    ev.add_argument(
        "--format", choices=OUTPUT_FORMATS, default="auto",
        help="what --save-predictions writes: auto (.nii.gz; .png for 2D), seg-nrrd, dicom-seg or rtstruct (CASE.dcm, "
        "referencing each case's DICOM series)",
    )
    ev.add_argument("--resume", action="store_true", help="continue a run in RESULTS_DIR, skipping finished cases")
    ev.add_argument("--workers", type=int, help="evaluate cases in N worker processes, each with its own model (default: here)")
    ev.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="evaluate cases on Ray (local, or a cluster at ADDRESS)")
    add_common(ev)


def run_evaluate(args) -> int:
    from medsam2.batch.pool import LocalPool, RayPool
    from medsam2.errors import UsageError
    from medsam2.evaluation.datasets import discover_dataset
    from medsam2.evaluation.harness import MethodSegmenters, run_evaluation
    from medsam2.evaluation.protocols import EvaluationConfig, check_config

    settings = engine_settings(args)
    config = EvaluationConfig(
        protocol=args.protocol,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        labels=int_list(args.labels, "--labels"),
        cases=args.cases,
        seed=args.seed,
        jitter=args.jitter,
        nsd_tolerance_mm=args.nsd_tol,
        axis=args.axis,
        window=args.window,
        correction=args.correction,
        prediction_format=args.format,
        stop_intensity_overlap=args.stop_intensity_overlap,
    )
    check_config(config)
    if args.format != "auto" and not args.save_predictions:
        raise UsageError(f"--format {args.format} is what --save-predictions writes; add --save-predictions")
    dataset = discover_dataset(args.dataset)
    model = model_options(args, settings)
    segmenters = MethodSegmenters(model.build_backbone, model.settings)
    make_pool = None
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers takes a positive integer, not {args.workers}")
    if args.ray:
        make_pool = partial(RayPool, workers=args.workers, address=None if args.ray == "local" else args.ray)
    elif args.workers:
        make_pool = partial(LocalPool, workers=args.workers)
    results = run_evaluation(
        dataset, Path(args.output_dir), config, segmenters, resume=args.resume, overwrite=args.overwrite,
        save_predictions=args.save_predictions, progress=not args.quiet and sys.stderr.isatty(),
        after_case=segmenters.clear, make_pool=make_pool, model=model,
    )
    for note in results["notes"]:
        warn(note)
    if not args.quiet:
        print((Path(args.output_dir) / "summary.md").read_text(), end="")
    return 0


