"""Reading weights files: one place for the checks every backbone needs."""

from __future__ import annotations

from pathlib import Path

import torch

from medsam2.errors import CheckpointError


def read_state_dict(path: Path, expected: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (see :func:`read_weights`)."""
    return read_weights(path, expected)[0]


def read_weights(path: Path, expected: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict in a weights file: bare, or under "model" (Meta's SAM 2 layout) or
    "state_dict"; a "module." prefix (DataParallel) is dropped. Also the "medsam2" block that
    ``medsam2 train`` writes beside it ({} in other files).

    Arguments:
        path: the file.
        expected: what the file should be, for the errors ("a LiteMedSAM .pth file").

    Raises:
        CheckpointError: a missing, unreadable or truncated file, or one without a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}; pass --checkpoint PATH to {expected}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a broken file
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch weights file or truncated ({exc.__class__.__name__})") from exc
    metadata = state.get("medsam2") if isinstance(state, dict) and isinstance(state.get("medsam2"), dict) else {}
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict; expected {expected}")
    if any(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state, metadata
