"""Fine-tuning the SAM 2 family as MedSAM-2 trains it: short slice sequences, a prompt on the first
slice, memory attention carrying the structure through the others.

A training target is a structure on one cached slice; at each draw it becomes a sequence of up to
``sequence_length`` consecutive slices from there, upwards or downwards at random (a 2D case gives
a sequence of one). The first slice is decoded from its prompt without memory (SAM 2's
conditioning frame); every later slice reads the memory of the prompted slice and of the ones just
before it (SAM 2's own rule, :class:`~medsam2.engine.sam2_memory.FifoSelection`), and is decoded
without a prompt. Each slice adds Dice + BCE + IoU error where the structure is on it, and the
object score's BCE on every slice (a slice past the structure's end teaches "absent"). Gradients run
through the mask decoder, the prompt encoder, memory attention and the memory encoder (and the
image encoder with ``train_encoder``); the sequence's loss is the mean over its slices.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsam2.backbones.sam2 import FlatFeatures, Sam2Backbone, point_inputs
from medsam2.engine.losses import mask_losses, presence_loss
from medsam2.engine.sam2_memory import FifoSelection, Sam2Memory, conditioned_features
from medsam2.engine.sam2_step import FramePrompt
from medsam2.errors import InputError
from medsam2.evaluation.protocols import deepest_point
from medsam2.train.prompts import deep_click, reference_box, target_rng
from medsam2.train.recipe import Recipe
from medsam2.train.samples import CaseFeatures, Target
from medsam2.train.settings import TrainSettings


@dataclass(frozen=True)
class SequenceInput:
    """One training sequence: rows of a case's cached slices in tracking order, and the first one's prompt."""

    case: CaseFeatures
    label: int
    rows: tuple[int, ...]
    prompt: FramePrompt


def sequence_rows(case: CaseFeatures, start: int, direction: int, length: int) -> tuple[int, ...]:
    """Rows from ``start`` stepping ``direction`` (+1 or -1) while the slices are adjacent, ``length`` at most."""
    rows = [start]
    while len(rows) < length:
        following = rows[-1] + direction
        if not 0 <= following < len(case.frames) or case.frames[following] != case.frames[rows[-1]] + direction:
            break
        rows.append(following)
    return tuple(rows)


def every_nth_target(targets: list[Target], step: int) -> list[Target]:
    """Each structure's every ``step``-th slice of a case (validation sequences that do not overlap)."""
    groups: dict[tuple[str, int], list[Target]] = defaultdict(list)
    for target in targets:
        groups[(target.case, target.label)].append(target)
    chosen = []
    for group in groups.values():
        chosen.extend(sorted(group, key=lambda t: t.index)[::step])
    return chosen


class Sam2Sequences(torch.nn.Module):
    """The SAM 2 model trained on sequences: ``forward(sequences)`` -> (loss (n,), Dice (n,)).

    The Dice of a sequence is the mean over its slices that hold the structure, of the mask SAM 2
    would output (the candidate with the highest predicted IoU)."""

    def __init__(self, backbone: Sam2Backbone, train_encoder: bool) -> None:
        super().__init__()
        self.model = backbone.model
        self.train_encoder = train_encoder
        self._backbone = (backbone,)  # a plain reference (the backbone is not a module)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_encoder:
            self.model.image_encoder.eval()  # frozen: no drop-path
        return self

    def _flat(self, case: CaseFeatures, row: int, device: torch.device) -> FlatFeatures:
        model = self.model
        if self.train_encoder:
            out = model.forward_image(case.embeddings[row][None].float().to(device))
            levels, positions = list(out["backbone_fpn"]), list(out["vision_pos_enc"])
        else:
            levels = [level[row][None].float().to(device) for level in case.high_res] + [case.embeddings[row][None].float().to(device)]
            positions = [p.to(device) for p in case.positions]
        _, vision, encodings, sizes = model._prepare_backbone_features({"backbone_fpn": levels, "vision_pos_enc": positions})
        return FlatFeatures(vision, encodings, sizes)

    def forward(self, sequences: list[SequenceInput]) -> tuple[torch.Tensor, torch.Tensor]:
        results = [self._track(sequence) for sequence in sequences]
        return torch.stack([r[0] for r in results]), torch.stack([r[1] for r in results])

    def _track(self, sequence: SequenceInput) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        device = model.no_mem_embed.device
        selection = FifoSelection(model)
        count = len(sequence.rows)
        position = None
        losses, dices = [], []
        for step, row in enumerate(sequence.rows):
            flat = self._flat(sequence.case, row, device)
            if step == 0:
                prompt = sequence.prompt
                points = point_inputs(prompt.box, prompt.points, prompt.labels, device)
                features = self._backbone[0].no_memory_features(flat)
            else:
                points = None
                features = conditioned_features(model, flat, selection.select(step, False, count), count, position)
            _, candidates, ious, _, best, pointer, object_score = model._forward_sam_heads(
                backbone_features=features, point_inputs=points, high_res_features=flat.high_res(),
                multimask_output=model._use_multimask(step == 0, points),
            )
            target = sequence.case.masks[sequence.label][row].to(device)
            present = bool(target.any())
            loss = presence_loss(object_score, present) if model.pred_obj_scores else candidates.new_zeros(())
            if present:
                mask_loss, dice = mask_losses(candidates, target[None, None], ious)
                loss = loss + mask_loss[0]
                dices.append(dice[0])
            losses.append(loss)
            if step + 1 < count:
                memory, encodings = model._encode_new_memory(
                    current_vision_feats=flat.vision, feat_sizes=flat.sizes, pred_masks_high_res=best,
                    object_score_logits=object_score, is_mask_from_pts=step == 0,
                )
                if position is None:
                    position = encodings[-1][0:1]
                selection.add(Sam2Memory(step, memory, pointer, prompted=step == 0))
        return torch.stack(losses).mean(), torch.stack(dices).mean()


class Sam2Recipe(Recipe):
    """What the trainer needs of the sam2 backbone: the trained module, its losses, its weights.

    Arguments:
        backbone: a Sam2Backbone (its ``model`` is trained in place).
        settings: the run's settings.
        device: where it trains.
    """

    @classmethod
    def build_backbone(cls, settings: TrainSettings, device: torch.device) -> Sam2Backbone:
        checkpoint = settings.checkpoint
        if checkpoint is None or not Path(checkpoint).is_file():
            raise InputError(f"no checkpoint file at {checkpoint}; pass --checkpoint PATH to a SAM 2, SAM 2.1 or MedSAM-2 .pt file")
        # fp32: gradients in bf16 autocast on a CPU lose the small updates
        return Sam2Backbone(checkpoint, device, model_config=settings.model_config, runtime="torch", precision="fp32",
                            image_size=settings.image_size)

    def __init__(self, backbone: Sam2Backbone, settings: TrainSettings, device: torch.device) -> None:
        super().__init__()
        self.backbone, self.settings, self.device = backbone, settings, device
        model = self.network = backbone.model  # its weights are Meta's layout, as --checkpoint reads them
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        for parameter in model.image_encoder.parameters():
            parameter.requires_grad_(settings.train_encoder)
        self.module = Sam2Sequences(backbone, settings.train_encoder).to(device)

    def metadata(self) -> dict:
        return {"model_config": self.backbone.config.name, "image_size": self.backbone.input_size}

    def validation_targets(self, targets: list[Target]) -> list[Target]:
        """Sequences that start every ``sequence_length`` slices of each structure, tracked upwards."""
        return every_nth_target(targets, self.settings.sequence_length)

    def _prompt(self, mask: np.ndarray, kind: str, rng: np.random.Generator | None, scale: float) -> FramePrompt:
        size = float(self.backbone.input_size)
        if kind == "click":
            point = deep_click(mask, rng) if rng is not None else np.array(deepest_point(mask)[::-1], dtype=np.float32)
            return FramePrompt(points=point[None], labels=np.array([1]))
        jitter = self.settings.jitter * scale if rng is not None else 0.0
        return FramePrompt(box=reference_box(mask, jitter, rng, size))

    def losses(self, model, targets: list[Target], indices: list[int], kind: str, epoch: int,
               training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per target (len(indices),): the loss and the Dice of the sequence that starts at ``targets[i]``."""
        settings = self.settings
        sequences = []
        for i in indices:
            target = targets[i]
            case = self.cases[target.case]
            rng = target_rng(settings.seed, epoch, i) if training else None
            direction = (1 if rng.random() < 0.5 else -1) if rng is not None else 1
            rows = sequence_rows(case, target.index, direction, settings.sequence_length)
            mask = case.masks[target.label][target.index].numpy()
            sequences.append(SequenceInput(case, target.label, rows, self._prompt(mask, kind, rng, case.scale)))
        return model(sequences)
