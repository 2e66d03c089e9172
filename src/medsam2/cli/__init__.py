"""The ``medsam2`` command line: one module a subcommand (its parser, built without importing the
work it runs) and what they share (:mod:`.common`); :mod:`.dispatch` builds the parser and runs the
command. Errors are one line on stderr with exit code 2 (usage) or 1 (data)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medsam2`` command (see :func:`medsam2.cli.dispatch.main`)."""
    from medsam2.cli.dispatch import main as run

    return run(argv)


__all__ = ["main"]
