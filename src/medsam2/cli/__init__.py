"""The ``medsam2`` command line: one module a subcommand (segment and evaluate in main, oneprompt),
and what they share. Errors are one line on stderr with exit code 2 (usage) or 1 (data)."""

from medsam2.cli.main import main

__all__ = ["main"]
