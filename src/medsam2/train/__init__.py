"""Fine-tuning (``medsam2 train``): LiteMedSAM's prompt encoder and mask decoder on cached embeddings."""

from medsam2.train.loop import EpochRecord, Trainer, World
from medsam2.train.settings import TrainSettings

__all__ = ["EpochRecord", "TrainSettings", "Trainer", "World"]
