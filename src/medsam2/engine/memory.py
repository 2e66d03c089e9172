"""Memories that carry an object from frame to frame.

:class:`ConfidenceMemoryBank` is the MedSAM-2 rule: it keeps the most reliable predictions, drops
redundant ones, and reads them back weighted by how similar each stored frame is to the frame
being segmented. :class:`FifoMemory` is the stock SAM 2 rule (prompted frames plus the last six)
and :class:`PreviousFrameMemory` keeps only the previous frame; both exist for comparison.

All memories share one readout: weights = softmax(similarity / temperature) x confidence,
normalised to sum to 1, and a prior = the weighted sum of the entries' mask probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from medsam2.engine.memory_kinds import check_memory_kind
from medsam2.errors import UsageError


@dataclass(frozen=True)
class BankSettings:
    """The confidence memory bank's rule, the same type for every engine and one-prompt (each with
    its measured defaults: LiteMedSAM propagation below, SAM 2 capacity 16, one-prompt capacity 16
    and admit 0.7).

    Attributes:
        capacity: most unpinned entries kept (pinned entries do not count).
        admit: lowest confidence (predicted IoU x presence) admitted for unpinned entries.
        temperature: softmax temperature of the similarity weights (smaller: sharper).
        key_grid: frame keys are image features average-pooled to key_grid x key_grid.
        evict_margin: when full, a newcomer that repeats a stored entry replaces it unless it is
            less confident by more than this.
    """

    capacity: int = 8
    admit: float = 0.5
    temperature: float = 0.01
    key_grid: int = 16
    evict_margin: float = 0.1

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise UsageError("memory capacity must be at least 1")
        if self.temperature <= 0:
            raise UsageError("memory temperature must be positive")
        if self.key_grid < 1:
            raise UsageError("the memory key grid must be at least 1")


@dataclass
class MemoryEntry:
    """One remembered frame of one object.

    Attributes:
        frame: frame index along the slicing axis.
        key: (D,) L2-normalised descriptor of the whole frame (pooled image features).
        prototype: (C,) L2-normalised mean image feature inside the object's mask.
        probability: (S, S) mask probability in model space, values in [0, 1].
        confidence: predicted IoU x object presence, in [0, 1].
        area: mask area in model pixels (probability > 0.5).
        pinned: a prompted frame; never evicted, always read.
        background: (C,) L2-normalised mean feature outside the mask (one-prompt localisation).
        intensity: (B,) histogram of the frame's windowed values inside the mask, summing to 1
            (the intensity stop rule); None where it is not used.
    """

    frame: int
    key: torch.Tensor
    prototype: torch.Tensor
    probability: torch.Tensor
    confidence: float
    area: float
    pinned: bool = False
    background: torch.Tensor | None = None
    intensity: torch.Tensor | None = None


@dataclass
class Readout:
    """What a memory gives for a new frame."""

    entries: list[MemoryEntry]
    weights: torch.Tensor  # (N,), sums to 1, aligned with entries
    prior: torch.Tensor  # (S, S) weighted mask probability


def similarity_weights(key: torch.Tensor, entries: list[MemoryEntry], temperature: float) -> torch.Tensor:
    """softmax(cos(key, entry keys) / temperature) x confidence, normalised to sum to 1.

    Arguments:
        key: (D,) L2-normalised descriptor of the frame being segmented.
        entries: memory entries (at least one).
        temperature: softmax temperature (smaller = sharper preference for similar frames).
    """
    keys = torch.stack([e.key for e in entries])
    sims = keys @ key
    weights = torch.softmax(sims / temperature, dim=0)
    weights = weights * torch.tensor([max(e.confidence, 1e-6) for e in entries], dtype=weights.dtype)
    return weights / weights.sum()


def _readout(key: torch.Tensor, entries: list[MemoryEntry], temperature: float) -> Readout:
    weights = similarity_weights(key, entries, temperature)
    prior = torch.zeros_like(entries[0].probability)
    for w, e in zip(weights, entries):
        prior += w * e.probability
    return Readout(entries=list(entries), weights=weights, prior=prior)


class Memory(Protocol):
    """What the propagation engine needs from a memory."""

    @property
    def entries(self) -> list[MemoryEntry]: ...

    def add(self, entry: MemoryEntry) -> bool:
        """Offer an entry; returns whether it was stored."""
        ...

    def readout(self, key: torch.Tensor) -> Readout: ...

    def reference_prototypes(self) -> torch.Tensor:
        """(M, C) prototypes that a new prediction's presence is measured against."""
        ...


class ConfidenceMemoryBank:
    """Confidence memory bank under a :class:`BankSettings` rule.

    When full, one entry of the most similar pair (the most redundant) leaves. If the newcomer is
    in that pair it replaces its twin unless it is less confident by more than ``evict_margin``
    (then it is not admitted); otherwise the less confident of the pair leaves.
    """

    def __init__(self, settings: BankSettings | None = None) -> None:
        self.settings = settings or BankSettings()
        self.capacity = self.settings.capacity
        self.admit = self.settings.admit
        self.temperature = self.settings.temperature
        self.evict_margin = self.settings.evict_margin
        self._entries: list[MemoryEntry] = []

    @property
    def entries(self) -> list[MemoryEntry]:
        return list(self._entries)

    def add(self, entry: MemoryEntry) -> bool:
        if entry.pinned:
            self._entries = [e for e in self._entries if not (e.pinned and e.frame == entry.frame)]
            self._entries.append(entry)
            return True
        if entry.confidence < self.admit:
            return False
        unpinned = [e for e in self._entries if not e.pinned]
        if len(unpinned) < self.capacity:
            self._entries.append(entry)
            return True
        first, second = self._most_similar_pair(unpinned + [entry])
        if second is entry:
            first, second = second, first
        if first is entry:
            # the newcomer repeats a stored entry: keep the newer one unless it is clearly less sure
            if entry.confidence < second.confidence - self.evict_margin:
                return False
            victim = second
        else:
            victim = first if first.confidence < second.confidence else second
        self._entries = [e for e in self._entries if e is not victim]
        self._entries.append(entry)
        return True

    @staticmethod
    def _most_similar_pair(pool: list[MemoryEntry]) -> tuple[MemoryEntry, MemoryEntry]:
        """The two entries whose keys are most similar (the most redundant pair)."""
        keys = torch.stack([e.key for e in pool])
        sims = keys @ keys.T
        sims.fill_diagonal_(-float("inf"))
        flat = int(torch.argmax(sims))
        return pool[flat // len(pool)], pool[flat % len(pool)]

    def readout(self, key: torch.Tensor) -> Readout:
        return _readout(key, self._entries, self.temperature)

    def reference_prototypes(self) -> torch.Tensor:
        pinned = [e.prototype for e in self._entries if e.pinned]
        return torch.stack(pinned or [e.prototype for e in self._entries])


class FifoMemory:
    """SAM 2's rule: every prompted frame plus the most recent ``recent`` frames, all admitted."""

    def __init__(self, recent: int = 6, temperature: float = 0.01) -> None:
        self.recent = recent
        self.temperature = temperature
        self._pinned: list[MemoryEntry] = []
        self._recent: list[MemoryEntry] = []

    @property
    def entries(self) -> list[MemoryEntry]:
        return self._pinned + self._recent

    def add(self, entry: MemoryEntry) -> bool:
        if entry.pinned:
            self._pinned = [e for e in self._pinned if e.frame != entry.frame] + [entry]
        else:
            self._recent = (self._recent + [entry])[-self.recent :]
        return True

    def readout(self, key: torch.Tensor) -> Readout:
        return _readout(key, self.entries, self.temperature)

    def reference_prototypes(self) -> torch.Tensor:
        return torch.stack([e.prototype for e in (self._pinned or self._recent)])


class PreviousFrameMemory:
    """No memory bank: only the previous frame's prediction is carried (the baseline)."""

    def __init__(self) -> None:
        self._last: MemoryEntry | None = None

    @property
    def entries(self) -> list[MemoryEntry]:
        return [self._last] if self._last is not None else []

    def add(self, entry: MemoryEntry) -> bool:
        self._last = entry
        return True

    def readout(self, key: torch.Tensor) -> Readout:
        assert self._last is not None, "readout before any entry"
        return Readout(entries=[self._last], weights=torch.ones(1), prior=self._last.probability.clone())

    def reference_prototypes(self) -> torch.Tensor:
        assert self._last is not None, "no entry yet"
        return self._last.prototype[None]



def make_memory(kind: str, settings: BankSettings | None = None) -> Memory:
    """A fresh memory of the named kind: "confidence" (default, with ``settings``), "fifo" or "none"."""
    check_memory_kind(kind)
    if kind == "confidence":
        return ConfidenceMemoryBank(settings)
    if kind == "fifo":
        return FifoMemory(temperature=(settings or BankSettings()).temperature)
    return PreviousFrameMemory()
