"""Which past frames SAM 2's memory attention reads, and the read itself.

A selection rule keeps each frame's memory (:class:`Sam2Memory`: the memory encoder's features,
their position code and the object pointer) and answers, for the frame being decoded, a
:class:`MemoryRead`: the prompted frames plus the ones the rule picks.

- :class:`FifoSelection`: SAM 2's own rule (every prompted frame plus the six just before).
- :class:`BankSelection`: the prompted frames plus the best entries of a
  :class:`~medsam2.engine.memory.ConfidenceMemoryBank` for the current frame.

:func:`conditioned_features` runs the memory attention over a read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medsam2.backbones.sam2 import FlatFeatures
from medsam2.engine.memory import ConfidenceMemoryBank, MemoryEntry, similarity_weights


@dataclass
class Sam2Memory:
    """What one frame leaves in memory for one object.

    Attributes:
        frame: frame index.
        features: (1, C_mem, h, w) encoded memory, bfloat16 (as SAM 2 stores it), on the storage device.
        pointer: (1, C) object pointer.
        prompted: a prompted frame (SAM 2's conditioning frame).
    """

    frame: int
    features: torch.Tensor
    pointer: torch.Tensor
    prompted: bool


@dataclass(frozen=True)
class MemoryRead:
    """The memory that one frame reads.

    Attributes:
        spatial: (t_pos, memory): t_pos 0 for prompted frames, num_maskmem - d for a frame d back
            (d capped at num_maskmem - 1), as SAM 2 numbers its temporal position codes.
        pointers: (temporal offset, memory) for the object pointers, in SAM 2's convention.
    """

    spatial: list[tuple[int, Sam2Memory]]
    pointers: list[tuple[int, Sam2Memory]]


@dataclass(frozen=True)
class ReadLog:
    """Which frames a frame read (diagnostics and tests)."""

    label: int
    direction: int
    frame: int
    spatial_frames: tuple[int, ...]
    pointer_frames: tuple[int, ...]


def _prompted_pointers(model, prompted: dict[int, Sam2Memory], frame: int, reverse: bool) -> tuple[dict, dict, list]:
    """SAM 2's conditioning frames for ``frame``: (selected, unselected, pointer list)."""
    from sam2.modeling.sam2_utils import select_closest_cond_frames

    selected, unselected = select_closest_cond_frames(frame, prompted, model.max_cond_frames_in_attn)
    sign = -1 if reverse else 1
    usable = selected
    if model.only_obj_ptrs_in_the_past_for_eval:
        usable = {t: m for t, m in selected.items() if (t >= frame if reverse else t <= frame)}
    pointers = [((frame - t) * sign if model.use_signed_tpos_enc_to_obj_ptrs else abs(frame - t), m) for t, m in usable.items()]
    return selected, unselected, pointers


class FifoSelection:
    """SAM 2's rule: prompted frames plus the ``recent`` frames just before (all when None)."""

    def __init__(self, model, recent: int | None = None) -> None:
        self.model = model
        self.recent = model.num_maskmem - 1 if recent is None else recent
        self.prompted: dict[int, Sam2Memory] = {}
        self.tracked: dict[int, Sam2Memory] = {}

    def add(self, memory: Sam2Memory, entry: MemoryEntry | None = None) -> bool:
        (self.prompted if memory.prompted else self.tracked)[memory.frame] = memory
        return True

    def select(self, frame: int, reverse: bool, num_frames: int, key: torch.Tensor | None = None) -> MemoryRead:
        model = self.model
        selected, unselected, pointers = _prompted_pointers(model, self.prompted, frame, reverse)
        spatial = [(0, m) for m in selected.values()]
        stride = model.memory_temporal_stride_for_eval
        for t_pos in range(1, model.num_maskmem):
            t_rel = model.num_maskmem - t_pos
            if t_rel > self.recent:
                continue
            if t_rel == 1:
                previous = frame + 1 if reverse else frame - 1
            elif reverse:
                previous = -(-(frame + 2) // stride) * stride + (t_rel - 2) * stride
            else:
                previous = ((frame - 2) // stride) * stride - (t_rel - 2) * stride
            memory = self.tracked.get(previous, unselected.get(previous))
            if memory is not None:
                spatial.append((t_pos, memory))
        if model.use_obj_ptrs_in_encoder:
            for t_diff in range(1, min(num_frames, model.max_obj_ptrs_in_encoder)):
                t = frame + t_diff if reverse else frame - t_diff
                if t < 0 or t >= num_frames:
                    break
                memory = self.tracked.get(t, unselected.get(t))
                if memory is not None:
                    pointers.append((t_diff, memory))
        # frames further back than any rule reaches are never read again
        horizon = max(model.max_obj_ptrs_in_encoder, (model.num_maskmem + 1) * stride) + 1
        self.tracked = {t: m for t, m in self.tracked.items() if abs(frame - t) <= horizon}
        return MemoryRead(spatial, pointers)


class BankSelection:
    """The confidence rule: prompted frames plus the bank's best entries for the current frame."""

    def __init__(self, model, bank: ConfidenceMemoryBank) -> None:
        self.model = model
        self.bank = bank
        self.prompted: dict[int, Sam2Memory] = {}
        self.stored: dict[int, Sam2Memory] = {}

    def add(self, memory: Sam2Memory, entry: MemoryEntry | None = None) -> bool:
        if memory.prompted:
            self.prompted[memory.frame] = memory
            if entry is not None:
                self.bank.add(entry)
            return True
        assert entry is not None, "the bank needs the entry's key and confidence"
        admitted = self.bank.add(entry)
        held = {e.frame for e in self.bank.entries if not e.pinned}
        if admitted:
            self.stored[memory.frame] = memory
        self.stored = {t: m for t, m in self.stored.items() if t in held}
        return admitted

    def select(self, frame: int, reverse: bool, num_frames: int, key: torch.Tensor | None = None) -> MemoryRead:
        model = self.model
        selected, _, pointers = _prompted_pointers(model, self.prompted, frame, reverse)
        spatial = [(0, m) for m in selected.values()]
        entries = self.bank.entries
        if key is not None and any(not e.pinned for e in entries):
            # the bank's readout weights (similarity x confidence, over every entry, as it reads itself)
            weights = similarity_weights(key, entries, self.bank.temperature)
            ranked = [e for _, e in sorted(zip(weights.tolist(), entries), key=lambda pair: -pair[0]) if not e.pinned]
            for entry in ranked[: model.num_maskmem - 1]:
                distance = min(max(abs(frame - entry.frame), 1), model.num_maskmem - 1)
                memory = self.stored[entry.frame]
                spatial.append((model.num_maskmem - distance, memory))
                if model.use_obj_ptrs_in_encoder:
                    pointers.append((abs(frame - entry.frame), memory))
        return MemoryRead(spatial, pointers)


def conditioned_features(model, flat: FlatFeatures, read: MemoryRead, num_frames: int, position: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) features of the current frame after memory attention over ``read``.

    ``position`` is the memory's spatial position encoding (1, C_mem, h, w), the same for every frame.
    """
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    device = flat.vision[-1].device
    channels = model.hidden_dim
    h, w = flat.sizes[-1]
    memories, encodings = [], []
    spatial_position = position.to(device).flatten(2).permute(2, 0, 1)
    for t_pos, memory in read.spatial:
        memories.append(memory.features.to(device, non_blocking=True).flatten(2).permute(2, 0, 1))
        encodings.append(spatial_position + model.maskmem_tpos_enc[model.num_maskmem - t_pos - 1])
    pointer_tokens = 0
    if model.use_obj_ptrs_in_encoder and read.pointers:
        max_pointers = min(num_frames, model.max_obj_ptrs_in_encoder)
        offsets = [offset for offset, _ in read.pointers]
        pointers = torch.stack([m.pointer.to(device) for _, m in read.pointers], dim=0)
        if model.add_tpos_enc_to_obj_ptrs:
            dim = channels if model.proj_tpos_enc_in_obj_ptrs else model.mem_dim
            pointer_pos = get_1d_sine_pe(torch.tensor(offsets).to(device=device) / (max_pointers - 1), dim=dim)
            pointer_pos = model.obj_ptr_tpos_proj(pointer_pos).unsqueeze(1).expand(-1, 1, model.mem_dim)
        else:
            pointer_pos = pointers.new_zeros(len(offsets), 1, model.mem_dim)
        if model.mem_dim < channels:
            pointers = pointers.reshape(-1, 1, channels // model.mem_dim, model.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            pointer_pos = pointer_pos.repeat_interleave(channels // model.mem_dim, dim=0)
        memories.append(pointers)
        encodings.append(pointer_pos)
        pointer_tokens = pointers.shape[0]
    fused = model.memory_attention(
        curr=flat.vision[-1:],
        curr_pos=flat.positions[-1:],
        memory=torch.cat(memories, dim=0),
        memory_pos=torch.cat(encodings, dim=0),
        num_obj_ptr_tokens=pointer_tokens,
    )
    return fused.permute(1, 2, 0).view(1, channels, h, w)
