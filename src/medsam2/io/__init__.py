"""Reading and writing volumes and masks."""

from medsam2.io.volume import (
    SUPPORTED_SUFFIXES,
    Volume,
    check_output_path,
    load_volume,
    read_mask,
    save_mask,
)

__all__ = ["SUPPORTED_SUFFIXES", "Volume", "check_output_path", "load_volume", "read_mask", "save_mask"]
