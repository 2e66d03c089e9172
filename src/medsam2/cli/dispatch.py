"""The ``medsam2`` command line: the parser of every subcommand and the dispatch.

Errors are printed on one line to stderr (``medsam2: error: ...``) with exit code 2 for usage
errors and 1 for data errors; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from medsam2._version import __version__
from medsam2.cli import batch, evaluate, info, oneprompt, project, segment, serve, train  # the subcommand modules
from medsam2.cli.common import OneLineParser, add_common, apply_project_model, warn
from medsam2.errors import MedSAM2Error, UsageError


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="medsam2", description="Promptable medical image segmentation (MedSAM-2 style).")
    parser.add_argument("--version", action="version", version=f"medsam2 {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    segment.add_parser(commands)
    evaluate.add_parser(commands)
    oneprompt.add_parser(commands)
    batch.add_parser(commands)
    info.add_parser(commands)
    serve.add_parser(commands)
    train.add_parser(commands)
    project.add_parser(commands)
    commands.add_parser("models", help="list the backbones and SAM 2 model configs, with what each needs")
    demo = commands.add_parser("demo", help="segment five organs of the bundled CT sample and score them")
    demo.add_argument("-o", "--output-dir", default="medsam2_demo", help="folder for the label map, montage and report")
    add_common(demo)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds like Ctrl-C: temporaries and lock
    files are removed on the way out."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medsam2`` command; returns the exit code.

    SIGTERM is handled as SIGINT while it runs: what is half-written is removed and the exit code
    is 143 (130 for Ctrl-C).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave the handler to the caller
        previous = None
    try:
        return _dispatch(argv, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(argv: list[str], debug: bool) -> int:
    return run_guarded(lambda: _run_command(argv), debug)


def run_guarded(work, debug: bool) -> int:
    """Run ``work()`` and turn what it raises into one line on stderr and an exit code (a
    traceback only with ``debug``)."""
    try:
        return work()
    except MedSAM2Error as exc:
        if debug:
            raise
        print(f"medsam2: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signal_name = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"medsam2: {signal_name}; outputs not finished were removed", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # the last line of defence: one line, not a traceback
        if debug:
            raise
        print(f"medsam2: internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return 1


def _run_command(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    apply_project_model(args)  # --project DIR of the commands that run a model
    if args.command == "segment":
        return segment.run_segment(args)
    if args.command == "evaluate":
        return evaluate.run_evaluate(args)
    if args.command == "oneprompt":
        return oneprompt.run_oneprompt_command(args, warn)
    if args.command == "batch":
        return batch.run_batch_command(args)
    if args.command == "info":
        return info.run_info(args)
    if args.command == "serve":
        return serve.run_serve(args)
    if args.command == "train":
        return train.run_train(args, argv)
    if args.command == "project":
        return project.run_project(args)
    if args.command == "models":
        from medsam2.backbones import describe_backbones

        print(describe_backbones())
        return 0
    if args.command == "demo":
        from medsam2.cli.demo import run_demo

        return run_demo(Path(args.output_dir), device=args.device, overwrite=args.overwrite, quiet=args.quiet)
    raise UsageError(f"unknown command {args.command}")
