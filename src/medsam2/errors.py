"""User-facing errors.

Every failure a user can cause has a subclass here with a message that says what was wrong and
what to do. The command line prints the message on one line and exits with ``exit_code``.

The classes also derive from the built-in exception a Python caller would expect, so that
``except ValueError`` or ``except TypeError`` keep working:

=====================  ==========================  =========  ==================================
class                  also a                      exit code  raised for
=====================  ==========================  =========  ==================================
``MedSAM2Error``       ``Exception``               1          the base of all of them
``UsageError``         ``ValueError``              2          wrong option values, suffixes
``ArgumentTypeError``  ``UsageError``, TypeError   2          a Python argument of the wrong type
``PromptError``        ``UsageError``              2          prompts that do not fit the image
``InputError``         ``ValueError``              1          unreadable, truncated, oversized,
                                                              non-finite or non-regular inputs
``InputTooLarge``      ``InputError``              1          a declared size over the cap
``OutputError``        ``MedSAM2Error``            1          outputs that cannot be written
``CheckpointError``    ``MedSAM2Error``            1          missing or foreign model weights
=====================  ==========================  =========  ==================================
"""

from __future__ import annotations


class MedSAM2Error(Exception):
    """Base class of all errors that medsam2 reports to users (exit code 1: bad data)."""

    exit_code = 1


class UsageError(MedSAM2Error, ValueError):
    """The command was called wrongly: unknown option values, unsupported suffixes (exit code 2)."""

    exit_code = 2


class ArgumentTypeError(UsageError, TypeError):
    """A Python API argument has the wrong type (a list where a Volume is expected, a tuple for a Box)."""


class InputError(MedSAM2Error, ValueError):
    """An input file or folder cannot be read or holds data that cannot be segmented."""


class InputTooLarge(InputError):
    """An input declares more voxels than the cap allows (found from its header, before its voxels are read)."""


class PromptError(UsageError):
    """A prompt is malformed or does not fit the volume (outside the image, empty, bad label)."""


class OutputError(MedSAM2Error):
    """An output cannot be written: it exists, its folder is not writable, or it is an input."""


class CheckpointError(MedSAM2Error):
    """Model weights are missing or do not match the architecture."""
