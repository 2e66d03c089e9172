"""Learning inside the case: LiteMedSAM's mask heads fine-tuned on the slices an annotator gave for
one object of one scan, then used to propagate that object again.

The image features are the session's (cached: nothing is encoded again); a copy of the mask
decoder is trained, the backbone's own weights never change. Training examples are the object's
prompted and corrected slices with their answers; each step prompts them with the box a
propagation would send (the mask's bounding box grown by the engine's margin, jittered).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from medsam2.backbones.base import FrameFeatures, Prediction
from medsam2.engine.feature_cache import _BackboneWrapper
from medsam2.engine.tracks import box_of_mask
from medsam2.errors import UsageError

#: what is trained: the mask upscaling and the per-mask hypernetwork MLPs of the mask decoder (as
#: ``medsam2 train --tune masks``); the transformer, the tokens, the IoU head and the prompt encoder keep their weights
MASK_HEAD_PREFIXES = ("output_upscaling.", "output_hypernetworks_mlps.")


@dataclass(frozen=True)
class AdaptSettings:
    """How the mask heads are fine-tuned on one scan.

    Attributes:
        steps: optimiser steps (each over every example).
        learning_rate: Adam's learning rate.
        box_margin: the margin of the training boxes around each mask, model pixels (the engine's
            propagation margin).
        jitter: each box edge moves by up to this many model pixels per step.
        seed: the jitter's random seed (the same examples train the same weights).
    """

    steps: int = 30
    learning_rate: float = 1e-4
    box_margin: float = 4.0
    jitter: float = 3.0
    seed: int = 0


@dataclass(frozen=True)
class AdaptExample:
    """One slice to learn from: its features and the object's (S, S) bool mask there, model space."""

    features: FrameFeatures
    mask: torch.Tensor


def adapt_mask_decoder(backbone, examples: list[AdaptExample], settings: AdaptSettings | None = None) -> torch.nn.Module:
    """A copy of ``backbone``'s mask decoder with its mask heads fine-tuned on ``examples``.

    Arguments:
        backbone: a LiteMedSAM backbone (``net``: prompt encoder and mask decoder), or a wrapper of one.
        examples: at least one slice with a non-empty mask.

    Raises:
        UsageError: the backbone is not LiteMedSAM's, or no example has a mask.
    """
    from medsam2.engine.losses import mask_losses

    settings = settings or AdaptSettings()
    net = litemedsam_net(backbone)
    examples = [e for e in examples if bool(e.mask.any())]
    if not examples:
        raise UsageError("nothing to learn from: the object's prompted slices are empty")
    device = next(net.mask_decoder.parameters()).device
    decoder = copy.deepcopy(net.mask_decoder).to(device).train()
    trained = [p for name, p in decoder.named_parameters() if name.startswith(MASK_HEAD_PREFIXES)]
    for parameter in decoder.parameters():
        parameter.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    optimiser = torch.optim.Adam(trained, lr=settings.learning_rate)
    limit = float(backbone.input_size)
    masks_np = [e.mask.cpu().numpy() for e in examples]
    embeddings = torch.stack([e.features.embedding.float() for e in examples]).to(device)
    targets = torch.stack([e.mask.bool() for e in examples])[:, None].to(device)
    rng = np.random.default_rng(settings.seed)
    with torch.no_grad():
        dense_pe = net.prompt_encoder.get_dense_pe()
    for _ in range(settings.steps):
        boxes = np.stack([box_of_mask(m, settings.box_margin, limit) for m in masks_np])
        boxes = np.clip(boxes + rng.uniform(-settings.jitter, settings.jitter, boxes.shape), 0, limit).astype(np.float32)
        with torch.no_grad():
            sparse, dense = net.prompt_encoder(points=None, boxes=torch.from_numpy(boxes)[:, None].to(device), masks=None)
        logits, iou = decoder(image_embeddings=embeddings, image_pe=dense_pe, sparse_prompt_embeddings=sparse,
                              dense_prompt_embeddings=dense, multimask_output=False)
        loss, _ = mask_losses(logits, targets, iou)
        optimiser.zero_grad()
        loss.mean().backward()
        optimiser.step()
    return decoder.eval()


def litemedsam_net(backbone):
    """The LiteMedSAM network under ``backbone`` (through cache wrappers).

    Raises:
        UsageError: the backbone is not LiteMedSAM's.
    """
    inner = backbone
    while not hasattr(inner, "net") and hasattr(inner, "inner"):
        inner = inner.inner
    net = getattr(inner, "net", None)
    if net is None or not hasattr(net, "mask_decoder") or getattr(inner, "name", "") != "litemedsam":
        raise UsageError("learning from corrections needs the litemedsam backbone (SAM 2 takes its corrections as prompts)")
    return net


class AdaptedBackbone(_BackboneWrapper):
    """``backbone`` (its features, its cache) with decodes by an adapted mask decoder (PyTorch, fp32).

    Arguments:
        backbone: the session's backbone (a cache wrapper of LiteMedSAM's).
        decoder: the mask decoder from :func:`adapt_mask_decoder`.
    """

    def __init__(self, backbone, decoder: torch.nn.Module) -> None:
        super().__init__(backbone)
        self.decoder = decoder
        self._net = litemedsam_net(backbone)

    def encode(self, frames: list[np.ndarray]) -> list[FrameFeatures]:
        return self.inner.encode(frames)

    @torch.no_grad()
    def decode(self, features: FrameFeatures, box=None, points=None, point_labels=None) -> Prediction:
        """As the backbone's decode, with the adapted mask decoder; ``box`` in model pixels (edges)."""
        device = next(self.decoder.parameters()).device
        boxes_t = None if box is None else torch.as_tensor(np.asarray(box, dtype=np.float32), device=device).reshape(1, 1, 4)
        points_t = None
        if points is not None and len(points):
            coords = torch.as_tensor(np.asarray(points, dtype=np.float32), device=device)[None]
            labels = torch.as_tensor(np.asarray(point_labels, dtype=np.int64), device=device)[None]
            points_t = (coords, labels)
        sparse, dense = self._net.prompt_encoder(points=points_t, boxes=boxes_t, masks=None)
        logits, iou = self.decoder(image_embeddings=features.embedding[None].float().to(device),
                                   image_pe=self._net.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                                   dense_prompt_embeddings=dense, multimask_output=False)
        return Prediction(logits=logits[0, 0].float().cpu(), iou=float(iou.reshape(-1)[0].clamp(0, 1)))


@dataclass(frozen=True)
class AdaptSummary:
    """What :meth:`medsam2.engine.session.Session.adapt` did.

    Attributes:
        label: the object.
        slices_learned: the prompted or corrected slices it learned from.
        decoded_slices: slices decoded again with the adapted decoder (the prompted ones keep their answers).
        seconds: wall time (training and propagation).
    """

    label: int
    slices_learned: list[int]
    decoded_slices: int
    seconds: float


#: how many prompted or corrected slices with a mask an object needs before it can learn from them
MIN_ADAPT_SLICES = 2


def repropagate_adapted(cache, engine, frames, prompts, track, settings: AdaptSettings | None = None):
    """One object's track after learning from its prompted slices: (new frames, slices learned, slices decoded).

    The answers on the prompted slices are the examples (model space) and stay as they are; the
    object is propagated again from them (as mask prompts) with the adapted decoder; where the new
    propagation has no answer, the old one stays (learning adds evidence, it drops none).

    Arguments:
        cache: the session's backbone (its feature cache); engine: the session's engine (memory
            rule, settings); frames: the session's frames; prompts: the object's prompts;
            track: its :class:`~medsam2.engine.tracks.ObjectTrack`.

    Raises:
        PromptError: fewer than :data:`MIN_ADAPT_SLICES` prompted slices with a mask.
        UsageError: not the LiteMedSAM backbone.
    """
    from medsam2.engine.sweep import Tracker
    from medsam2.engine.tracks import FeatureStore, PropagationStats
    from medsam2.errors import PromptError
    from medsam2.prompts.parse import MaskPrompt, ObjectPrompts

    litemedsam_net(cache)
    store = FeatureStore(frames, cache, set(), PropagationStats())
    geometry = cache.frame_geometry(*frames[0].shape[:2])
    examples, masks, learned = [], [], []
    for frame in sorted(prompts.prompted_frames()):
        answer = track.frames.get(frame)
        if answer is None or not bool((answer.probability > 127).any()):
            continue
        examples.append(AdaptExample(store.get(frame), answer.probability > 127))
        probability = answer.probability.float() / 255.0
        masks.append(MaskPrompt(frame, geometry.model_to_frame(torch.logit(probability.clamp(1e-4, 1 - 1e-4))).numpy() > 0))
        learned.append(frame)
    if len(examples) < MIN_ADAPT_SLICES:
        raise PromptError(f"label {prompts.label} has {len(examples)} prompted or corrected slice(s) with a mask; learning from "
                          f"corrections needs at least {MIN_ADAPT_SLICES}: correct another slice first")
    adapted = AdaptedBackbone(cache, adapt_mask_decoder(cache, examples, settings))
    tracker = Tracker(engine.kind.make_step(adapted, engine.memory, engine.settings), frames, False)
    decoded = sum(1 for _ in tracker.iter_run([ObjectPrompts(prompts.label, prompts.name, masks=masks)]))
    new = dict(tracker.tracks[0].frames)
    for frame, old in track.frames.items():
        if frame not in new or frame in learned:
            new[frame] = old
    return new, learned, decoded - len(learned)
