"""medsam2: promptable medical image segmentation in the MedSAM-2 style.

Public API: :class:`Segmenter` and its interactive :class:`Session`, :func:`load_volume`, :func:`save_mask`, the prompt types and the
errors. Everything else is an implementation detail that may change.
"""

from medsam2._version import __version__
from medsam2.engine.results import ObjectReport, SegmentationReport, SegmentationResult  # noqa: E402
from medsam2.engine.session import CorrectionSummary, PropagationUpdate, Session  # noqa: E402
from medsam2.errors import (  # noqa: E402
    ArgumentTypeError,
    CheckpointError,
    InputError,
    MedSAM2Error,
    OutputError,
    PromptError,
    UsageError,
)
from medsam2.io.volume import Volume, load_volume, save_mask  # noqa: E402
from medsam2.prompts import Box, MaskPrompt, ObjectPrompts, Point  # noqa: E402
from medsam2.segmenter import Segmenter  # noqa: E402

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
