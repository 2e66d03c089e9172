"""The SAM 2 family: which configs exist, which one a checkpoint file holds, and building it.

Network modules and configs come from Meta's ``sam2`` package (``pip install 'medsam2[sam2]'``);
this module only names the configs, reads checkpoint files and tells them apart:

- the hiera size (tiny, small, base_plus, large) from the image encoder's width and depth;
- SAM 2 against SAM 2.1 from the keys that only SAM 2.1 has (``no_obj_embed_spatial``,
  ``obj_ptr_tpos_proj``);
- the input size cannot be read from the weights (the same weights run at 512 and 1024): it is
  1024 (Meta's releases, Medical-SAM2's ``MedSAM2_pretrain.pth``) unless ``--model-config`` says
  otherwise, or the file is a MedSAM2 (Toronto) release: SAM 2.1 tiny weights in a file whose name
  starts with ``MedSAM2``, which runs at 512;
- a file written by ``medsam2 train`` names its config in its "medsam2" block (the config of the
  weights it started from).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from medsam2.backbones.checkpoints import read_weights
from medsam2.errors import CheckpointError, UsageError

SAM2_INSTALL_HINT = "pip install 'medsam2[sam2]' (on machines without CUDA: SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2)"


@dataclass(frozen=True)
class Sam2Config:
    """One SAM 2 architecture.

    Attributes:
        name: the ``--model-config`` name, e.g. "sam2.1_hiera_t".
        version: "2" or "2.1".
        hiera: "t", "s", "b+" or "l".
        image_size: model input side in pixels.
        yaml: the config inside the ``sam2`` package.
        releases: checkpoint files known to hold this architecture.
    """

    name: str
    version: str
    hiera: str
    image_size: int
    yaml: str
    releases: tuple[str, ...] = ()

    def hydra_overrides(self, image_size: int | None = None) -> list[str]:
        """Overrides of the packaged yaml for another input size (RoPE tables follow the size)."""
        size = image_size or self.image_size
        if size == 1024:
            return []
        grid = size // 16
        return [
            f"++model.image_size={size}",
            f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
            f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
        ]


_HIERA_NAMES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
#: (patch embedding width, number of trunk blocks) of each hiera size
_HIERA_SHAPES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}


def _catalogue() -> dict[str, Sam2Config]:
    configs: dict[str, Sam2Config] = {}
    for hiera, long_name in _HIERA_NAMES.items():
        configs[f"sam2_hiera_{hiera}"] = Sam2Config(
            f"sam2_hiera_{hiera}", "2", hiera, 1024, f"configs/sam2/sam2_hiera_{hiera}.yaml",
            (f"sam2_hiera_{long_name}.pt",) + (("MedSAM2_pretrain.pth (Medical-SAM2, Oxford)",) if hiera == "s" else ()),
        )
        configs[f"sam2.1_hiera_{hiera}"] = Sam2Config(
            f"sam2.1_hiera_{hiera}", "2.1", hiera, 1024, f"configs/sam2.1/sam2.1_hiera_{hiera}.yaml", (f"sam2.1_hiera_{long_name}.pt",)
        )
    configs["sam2.1_hiera_t512"] = Sam2Config(
        "sam2.1_hiera_t512", "2.1", "t", 512, "configs/sam2.1/sam2.1_hiera_t.yaml",
        ("MedSAM2_latest.pt, MedSAM2_2411.pt, MedSAM2_CTLesion.pt, ... (MedSAM2, Toronto)",),
    )
    return configs


SAM2_CONFIGS: dict[str, Sam2Config] = _catalogue()


def sam2_available() -> bool:
    try:
        import sam2  # noqa: F401
    except ImportError:
        return False
    return True


def require_sam2() -> None:
    """Raises a one-line UsageError that says how to install Meta's sam2 when it is missing."""
    if not sam2_available():
        raise UsageError(f"the sam2 backbone needs Meta's sam2 package: {SAM2_INSTALL_HINT}")


def config_by_name(name: str) -> Sam2Config:
    """The config called ``name``; a one-line error listing the names otherwise."""
    if name not in SAM2_CONFIGS:
        raise UsageError(f"unknown --model-config '{name}'; choose one of {', '.join(SAM2_CONFIGS)} (see `medsam2 models`)")
    return SAM2_CONFIGS[name]


def read_sam2_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights in a SAM 2 checkpoint file (``{"model": state_dict}`` as Meta ships them, or
    bare), and the "medsam2" block of a file that ``medsam2 train`` wrote ({} otherwise)."""
    return read_weights(path, "a SAM 2 / SAM 2.1 / MedSAM-2 .pt file")


def identify_checkpoint(state: dict[str, torch.Tensor], path: Path) -> Sam2Config:
    """The config whose architecture these weights fit (see the module docstring for the rules).

    Raises:
        CheckpointError: the weights are not a SAM 2 family image encoder of a known size.
    """
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        sample = ", ".join(list(state)[:3])
        raise CheckpointError(
            f"checkpoint {Path(path).name} is not a SAM 2 model: expected SAM 2 / SAM 2.1 hiera weights "
            f"(image_encoder.trunk.*, memory_attention.*); found {len(state)} other keys ({sample}, ...)"
        )
    blocks = {k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")}
    hiera = _HIERA_SHAPES.get((int(patch.shape[0]), len(blocks)))
    if hiera is None:
        raise CheckpointError(
            f"checkpoint {Path(path).name} has a hiera encoder of width {patch.shape[0]} and {len(blocks)} blocks, "
            "which is none of tiny (96, 12), small (96, 16), base_plus (112, 24), large (144, 48); pass --model-config"
        )
    version = "2.1" if "no_obj_embed_spatial" in state else "2"
    if version == "2.1" and hiera == "t" and Path(path).name.lower().startswith("medsam2"):
        return SAM2_CONFIGS["sam2.1_hiera_t512"]
    prefix = "sam2.1" if version == "2.1" else "sam2"
    return SAM2_CONFIGS[f"{prefix}_hiera_{hiera}"]


def build_sam2_model(
    config: Sam2Config,
    state: dict[str, torch.Tensor] | None,
    device: torch.device,
    image_size: int | None = None,
    source: str = "checkpoint",
):
    """Build the video model of ``config`` with Meta's ``sam2`` and load ``state`` strictly.

    Arguments:
        config: the architecture.
        state: weights (None keeps the random initialisation, for tests and benchmarks).
        device: where the model runs.
        image_size: another input size than the config's (tests run small).
        source: the file's name, for errors.

    Returns:
        a ``sam2.sam2_video_predictor.SAM2VideoPredictor`` in eval mode; medsam2 uses its modules,
        not its session methods.

    Raises:
        UsageError: sam2 is not installed.
        CheckpointError: weights that do not fit (counts of missing, unexpected and mis-shaped
            keys; nothing is loaded partially).
    """
    require_sam2()
    from sam2.build_sam import build_sam2_video_predictor

    model = build_sam2_video_predictor(
        config.yaml, ckpt_path=None, device="cpu", hydra_overrides_extra=config.hydra_overrides(image_size)
    )
    if state is not None:
        expected = model.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        misshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or misshaped:
            example = (missing or unexpected or misshaped)[0]
            raise CheckpointError(
                f"checkpoint {source} does not fit {config.name}: {len(expected)} keys expected, "
                f"{len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} of another shape "
                f"(e.g. {example}); pass the right --model-config (see `medsam2 models`)"
            )
        model.load_state_dict(state, strict=True)
    return model.to(device).eval()
