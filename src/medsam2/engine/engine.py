"""The engine: a backbone with its memory rule and settings, and its family's engine step
(:data:`~medsam2.engine.step_kinds.STEP_KINDS`). It opens sessions (:class:`medsam2.engine.session.Session`) and segments
volumes in one go."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medsam2.backbones.base import Backbone
from medsam2.engine.feature_disk import FeatureFolder
from medsam2.engine.litemedsam_settings import PropagationSettings
from medsam2.engine.memory_kinds import DEFAULT_MEMORY, check_memory_kind
from medsam2.engine.results import SegmentationResult
from medsam2.engine.sam2_step import Sam2TrackingSettings
from medsam2.engine.session import Session
from medsam2.engine.session_state import DEFAULT_FEATURE_CACHE_MB
from medsam2.engine.step_kinds import STEP_KINDS, StepKind
from medsam2.errors import PromptError, UsageError
from medsam2.io.volume import Volume
from medsam2.prompts.parse import ObjectPrompts


@dataclass(frozen=True)
class Engine:
    """A backbone with its memory rule and settings: what opens sessions and segments volumes.

    Arguments:
        backbone: the network.
        memory: "confidence", "fifo" or "none" (:data:`medsam2.engine.memory_kinds.MEMORY_KINDS`).
        settings: :class:`PropagationSettings` for litemedsam, :class:`Sam2TrackingSettings` for
            sam2; None: the measured defaults.

    Raises:
        UsageError: an unknown memory rule, or settings of the other backbone.
    """

    backbone: Backbone
    memory: str = DEFAULT_MEMORY
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
             feature_cache_mb: float | None = DEFAULT_FEATURE_CACHE_MB, feature_folder: FeatureFolder | None = None) -> Session:
        """A :class:`Session` over ``volume`` (nothing encoded yet; ``feature_folder``: features kept on disk)."""
        return Session(self, volume, axis=axis, window=window, feature_cache_mb=feature_cache_mb, feature_folder=feature_folder)

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
