"""Each backbone family's engine step (:data:`STEP_KINDS`, by the backbone's ``name``): its
settings type, how a step is made, and how it takes corrections. The engine
(:class:`medsam2.engine.engine.Engine`) and the session read it; it imports neither."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medsam2.backbones.base import Backbone
from medsam2.engine.litemedsam_settings import PropagationSettings
from medsam2.engine.litemedsam_step import LiteMedSAMStep
from medsam2.engine.memory import make_memory
from medsam2.engine.sam2_step import Sam2Step, Sam2TrackingSettings
from medsam2.engine.sweep import Step


@dataclass(frozen=True)
class StepKind:
    """One backbone family's engine step.

    Attributes:
        settings: the settings type the step takes.
        make_step: (backbone, memory rule, settings) -> a fresh :class:`~medsam2.engine.sweep.Step`.
        local_corrections: a correction re-propagates outward from its slice only while the answer
            changes (LiteMedSAM); otherwise the object is tracked again from all its prompts (SAM 2,
            whose memory is per pass).
    """

    settings: type
    make_step: Callable[[Backbone, str, object], Step]
    local_corrections: bool


#: the engine step of each backbone, by the backbone's ``name``
STEP_KINDS: dict[str, StepKind] = {
    "litemedsam": StepKind(
        PropagationSettings,
        lambda backbone, memory, settings: LiteMedSAMStep(backbone, lambda: make_memory(memory, settings.bank), settings),
        local_corrections=True,
    ),
    "sam2": StepKind(
        Sam2TrackingSettings,
        lambda backbone, memory, settings: Sam2Step(backbone, memory, settings),
        local_corrections=False,
    ),
}
