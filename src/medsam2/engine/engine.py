"""The engine: a backbone with its memory rule and settings, and each backbone family's engine step
(:data:`STEP_KINDS`). It opens sessions (:class:`medsam2.engine.session.Session`) and segments
volumes in one go."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from medsam2.backbones.base import Backbone
from medsam2.engine.litemedsam_settings import PropagationSettings
from medsam2.engine.litemedsam_step import LiteMedSAMStep
from medsam2.engine.memory import check_memory_kind, make_memory
from medsam2.engine.results import SegmentationResult
from medsam2.engine.sam2_step import Sam2Step, Sam2TrackingSettings
from medsam2.engine.session import Session
from medsam2.engine.session_state import DEFAULT_FEATURE_CACHE_MB
from medsam2.engine.sweep import Step
from medsam2.errors import PromptError, UsageError
from medsam2.io.volume import Volume
from medsam2.prompts.parse import ObjectPrompts


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


@dataclass(frozen=True)
class Engine:
    """A backbone with its memory rule and settings: what opens sessions and segments volumes.

    Arguments:
        backbone: the network.
        memory: "confidence", "fifo" or "none" (:data:`medsam2.engine.memory.MEMORY_KINDS`).
        settings: :class:`PropagationSettings` for litemedsam, :class:`Sam2TrackingSettings` for
            sam2; None: the measured defaults.

    Raises:
        UsageError: an unknown memory rule, or settings of the other backbone.
    """

    backbone: Backbone
    memory: str = "confidence"
    settings: PropagationSettings | Sam2TrackingSettings | None = None

    def __post_init__(self) -> None:
        check_memory_kind(self.memory)
        kind = STEP_KINDS.get(self.backbone.name)
        if kind is None:
            raise UsageError(f"no engine step for backbone '{self.backbone.name}'; known: {', '.join(STEP_KINDS)}")
        expected = kind.settings
        if self.settings is None:
            object.__setattr__(self, "settings", expected())
        elif not isinstance(self.settings, expected):
            raise UsageError(f"the {self.backbone.name} backbone takes {expected.__name__}, not {type(self.settings).__name__}")

    @property
    def kind(self) -> StepKind:
        """What this backbone's engine step is (its settings type, how it is made, how it corrects)."""
        return STEP_KINDS[self.backbone.name]

    def open(self, volume: Volume, axis: str = "axial", window: str = "auto",
             feature_cache_mb: float | None = DEFAULT_FEATURE_CACHE_MB) -> Session:
        """A :class:`Session` over ``volume`` (nothing encoded yet)."""
        return Session(self, volume, axis=axis, window=window, feature_cache_mb=feature_cache_mb)

    def segment(
        self, volume: Volume, prompts: Sequence[ObjectPrompts], axis: str = "axial", window: str = "auto", progress: bool = False
    ) -> SegmentationResult:
        """Every object through the volume in one go: a session that adds them all, propagates
        and gives the result. Every prompt is checked (as it is added) before anything is encoded.

        Raises:
            PromptError: no object, or prompts that do not fit the volume.
        """
        if not prompts:
            raise PromptError("no prompt given; add --box, --point, --mask or --prompts")
        session = self.open(volume, axis=axis, window=window)
        for obj in prompts:
            session.add(obj)
        for _ in session.propagate(progress=progress):
            pass
        return session.result()
