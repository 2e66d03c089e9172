"""The options a model is built from, one frozen value that every entry point builds once (the
command line, the server's settings, a batch manifest, evaluate) and passes down whole (the
memory rules' vocabulary is :mod:`medsam2.engine.memory_kinds`). Light: no torch until a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from medsam2.backbones.registry import DEFAULT_BACKBONE
from medsam2.engine.memory_kinds import DEFAULT_MEMORY

if TYPE_CHECKING:
    from medsam2.engine.litemedsam_settings import PropagationSettings



@dataclass(frozen=True)
class ModelOptions:
    """The model every worker builds (the options of ``segment``)."""

    backbone: str = DEFAULT_BACKBONE
    device: str = "auto"
    memory: str = DEFAULT_MEMORY
    checkpoint: str | None = None
    runtime: str = "auto"
    precision: str = "auto"
    model_config: str | None = None
    offload: bool = False
    #: the engine's settings (None: the measured defaults of the backbone's engine)
    settings: PropagationSettings | None = None

    def build_backbone(self):
        """The backbone alone (what evaluate's method segmenters share); the whole segmenter is
        :meth:`medsam2.engine.segmenter.Segmenter.from_options`."""
        from medsam2.backbones import build_backbone
        from medsam2.backbones.devices import resolve_device

        return build_backbone(
            self.backbone, resolve_device(self.device), checkpoint=self.checkpoint, runtime=self.runtime,
            precision=self.precision, model_config=self.model_config, offload=self.offload,
        )
