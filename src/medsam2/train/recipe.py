"""What the trainer needs of a backbone's recipe, and the part every recipe shares."""

from __future__ import annotations

import torch

from medsam2.train.samples import CaseFeatures


class Recipe:
    """A recipe trains ``network`` (the backbone's own module, in place) through ``module`` (what
    the optimiser and DDP see) and turns targets into losses; subclasses set both and define
    ``losses``, ``validation_targets`` and ``metadata``."""

    network: torch.nn.Module
    module: torch.nn.Module

    def __init__(self) -> None:
        self.cases: dict[str, CaseFeatures] = {}

    @classmethod
    def build_backbone(cls, settings, device: torch.device):
        """The backbone this recipe trains, from ``settings.checkpoint`` (or the bundled weights).

        Raises:
            InputError: a checkpoint path that is not a file.
        """
        raise NotImplementedError

    def weights(self) -> dict[str, torch.Tensor]:
        """The whole network's weights, on the CPU (what ``--checkpoint`` reads)."""
        return {k: v.detach().cpu() for k, v in self.network.state_dict().items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.network.load_state_dict(state)
