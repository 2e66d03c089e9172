"""medsam2: promptable medical image segmentation in the MedSAM-2 style.

Public API: :class:`Segmenter` and its interactive :class:`Session`, :func:`load_volume`,
:func:`save_mask`, the prompt types and the errors. Everything else is an implementation detail
that may change.

The names are exported lazily (PEP 562): ``import medsam2`` loads nothing heavy, and the first use
of a name imports the module that owns it (``medsam2.Segmenter`` imports torch, ``medsam2.Box``
does not).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from medsam2._version import __version__

#: public name -> the module that owns it
_EXPORTS = {
    "ObjectReport": "medsam2.engine.results",
    "SegmentationReport": "medsam2.engine.results",
    "SegmentationResult": "medsam2.engine.results",
    "CorrectionSummary": "medsam2.engine.session",
    "PropagationUpdate": "medsam2.engine.session",
    "Session": "medsam2.engine.session",
    "Segmenter": "medsam2.engine.segmenter",
    "ArgumentTypeError": "medsam2.errors",
    "CheckpointError": "medsam2.errors",
    "InputError": "medsam2.errors",
    "MedSAM2Error": "medsam2.errors",
    "OutputError": "medsam2.errors",
    "PromptError": "medsam2.errors",
    "UsageError": "medsam2.errors",
    "Volume": "medsam2.io.volume",
    "load_volume": "medsam2.io.readers",
    "save_mask": "medsam2.io.writers",
    "Box": "medsam2.prompts.types",
    "MaskPrompt": "medsam2.prompts.types",
    "ObjectPrompts": "medsam2.prompts.types",
    "Point": "medsam2.prompts.types",
}

__all__ = [
    "__version__",
    "ArgumentTypeError",
    "Box",
    "CheckpointError",
    "CorrectionSummary",
    "InputError",
    "MaskPrompt",
    "MedSAM2Error",
    "ObjectPrompts",
    "ObjectReport",
    "OutputError",
    "Point",
    "PromptError",
    "PropagationUpdate",
    "SegmentationReport",
    "SegmentationResult",
    "Segmenter",
    "Session",
    "UsageError",
    "Volume",
    "load_volume",
    "save_mask",
]


def __getattr__(name: str):
    """Import the module that owns a public name on its first use, and keep the name here."""
    owner = _EXPORTS.get(name)
    if owner is None:
        raise AttributeError(f"module 'medsam2' has no attribute {name!r}")
    value = getattr(import_module(owner), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from medsam2.engine.results import ObjectReport, SegmentationReport, SegmentationResult
    from medsam2.engine.segmenter import Segmenter
    from medsam2.engine.session import CorrectionSummary, PropagationUpdate, Session
    from medsam2.errors import (
        ArgumentTypeError,
        CheckpointError,
        InputError,
        MedSAM2Error,
        OutputError,
        PromptError,
        UsageError,
    )
    from medsam2.io.readers import load_volume
    from medsam2.io.volume import Volume
    from medsam2.io.writers import save_mask
    from medsam2.prompts.types import Box, MaskPrompt, ObjectPrompts, Point
