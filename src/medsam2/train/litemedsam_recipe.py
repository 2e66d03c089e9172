"""Fine-tuning LiteMedSAM: its prompt encoder and mask decoder (or only the mask heads) on cached
embeddings, one slice per target (the image encoder is frozen unless ``train_encoder``; then it
runs in each step)."""

from __future__ import annotations

from pathlib import Path

import torch

from medsam2.engine.losses import mask_losses
from medsam2.errors import InputError
from medsam2.train.prompts import make_prompts
from medsam2.train.recipe import Recipe
from medsam2.train.samples import Target
from medsam2.train.settings import TrainSettings

#: what ``tune="masks"`` trains: the mask upscaling and the per-mask hypernetwork MLPs (the
#: transformer, the tokens, the IoU head and the prompt encoder keep their weights)
MASK_HEADS = ("mask_decoder.output_upscaling.", "mask_decoder.output_hypernetworks_mlps.")


class PromptDecoder(torch.nn.Module):
    """LiteMedSAM's trainable part: (embeddings (B, 256, 64, 64), boxes (B, 1, 4) or clicks) ->
    (mask logits (B, 1, 256, 256), predicted IoU (B, 1)); with ``train_encoder`` it takes the
    encoder's inputs (B, 3, 256, 256) and the image encoder trains too."""

    def __init__(self, net: torch.nn.Module, train_encoder: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = net.prompt_encoder
        self.mask_decoder = net.mask_decoder
        self.image_encoder = net.image_encoder if train_encoder else None

    def forward(self, embeddings, boxes=None, points=None):
        if self.image_encoder is not None:
            embeddings = self.image_encoder(embeddings)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=None)
        return self.mask_decoder(
            image_embeddings=embeddings, image_pe=self.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=False,
        )


class LiteMedSAMRecipe(Recipe):
    """What the trainer needs of the litemedsam backbone: the trained module, its losses, its weights.

    Arguments:
        backbone: a LiteMedSAMBackbone (its ``net`` is trained in place).
        settings: the run's settings.
        device: where the decoder trains.
    """

    @classmethod
    def build_backbone(cls, settings: TrainSettings, device: torch.device):
        from medsam2.backbones.litemedsam import LiteMedSAMBackbone

        checkpoint = settings.checkpoint
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise InputError(f"no checkpoint file at {checkpoint}; pass --checkpoint PATH to a LiteMedSAM .pth file")
        runtime = "torch" if settings.train_encoder else "auto"
        return LiteMedSAMBackbone(device=device, checkpoint=checkpoint, runtime=runtime)

    def __init__(self, backbone, settings: TrainSettings, device: torch.device) -> None:
        super().__init__()
        self.backbone, self.settings, self.device = backbone, settings, device
        net = self.network = backbone.net
        for parameter in net.image_encoder.parameters():
            parameter.requires_grad_(settings.train_encoder)
        self.module = PromptDecoder(net, settings.train_encoder).to(device)
        if (settings.tune or "masks") == "masks":
            for name, parameter in self.module.named_parameters():
                if not name.startswith("image_encoder.") and not name.startswith(MASK_HEADS):
                    parameter.requires_grad_(False)

    def metadata(self) -> dict:
        return {}

    def validation_targets(self, targets: list[Target]) -> list[Target]:
        """Every validation slice."""
        return targets

    def losses(self, model, targets: list[Target], indices: list[int], kind: str, epoch: int,
               training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per target (len(indices),): the loss and the Dice of ``targets[i]`` with a ``kind`` prompt."""
        settings = self.settings
        prompts = make_prompts(self.cases, targets, indices, kind, settings.jitter if training else 0, settings.seed,
                               epoch if training else 0, float(self.backbone.input_size), training=training)
        embeddings = torch.stack([self.cases[targets[i].case].embeddings[targets[i].index] for i in indices]).float()
        masks = torch.stack([self.cases[targets[i].case].masks[targets[i].label][targets[i].index] for i in indices])[:, None]
        logits, iou = model(embeddings.to(self.device), boxes=_to(prompts.boxes, self.device),
                            points=_to(prompts.points, self.device))
        return mask_losses(logits, masks.to(self.device), iou)


def _to(value, device):
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(v.to(device) for v in value)
    return value.to(device)
