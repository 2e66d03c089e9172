"""``torchrun --nproc-per-node N -m medsam2.cli.train_worker DATASET -o RUN_DIR ...``: one training process."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from medsam2.cli.common import OneLineParser
    from medsam2.cli.dispatch import run_guarded
    from medsam2.cli.train import add_arguments, train_here

    parser = OneLineParser(prog="python -m medsam2.cli.train_worker", description="one process of `medsam2 train` (torchrun starts N)")
    add_arguments(parser)
    return run_guarded(lambda: train_here(parser.parse_args(argv)), debug="--debug" in (argv or sys.argv))


if __name__ == "__main__":
    sys.exit(main())
