"""The backbone families medsam2 can build, by name: one entry owns each family's name, what it
needs and how it is built. Light on purpose: the command line reads it without importing torch.

A family's builder is imported only when a backbone is built (``module:function`` text), so that
listing the families costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from medsam2.errors import UsageError


@dataclass(frozen=True)
class BackboneFamily:
    """One family of weights behind the :class:`~medsam2.backbones.base.Backbone` protocol.

    Attributes:
        name: what ``--backbone`` takes.
        help: one line for ``--help``.
        builder: ``module:function`` that builds it (keyword arguments: device, checkpoint, runtime,
            precision, model_config, offload).
        needs_checkpoint: True when no weights are bundled (``--checkpoint`` is required).
        has_architectures: True when ``--model-config`` names one of several architectures.
        keeps_frame_state: True when past frames' memory lives on the device (``--offload`` applies).
        recipe: ``module:Class`` of its training recipe (:class:`~medsam2.train.recipe.Recipe`),
            which also builds the backbone to train.
        multiscale_features: True when the decoder also reads the encoder's high-resolution maps
            (cached with each frame for training).
    """

    name: str
    help: str
    builder: str
    needs_checkpoint: bool
    has_architectures: bool
    keeps_frame_state: bool
    recipe: str
    multiscale_features: bool

    def build(self, **options):
        """The backbone, built by :attr:`builder` with these keyword arguments."""
        return _resolve(self.builder)(**options)

    def recipe_class(self) -> type:
        """The training recipe's class (imports torch and the training code)."""
        return _resolve(self.recipe)


def _resolve(target: str):
    """The object named by ``module:attribute`` text."""
    module, name = target.split(":")
    return getattr(import_module(module), name)


FAMILIES: dict[str, BackboneFamily] = {
    family.name: family
    for family in (
        BackboneFamily(
            name="litemedsam",
            help="litemedsam (default, embedded weights)",
            builder="medsam2.backbones.litemedsam:build_litemedsam",
            needs_checkpoint=False,
            has_architectures=False,
            keeps_frame_state=False,
            recipe="medsam2.train.litemedsam_recipe:LiteMedSAMRecipe",
            multiscale_features=False,
        ),
        BackboneFamily(
            name="sam2",
            help="sam2 (SAM 2 / SAM 2.1 / MedSAM-2 weights; needs --checkpoint)",
            builder="medsam2.backbones.sam2:build_sam2",
            needs_checkpoint=True,
            has_architectures=True,
            keeps_frame_state=True,
            recipe="medsam2.train.sam2_recipe:Sam2Recipe",
            multiscale_features=True,
        ),
    )
}

#: the names ``--backbone`` takes, the default first
BACKBONES: tuple[str, ...] = tuple(FAMILIES)
DEFAULT_BACKBONE: str = BACKBONES[0]

#: how the image encoder runs (see :mod:`medsam2.backbones.runtime`)
RUNTIMES = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def backbone_family(name: str) -> BackboneFamily:
    """The family called ``name``; a one-line :class:`UsageError` naming the others when unknown."""
    family = FAMILIES.get(name)
    if family is None:
        raise UsageError(f"unknown backbone '{name}'; available: {', '.join(BACKBONES)}")
    return family
