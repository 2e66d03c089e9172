"""Training losses on mask logits: soft Dice + binary cross-entropy, the IoU head against the true
IoU (so that the confidence the memory bank and the stop rule read stays calibrated), and SAM 2's
object score against whether the structure is on the slice."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_losses(logits: torch.Tensor, masks: torch.Tensor, predicted_iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per slice (B,): the loss and the Dice of the mask the model would output.

    Arguments:
        logits: (B, M, S, S) mask logits (M candidate masks: 1, or SAM's 3 for an ambiguous prompt).
        masks: (B, 1, S, S) bool reference masks.
        predicted_iou: (B, M) the IoU head's estimates.

    Returns:
        loss: the candidate with the lowest Dice + BCE (SAM's rule for ambiguous prompts) plus the
            mean squared error of every candidate's predicted IoU against its true IoU;
        dice: Dice of the candidate with the highest predicted IoU, thresholded at logit 0.
    """
    target = masks.float().expand_as(logits)
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum((-1, -2))
    soft_dice = 1 - (2 * intersection + 1) / (probability.sum((-1, -2)) + target.sum((-1, -2)) + 1)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-1, -2))
    with torch.no_grad():
        predicted = logits > 0
        reference = masks.expand_as(predicted)
        overlap = (predicted & reference).sum((-1, -2)).float()
        union = (predicted | reference).sum((-1, -2)).float()
        true_iou = torch.where(union > 0, overlap / union.clamp(min=1), torch.ones_like(union))
        dice = 2 * overlap / (predicted.sum((-1, -2)) + reference.sum((-1, -2))).float().clamp(min=1)
        chosen = predicted_iou.detach().float().argmax(dim=1, keepdim=True)
    iou_error = ((predicted_iou.float() - true_iou) ** 2).mean(dim=1)
    loss = (soft_dice + bce).min(dim=1).values + iou_error
    return loss, dice.gather(1, chosen)[:, 0]


def presence_loss(object_score_logits: torch.Tensor, present: bool) -> torch.Tensor:
    """BCE of SAM 2's object score (logit) against whether the structure is on the slice."""
    target = torch.full_like(object_score_logits.float(), 1.0 if present else 0.0)
    return F.binary_cross_entropy_with_logits(object_score_logits.float(), target).reshape(())
