"""The SAM 2 family backbone (SAM 2, SAM 2.1, MedSAM-2 checkpoints) through Meta's ``sam2`` package.

Frames are prepared exactly as SAM 2 prepares video frames: 8-bit RGB, stretched to the input size
with PIL's default resampling, x / 255, ImageNet mean and std. Windowed frames (values in [0, 1])
become 8-bit first, as MedSAM2 does with CT and MR slices. Single images are decoded as SAM 2 decodes
an initial conditioning frame (no memory); tracking through a volume with memory attention is
:mod:`medsam2.engine.sam2_step`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medsam2.backbones.base import FrameFeatures, Prediction
from medsam2.backbones.runtime import ExecutionPlan, plan_execution
from medsam2.backbones.sam2_models import (
    Sam2Config,
    build_sam2_model,
    config_by_name,
    identify_checkpoint,
    read_sam2_weights,
    require_sam2,
)
from medsam2.errors import UsageError
from medsam2.io.model_input import StretchGeometry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Sam2Features(FrameFeatures):
    """A frame's SAM 2 image features.

    Attributes:
        levels: the feature pyramid, highest resolution first, each (1, C, h, w) (at 1024 input:
            32x256x256, 64x128x128 and 256x64x64; the first two already projected for the decoder).
        positions: their positional encodings, same shapes.
    """

    levels: list[torch.Tensor] = field(default_factory=list)
    positions: list[torch.Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class FlatFeatures:
    """Features flattened the way SAM 2's heads take them: each level (h*w, 1, C)."""

    vision: list[torch.Tensor]
    positions: list[torch.Tensor]
    sizes: list[tuple[int, int]]

    def high_res(self) -> list[torch.Tensor] | None:
        """The levels above the lowest resolution as (1, C, h, w), for the mask decoder."""
        if len(self.vision) < 2:
            return None
        return [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(self.vision[:-1], self.sizes[:-1])]


def point_inputs(box: np.ndarray | None, points: np.ndarray | None, labels: np.ndarray | None, device: torch.device) -> dict | None:
    """SAM 2's point prompt: a box as two corner points labelled 2 and 3 first, then clicks
    (1 foreground, 0 background); all in model-input coordinates. None when there is no prompt."""
    coords, values = [], []
    if box is not None:
        coords += [[float(box[0]), float(box[1])], [float(box[2]), float(box[3])]]
        values += [2, 3]
    if points is not None and len(points):
        coords += [[float(x), float(y)] for x, y in np.asarray(points)]
        values += [int(v) for v in np.asarray(labels)]
    if not coords:
        return None
    return {
        "point_coords": torch.tensor([coords], dtype=torch.float32, device=device),
        "point_labels": torch.tensor([values], dtype=torch.int32, device=device),
    }


class Sam2Backbone:
    """SAM 2 / SAM 2.1 / MedSAM-2 weights behind the :class:`~medsam2.backbones.base.Backbone` protocol.

    Arguments:
        checkpoint: the weights file (required: nothing is downloaded).
        device: where the model runs.
        model_config: a ``--model-config`` name; None reads the architecture from the file.
        runtime: "auto" or "torch" (SAM 2 runs in PyTorch; "openvino" is refused).
        precision: "auto" (bf16 autocast on GPUs that have it, else fp16; fp32 on CPUs without
            native bf16), "fp32", "bf16" or "fp16".
        offload: keep the memory of past frames in CPU memory (long scans on a small GPU).
        image_size: run at another input size than the config's (tests and benchmarks).
    """

    name = "sam2"

    def __init__(
        self,
        checkpoint: str | Path | None,
        device: torch.device,
        model_config: str | None = None,
        runtime: str = "auto",
        precision: str = "auto",
        offload: bool = False,
        image_size: int | None = None,
    ) -> None:
        if checkpoint is None:
            raise UsageError("the sam2 backbone ships no weights; pass --checkpoint PATH (a SAM 2, SAM 2.1 or MedSAM-2 .pt file)")
        if runtime == "openvino":
            raise UsageError("--runtime openvino is for the litemedsam backbone; sam2 runs in PyTorch (use --runtime auto or torch)")
        require_sam2()  # before reading a checkpoint that may be gigabytes
        self.checkpoint = Path(checkpoint)
        state, trained = read_sam2_weights(self.checkpoint)
        if model_config is None and trained.get("backbone") == "sam2" and trained.get("model_config"):
            model_config = str(trained["model_config"])  # a medsam2 train checkpoint names its config
        chosen = config_by_name(model_config) if model_config else identify_checkpoint(state, self.checkpoint)
        self.config: Sam2Config = chosen
        self.device = device
        self.plan: ExecutionPlan = plan_execution("torch", precision, device)
        self.model = build_sam2_model(chosen, state, device, image_size=image_size, source=self.checkpoint.name)
        self.input_size = int(self.model.image_size)
        self.storage_device = torch.device("cpu") if offload else device

    # -- execution ---------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast in the plan's precision (bf16/fp16), or nothing for fp32."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.plan.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def frame_geometry(self, height: int, width: int) -> StretchGeometry:
        return StretchGeometry(height, width, self.input_size)

    def prepare(self, frame01: np.ndarray) -> torch.Tensor:
        """(H, W) or (H, W, 3) values in [0, 1] -> (3, S, S) float32 input, as SAM 2 loads a JPEG frame."""
        frame8 = np.round(np.clip(np.asarray(frame01, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
        image = Image.fromarray(frame8).convert("RGB").resize((self.input_size, self.input_size))
        pixels = torch.from_numpy(np.asarray(image) / 255.0).permute(2, 0, 1).to(torch.float32)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
        pixels -= mean
        pixels /= std
        return pixels

    # -- the Backbone protocol ------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, frames: list[np.ndarray]) -> list[FrameFeatures]:
        """One frame at a time (batching changes the floating-point sums, and parity with SAM 2 needs them equal)."""
        out: list[FrameFeatures] = []
        for frame in frames:
            pixels = self.prepare(frame).to(self.device)[None]
            with self.autocast():
                backbone_out = self.model.forward_image(pixels)
            levels = list(backbone_out["backbone_fpn"])
            positions = list(backbone_out["vision_pos_enc"])
            out.append(
                Sam2Features(
                    embedding=levels[-1][0],
                    geometry=self.frame_geometry(int(frame.shape[0]), int(frame.shape[1])),
                    levels=levels,
                    positions=positions,
                )
            )
        return out

    def flatten(self, features: FrameFeatures) -> FlatFeatures:
        """The levels the model uses, flattened (SAM 2's ``_prepare_backbone_features``)."""
        if not isinstance(features, Sam2Features):
            raise TypeError("features were not made by the sam2 backbone")
        _, vision, positions, sizes = self.model._prepare_backbone_features(
            {"backbone_fpn": list(features.levels), "vision_pos_enc": list(features.positions)}
        )
        return FlatFeatures(vision, positions, sizes)

    @torch.inference_mode()
    def decode(self, features: FrameFeatures, box=None, points=None, point_labels=None) -> Prediction:
        """One image, no memory (as SAM 2 decodes a first prompted frame); logits at the input size."""
        flat = self.flatten(features)
        prompt = point_inputs(box, points, point_labels, self.device)
        with self.autocast():
            pix = self.no_memory_features(flat)
            outputs = self.model._forward_sam_heads(
                backbone_features=pix,
                point_inputs=prompt,
                high_res_features=flat.high_res(),
                multimask_output=self.model._use_multimask(True, prompt),
            )
        _, _, ious, _, high_res_masks, _, object_score = outputs
        iou = min(max(float(ious.float().max()), 0.0), 1.0)
        presence = float(torch.sigmoid(object_score.float()).item())
        return Prediction(logits=high_res_masks[0, 0].float().cpu(), iou=iou, presence=presence)

    def no_memory_features(self, flat: FlatFeatures) -> torch.Tensor:
        """(1, C, h, w) features of a frame read without memory (SAM 2's first-frame rule)."""
        model = self.model
        lowest = flat.vision[-1]
        h, w = flat.sizes[-1]
        if model.directly_add_no_mem_embed:
            return (lowest + model.no_mem_embed).permute(1, 2, 0).view(1, model.hidden_dim, h, w)
        memory = model.no_mem_embed.expand(1, 1, model.mem_dim)
        memory_pos = model.no_mem_pos_enc.expand(1, 1, model.mem_dim)
        fused = model.memory_attention(
            curr=flat.vision[-1:], curr_pos=flat.positions[-1:], memory=memory, memory_pos=memory_pos, num_obj_ptr_tokens=0
        )
        return fused.permute(1, 2, 0).view(1, model.hidden_dim, h, w)


def build_sam2(device=None, checkpoint=None, runtime="auto", precision="auto", model_config=None, offload=False) -> Sam2Backbone:
    """The registry's builder of the ``sam2`` family (imports nothing from Meta's sam2 until it is built)."""
    return Sam2Backbone(checkpoint, device, model_config=model_config, runtime=runtime, precision=precision, offload=offload)
