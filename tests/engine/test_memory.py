"""ConfidenceMemoryBank: admission, eviction of redundant entries, pinning, similarity weights."""

import pytest
import torch

from medsam2.engine.memory import (
    BankSettings,
    ConfidenceMemoryBank,
    FifoMemory,
    MemoryEntry,
    PreviousFrameMemory,
    make_memory,
    similarity_weights,
)
from medsam2.errors import UsageError

D = 16


def unit(index: int, mix: tuple[int, float] | None = None) -> torch.Tensor:
    """A unit key along axis ``index``, optionally tilted towards another axis."""
    key = torch.zeros(D)
    key[index] = 1.0
    if mix is not None:
        key[mix[0]] = mix[1]
    return key / key.norm()


def entry(frame: int, key: torch.Tensor, confidence: float, pinned: bool = False, value: float | None = None) -> MemoryEntry:
    probability = torch.full((4, 4), frame / 100.0 if value is None else value)
    return MemoryEntry(frame, key, torch.ones(3) / 3**0.5, probability, confidence, area=16.0, pinned=pinned)


def test_admission_by_confidence():
    bank = ConfidenceMemoryBank(BankSettings(capacity=4, admit=0.5))
    assert not bank.add(entry(1, unit(1), 0.49))
    assert bank.add(entry(2, unit(2), 0.51))
    assert [e.frame for e in bank.entries] == [2]


def test_pinned_entries_always_admitted_and_never_evicted():
    bank = ConfidenceMemoryBank(BankSettings(capacity=2, admit=0.9))
    assert bank.add(entry(0, unit(0), 0.1, pinned=True))
    for frame in range(1, 10):
        # every newcomer is most similar to the pinned entry, yet the pinned entry stays
        bank.add(entry(frame, unit(0, (frame, 0.2)), 0.95))
    frames = [e.frame for e in bank.entries]
    assert 0 in frames
    assert len([e for e in bank.entries if not e.pinned]) == 2


def test_newcomer_replaces_its_redundant_twin():
    bank = ConfidenceMemoryBank(BankSettings(capacity=3, admit=0.0))
    for frame in (1, 2, 3):
        bank.add(entry(frame, unit(frame), 0.8))
    # frame 4 looks like frame 2 (cosine 0.98): frame 2 is the redundant one and leaves
    assert bank.add(entry(4, unit(2, (4, 0.2)), 0.8))
    assert sorted(e.frame for e in bank.entries) == [1, 3, 4]


def test_newcomer_clearly_less_confident_than_its_twin_is_refused():
    bank = ConfidenceMemoryBank(BankSettings(capacity=3, admit=0.0, evict_margin=0.1))
    for frame in (1, 2, 3):
        bank.add(entry(frame, unit(frame), 0.9))
    assert not bank.add(entry(4, unit(2, (4, 0.2)), 0.75))
    assert sorted(e.frame for e in bank.entries) == [1, 2, 3]
    # within the margin it still replaces the twin
    assert bank.add(entry(5, unit(2, (5, 0.2)), 0.85))
    assert sorted(e.frame for e in bank.entries) == [1, 3, 5]


def test_redundant_pair_without_newcomer_drops_the_less_confident():
    bank = ConfidenceMemoryBank(BankSettings(capacity=3, admit=0.0))
    bank.add(entry(1, unit(1), 0.9))
    bank.add(entry(2, unit(1, (2, 0.1)), 0.6))  # near-duplicate of frame 1, less sure
    bank.add(entry(3, unit(3), 0.9))
    assert bank.add(entry(4, unit(4), 0.7))  # unlike anything stored
    assert sorted(e.frame for e in bank.entries) == [1, 3, 4]


def test_similarity_weights_prefer_similar_frames_and_scale_with_confidence():
    entries = [entry(1, unit(1), 0.9), entry(2, unit(1, (2, 0.5)), 0.9), entry(3, unit(3), 0.9)]
    query = unit(1)
    weights = similarity_weights(query, entries, temperature=0.1)
    assert torch.isclose(weights.sum(), torch.tensor(1.0))
    assert weights[0] > weights[1] > weights[2]
    sharper = similarity_weights(query, entries, temperature=0.01)
    assert sharper[0] > weights[0]
    entries[0].confidence = 0.09  # ten times less sure
    lowered = similarity_weights(query, entries, temperature=0.1)
    assert lowered[0] < weights[0]
    assert torch.isclose(lowered[0] / lowered[1], (weights[0] / weights[1]) / 10, rtol=1e-4)


def test_readout_prior_is_the_weighted_sum_of_masks():
    bank = ConfidenceMemoryBank(BankSettings(capacity=4, admit=0.0, temperature=0.05))
    bank.add(entry(1, unit(1), 0.9, value=1.0))
    bank.add(entry(2, unit(2), 0.9, value=0.0))
    readout = bank.readout(unit(1, (2, 0.3)))
    expected = readout.weights[0] * 1.0 + readout.weights[1] * 0.0
    assert torch.allclose(readout.prior, torch.full((4, 4), float(expected)))
    assert readout.weights[0] > 0.9


def test_fifo_keeps_prompted_frames_and_the_last_six():
    fifo = FifoMemory(recent=6)
    fifo.add(entry(0, unit(0), 0.2, pinned=True))
    for frame in range(1, 11):
        fifo.add(entry(frame, unit(frame % D), 0.1))
    assert [e.frame for e in fifo.entries] == [0, 5, 6, 7, 8, 9, 10]


def test_previous_frame_memory_keeps_only_the_last():
    memory = PreviousFrameMemory()
    memory.add(entry(0, unit(0), 1.0, pinned=True))
    memory.add(entry(1, unit(1), 0.3))
    assert [e.frame for e in memory.entries] == [1]
    assert torch.equal(memory.readout(unit(5)).prior, memory.entries[0].probability)


def test_unknown_memory_kind():
    with pytest.raises(UsageError, match="unknown memory"):
        make_memory("lru")
