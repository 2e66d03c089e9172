"""The memory rules every engine offers, by name: light, so that the command line, the options and
the memory bank share one list."""

from __future__ import annotations

from medsam2.errors import UsageError

#: the memory rules every engine offers: the confidence bank, SAM 2's own (prompted + last six), previous slice only
MEMORY_KINDS = ("confidence", "fifo", "none")
#: the default: the confidence memory bank
DEFAULT_MEMORY = MEMORY_KINDS[0]


def check_memory_kind(kind: str) -> str:
    """``kind`` when it is one of :data:`MEMORY_KINDS`; raises UsageError otherwise."""
    if kind not in MEMORY_KINDS:
        raise UsageError(f"unknown memory '{kind}'; choose one of {', '.join(MEMORY_KINDS)}")
    return kind
