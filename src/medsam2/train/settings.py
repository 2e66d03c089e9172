"""What a training run is: its settings, checked before any work, and compared on ``--resume``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from medsam2.backbones.registry import BACKBONES, DEFAULT_BACKBONE, backbone_family
from medsam2.errors import UsageError

PROMPT_KINDS = ("box", "click", "mixed")
#: what of LiteMedSAM trains: the mask heads only, or the prompt encoder and the whole mask decoder
TUNE_PARTS = ("masks", "decoder")
#: settings a resumed run may change (it trains further, or reports differently)
RESUMABLE_CHANGES = ("epochs", "patience")


@dataclass(frozen=True)
class TrainSettings:
    """A fine-tuning run.

    Attributes:
        backbone: "litemedsam", or "sam2" (the SAM 2 family, trained on short slice sequences).
        checkpoint: the weights to start from (None: the bundled LiteMedSAM weights; sam2 needs one).
        epochs: passes over the training slices at most.
        val_fraction: the share of cases held out for validation (by case, never by slice).
        val_cases: the validation cases by name instead (then ``val_fraction`` is not used).
        prompt: box (the reference box with jitter, and on 3D data the propagation's own box:
            the neighbouring slice's mask box with the engine's margin), click (one positive click
            inside), or mixed (both).
        jitter: box edges move by up to this many frame pixels at random.
        batch_size: slices per optimiser step (the global batch, over every process).
        lr: AdamW learning rate.
        train_encoder: train the image encoder too (no feature cache; a GPU is advised).
        tune: litemedsam only (None: "masks"): "decoder" trains the prompt encoder and the whole
            mask decoder (its IoU head on the true IoU); "masks" only the mask upscaling and the
            per-mask heads, so that the predicted IoU, which the stop rule and the memory bank
            read, stays exactly the starting weights' (on structures the run never saw too).
        seed: seed of the case split, the slice order and the prompt jitter.
        patience: stop after this many epochs without a better validation Dice.
        labels: the structures to train on (None: every label found).
        axis, window: how slices are taken and windowed (as ``segment`` does).
        model_config: sam2 only: the architecture (None: read from the checkpoint, as segment does).
        image_size: sam2 only: train at this input side instead of the config's (a multiple of 32).
        sequence_length: sam2 only: frames per training sequence (prompt on the first, memory
            attention carries it through the others), as SAM 2 trains on 8-frame clips.
    """

    backbone: str = DEFAULT_BACKBONE
    checkpoint: str | None = None
    epochs: int = 10
    val_fraction: float = 0.2
    val_cases: tuple[str, ...] | None = None
    prompt: str = "box"
    jitter: int = 5
    batch_size: int = 8
    lr: float = 1e-4
    train_encoder: bool = False
    tune: str | None = None
    seed: int = 0
    patience: int = 3
    labels: tuple[int, ...] | None = None
    axis: str = "axial"
    window: str = "auto"
    model_config: str | None = None
    image_size: int | None = None
    sequence_length: int = 8

    def check(self) -> None:
        """Raises UsageError for a value no run can use."""
        if self.backbone not in BACKBONES:
            raise UsageError(f"--backbone is one of {', '.join(BACKBONES)}, not {self.backbone!r}")
        family = backbone_family(self.backbone)
        if not family.has_architectures:
            for name, value in (("--model-config", self.model_config), ("--image-size", self.image_size)):
                if value is not None:
                    raise UsageError(f"{name} is for --backbone sam2; litemedsam has one architecture at 256 x 256")
        if self.tune is not None and self.tune not in TUNE_PARTS:
            raise UsageError(f"--tune is one of {', '.join(TUNE_PARTS)}, not {self.tune!r}")
        if family.has_architectures and self.tune is not None:
            raise UsageError("--tune is for --backbone litemedsam; sam2 trains its memory and mask decoder")
        if family.needs_checkpoint and self.checkpoint is None:
            raise UsageError("the sam2 backbone ships no weights; pass --checkpoint PATH (a SAM 2, SAM 2.1 or MedSAM-2 .pt file)")
        if self.image_size is not None and (self.image_size < 128 or self.image_size % 32):
            raise UsageError(f"--image-size is a multiple of 32 from 128 up, not {self.image_size}")
        if self.sequence_length < 1:
            raise UsageError(f"--sequence-length must be at least 1, not {self.sequence_length}")
        if self.prompt not in PROMPT_KINDS:
            raise UsageError(f"--prompt is one of {', '.join(PROMPT_KINDS)}, not {self.prompt!r}")
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, not {self.epochs}")
        if not 0.0 < self.val_fraction < 1.0 and not self.val_cases:
            raise UsageError(f"--val-fraction is between 0 and 1 (exclusive), not {self.val_fraction}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, not {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, not {self.lr}")
        if self.jitter < 0:
            raise UsageError(f"--jitter is 0 or more pixels, not {self.jitter}")
        if self.patience < 1:
            raise UsageError(f"--patience must be at least 1, not {self.patience}")

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("val_cases", "labels"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "tune" not in data and values.get("backbone", "litemedsam") == "litemedsam":
            values["tune"] = "decoder"  # runs from before --tune trained the whole decoder
        for key in ("val_cases", "labels"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def differences(self, other: TrainSettings) -> list[str]:
        """The settings that differ from ``other`` and that a resumed run may not change."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [key for key in mine if key not in RESUMABLE_CHANGES and mine[key] != theirs[key]]
