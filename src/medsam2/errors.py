"""User-facing errors.

Every failure a user can cause has a subclass here with a message that says what was wrong and
what to do. The command line prints the message on one line and exits with ``exit_code``.
"""

from __future__ import annotations


class MedSAM2Error(Exception):
    """Base class of all errors that medsam2 reports to users (exit code 1: bad data)."""

    exit_code = 1


class UsageError(MedSAM2Error):
    """The command was called wrongly: unknown option values, unsupported suffixes (exit code 2)."""

    exit_code = 2


class InputError(MedSAM2Error):
    """An input file or folder cannot be read or holds data that cannot be segmented."""


class PromptError(UsageError):
    """A prompt is malformed or does not fit the volume (outside the image, empty, bad label)."""


class OutputError(MedSAM2Error):
    """An output cannot be written: it exists, its folder is not writable, or it is an input."""


class CheckpointError(MedSAM2Error):
    """Model weights are missing or do not match the architecture."""
