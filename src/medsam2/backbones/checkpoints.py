"""Reading weights files: one place for the checks every backbone needs."""

from __future__ import annotations

import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch

from medsam2.errors import CheckpointError

#: pickle opcodes that name or build a Python object (a class, a function, an instance)
_OBJECT_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1", "EXT2", "EXT4"})


def load_weights_only(path: Path, what: str = "checkpoint") -> object:
    """What ``torch.load(path, weights_only=True)`` reads (on the CPU): tensors, numbers, strings
    and containers of them. The one place medsam2 reads a PyTorch file; nothing in it is executed.

    Arguments:
        path: the file.
        what: what it is, for the error ("checkpoint", "feature cache file").

    Raises:
        CheckpointError: one line, naming the file: a pickle of other Python objects ("not a
            medsam2 checkpoint (it holds Python objects that are never unpickled)"), or a file
            that cannot be read (not a PyTorch file, truncated, unreadable).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # a pickle of protocol > 2 gets a warning before the refusal: one line is enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's weights-only refusal, or bytes that are not a pickle
        if _names_python_objects(path):
            raise CheckpointError(f"{path}: not a medsam2 checkpoint (it holds Python objects that are never unpickled)") from exc
        raise CheckpointError(f"cannot read {what} {path}: not a PyTorch weights file or truncated ({exc.__class__.__name__})") from exc
    except Exception as exc:  # torch raises several types for a broken file
        raise CheckpointError(f"cannot read {what} {path}: not a PyTorch weights file or truncated ({exc.__class__.__name__})") from exc


def _names_python_objects(path: Path) -> bool:
    """Whether a file that the weights-only loader refused is well-formed pickle data naming Python
    objects (rather than garbage): read opcode by opcode with :mod:`pickletools`, never unpickled."""
    try:
        if zipfile.is_zipfile(path):  # torch.save's format: the pickle is <name>/data.pkl
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not names:
                    return False
                with archive.open(names[0]) as handle:
                    return _pickle_names_objects(handle)
        with path.open("rb") as handle:
            # pickle.dump's format: one pickle; torch.save's legacy format: a few in a row (magic
            # number, protocol, system info, the object), then raw tensor bytes
            for _ in range(4):
                if _pickle_names_objects(handle):
                    return True
    except (OSError, ValueError, EOFError, UnicodeDecodeError, zipfile.BadZipFile):
        return False  # not a whole pickle: garbage or truncated
    return False


def _pickle_names_objects(handle: BinaryIO) -> bool:
    """Whether the next pickle in ``handle`` holds an opcode that names or builds a Python object
    (raises ValueError where the bytes are not a whole pickle)."""
    return any(opcode.name in _OBJECT_OPCODES for opcode, _, _ in pickletools.genops(handle))


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
    state = load_weights_only(path, "checkpoint")
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
