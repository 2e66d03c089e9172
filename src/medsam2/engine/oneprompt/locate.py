"""One-prompt segmentation: annotated support example(s) segment the same structure in other
images and other patients' scans, with no prompt on them.

The supports are pinned entries of a :class:`~medsam2.engine.memory.ConfidenceMemoryBank`. Queries are
taken most-similar-first (cosine of pooled frame keys against the bank), and a query's answer joins
the bank only when its confidence passes the bank's admission threshold, so easy queries help with
hard ones and unsure ones cannot poison the bank.

Locating the structure in a query (DESIGN.md, "One-prompt localisation", has the measurements):
the bank's readout for the query gives a foreground and a background prototype (similarity x
confidence weighted means of the entries' prototypes, in the backbone's matching features);
the query's location prior is where its features are closer to the foreground prototype than to
the background one. The prior is opened (to cut thin bridges to neighbouring tissue) and
thresholded at a few margins; the largest components give boxes; each box is decoded, and the
candidate with the best predicted IoU x agreement (Dice between the decoded mask and the prior
component it came from) x presence (cosine between the decoded mask's mean feature and the
foreground prototype: low when the mask spills into other tissue) wins; its confidence is
predicted IoU x agreement. A structure that comes in pieces on the support (both
lungs) is answered with the union of as many components. Each piece's tight box is decoded once
more (refinement).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medsam2.backbones.base import Backbone, FrameFeatures
from medsam2.engine.memory import BankSettings, ConfidenceMemoryBank, MemoryEntry
from medsam2.engine.tracks import box_of_mask, frame_key


@dataclass(frozen=True)
class OnePromptSettings:
    """Tuning of one-prompt localisation (measured on HC18 images; see DESIGN.md).

    Attributes:
        thresholds: margins of (foreground - background) cosine similarity at which the location
            prior is cut into components.
        components: largest components per threshold that become candidate boxes.
        opening: binary opening iterations on the prior (cuts thin bridges to other tissue).
        min_cells: smallest component (in feature-grid cells) that becomes a box.
        review_below: queries whose confidence is below this are flagged for review.
        bank: the memory bank of supports and confident answers (a query's answer joins it from
            ``bank.admit`` on; 1.01: the supports alone).
        scan_slices: slices of a query volume searched for the structure.
        support_slices: most slices of a 3D support mask used as pinned examples.
        chunk: query frames encoded ahead and ordered together (bounds memory: ~7 MB per frame).
    """

    thresholds: tuple[float, ...] = (0.0, 0.05, 0.1)
    components: int = 2
    opening: int = 1
    min_cells: int = 4
    review_below: float = 0.5
    bank: BankSettings = BankSettings(capacity=16, admit=0.7)
    scan_slices: int = 16
    support_slices: int = 3
    chunk: int = 64


@dataclass
class Localisation:
    """A structure found in one frame without a prompt.

    Attributes:
        probability: (S, S) mask probability in model space.
        iou: the decoder's predicted IoU.
        agreement: Dice between the decoded mask and the location prior's component.
        confidence: iou x agreement, in [0, 1].
        weights: readout weight of each bank entry (aligned with ``entries``).
        entries: the bank entries that were read.
    """

    probability: torch.Tensor
    iou: float
    agreement: float
    confidence: float
    weights: torch.Tensor
    entries: list[MemoryEntry]


@dataclass
class QueryFrames:
    """One query: a name and the frames (already windowed, values in [0, 1]) to search."""

    name: str
    frames: Sequence[np.ndarray]
    indices: list[int]


@dataclass
class QueryAnswer:
    """The best localisation of a query, on which of its frames, and bank bookkeeping.

    ``searched`` holds every searched frame's features by frame index (so propagation through a
    query volume need not encode them again); ``features`` are the located frame's."""

    name: str
    frame: int | None
    localisation: Localisation | None
    admitted: bool
    support: str | None
    seconds: float
    searched: dict[int, FrameFeatures] = field(default_factory=dict, repr=False)

    @property
    def features(self) -> FrameFeatures | None:
        return self.searched.get(self.frame) if self.frame is not None else None


def _grid(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(S, S) map -> fraction of each feature-grid cell covered, (h, w)."""
    return F.interpolate(mask.float()[None, None], size=size, mode="area")[0, 0]


def _normalise(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.norm(dim=0, keepdim=True).clamp(min=1e-8)


def _pieces(mask: torch.Tensor, fraction: float = 0.25) -> int:
    """Connected pieces of a mask at least ``fraction`` of the largest piece's size."""
    labels, count = ndimage.label(mask.numpy())
    if count < 2:
        return count
    sizes = ndimage.sum(np.ones_like(labels), labels, range(1, count + 1))
    return int((sizes >= fraction * sizes.max()).sum())


def _presence(matching: torch.Tensor, decoded: np.ndarray, foreground: torch.Tensor) -> float:
    """Cosine between the mean matching feature inside a decoded mask (on the feature grid) and the
    bank's foreground prototype, clipped to [0, 1]: low where the mask spills into other tissue."""
    if not decoded.any():
        return 0.0
    inside = _normalise(matching[:, torch.from_numpy(decoded)].mean(dim=1))
    return max(0.0, float(inside @ foreground))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / total) if total else 0.0


class StructureLocator:
    """Finds the structure that a memory bank holds in a frame that has no prompt."""

    def __init__(self, backbone: Backbone, settings: OnePromptSettings | None = None) -> None:
        self.backbone = backbone
        self.settings = settings or OnePromptSettings()
        self.decode_calls = 0

    def new_bank(self) -> ConfidenceMemoryBank:
        return ConfidenceMemoryBank(self.settings.bank)

    def valid_cells(self, features: FrameFeatures) -> torch.Tensor:
        """(h, w) bool: feature cells that lie on the image, not on the padding."""
        geometry = features.geometry
        grid = features.matching_features().shape[-2:]
        inside = geometry.frame_to_model(torch.ones(geometry.height, geometry.width), size=self.backbone.input_size)
        return _grid(inside > 0.5, grid) > 0.5

    def entry(self, index: int, features: FrameFeatures, probability: torch.Tensor, confidence: float, pinned: bool) -> MemoryEntry | None:
        """A bank entry for a frame and its (S, S) mask probability; None for an empty mask."""
        matching = features.matching_features()
        valid = self.valid_cells(features)
        inside = (_grid(probability > 0.5, matching.shape[-2:]) > 0.5) & valid
        outside = ~inside & valid
        if not inside.any() or not outside.any():
            return None
        return MemoryEntry(
            frame=index,
            key=frame_key(features, self.settings.bank.key_grid),
            prototype=_normalise(matching[:, inside].mean(dim=1)),
            background=_normalise(matching[:, outside].mean(dim=1)),
            probability=probability,
            confidence=confidence,
            area=float((probability > 0.5).sum()),
            pinned=pinned,
        )

    def locate(self, features: FrameFeatures, bank: ConfidenceMemoryBank) -> Localisation | None:
        """The structure in ``features``' frame, from the bank's prototypes; None when no
        candidate region is found."""
        key = frame_key(features, self.settings.bank.key_grid)
        readout = bank.readout(key)
        foreground = _normalise(sum(w * e.prototype for w, e in zip(readout.weights, readout.entries)))
        background = _normalise(sum(w * e.background for w, e in zip(readout.weights, readout.entries)))
        matching = features.matching_features()
        valid = self.valid_cells(features).numpy()
        score = (torch.einsum("c,chw->hw", foreground, matching) - torch.einsum("c,chw->hw", background, matching)).numpy()
        score = np.where(valid, score, -1.0)
        scale = self.backbone.input_size / score.shape[-1]
        expected_pieces = _pieces(readout.entries[int(torch.argmax(readout.weights))].probability > 0.5)
        best: tuple[float, float, float, torch.Tensor] | None = None
        for threshold in self.settings.thresholds:
            region = score > threshold
            if self.settings.opening:
                region = ndimage.binary_opening(region, iterations=self.settings.opening)
            labels, count = ndimage.label(region)
            if not count:
                continue
            sizes = ndimage.sum(region, labels, range(1, count + 1))
            decoded_parts = []
            for component in np.argsort(-sizes)[: self.settings.components]:
                if sizes[component] < self.settings.min_cells:
                    continue
                part = labels == component + 1
                prediction = self.backbone.decode(features, box=box_of_mask(part, 0.0, score.shape[-1]) * scale)
                self.decode_calls += 1
                probability = torch.sigmoid(prediction.logits)
                decoded_parts.append((part, prediction.confidence, probability))
            candidates = [(part, iou, probability) for part, iou, probability in decoded_parts]
            if expected_pieces > 1 and len(decoded_parts) > 1:  # a structure in pieces (both lungs): their union
                chosen = decoded_parts[:expected_pieces]
                union_part = np.logical_or.reduce([d[0] for d in chosen])
                union_probability = torch.stack([d[2] for d in chosen]).max(dim=0).values
                candidates = [(union_part, float(np.mean([d[1] for d in chosen])), union_probability)]
            for part, iou, probability in candidates:
                decoded = (_grid(probability > 0.5, score.shape).numpy() > 0.5) & valid
                agreement = _dice(decoded, part)
                presence = _presence(matching, decoded, foreground)
                rank = iou * agreement * presence
                if best is None or rank > best[0]:
                    best = (rank, iou, agreement, probability)
        if best is None:
            return None
        _, iou, agreement, probability = best
        confidence = iou * agreement
        mask = (probability > 0.5).numpy()
        pieces, count = ndimage.label(mask)
        refined = []
        for piece in range(1, count + 1):  # refine: each piece's own tight box
            if (pieces == piece).sum() >= 16:
                box = box_of_mask(pieces == piece, 0.0, self.backbone.input_size)
                refined.append(torch.sigmoid(self.backbone.decode(features, box=box).logits))
                self.decode_calls += 1
        if refined:
            probability = torch.stack(refined).max(dim=0).values
        return Localisation(probability, iou, agreement, confidence, readout.weights, readout.entries)


def leaned_on(localisation: Localisation, support_names: dict[int, str]) -> str | None:
    """Name of the pinned support whose readout weight was largest."""
    pinned = [(float(w), e.frame) for w, e in zip(localisation.weights, localisation.entries) if e.pinned]
    if not pinned:
        return None
    return support_names.get(max(pinned)[1])


@dataclass(frozen=True)
class QueryFailure:
    """A query that could not be loaded: its position among the queries and what went wrong."""

    position: int
    error: Exception


def answer_queries(
    locator: StructureLocator,
    bank: ConfidenceMemoryBank,
    support_names: dict[int, str],
    queries: Sequence[Callable[[], QueryFrames]],
) -> Iterator[QueryAnswer | QueryFailure]:
    """Answer queries most-similar-first, chunk by chunk, feeding confident answers to the bank.

    Arguments:
        locator: the structure locator (holds the backbone).
        bank: a bank already holding the pinned supports (entry frames index ``support_names``).
        queries: one loader per query (called once; may raise for an unreadable query).

    Yields:
        every answer in the order processed, and a :class:`QueryFailure` for each query that could
        not be loaded (as it happens).
    """
    position = 0
    next_index = -1
    while position < len(queries):
        # encode ahead up to `chunk` frames, then answer those queries most-similar-first
        pending: list[tuple[QueryFrames, list[FrameFeatures], torch.Tensor, float]] = []
        frames_ahead = 0
        while position < len(queries) and frames_ahead < locator.settings.chunk:
            began = time.perf_counter()
            try:
                query = queries[position]()
            except Exception as exc:  # reported per query; the run goes on
                yield QueryFailure(position, exc)
                position += 1
                continue
            position += 1
            features = [locator.backbone.encode([query.frames[i]])[0] for i in query.indices]
            keys = torch.stack([frame_key(f, locator.settings.bank.key_grid) for f in features])
            pending.append((query, features, keys, time.perf_counter() - began))
            frames_ahead += len(features)
        while pending:
            bank_keys = torch.stack([e.key for e in bank.entries])
            similarity = [float((keys @ bank_keys.T).max()) for _, _, keys, _ in pending]
            query, features, _, seconds = pending.pop(int(np.argmax(similarity)))
            began = time.perf_counter()
            best = _best_frame(locator, bank, query, features)
            admitted, next_index = _admit(locator, bank, best, next_index)
            seconds += time.perf_counter() - began
            yield _answer(query, best, admitted, support_names, seconds, dict(zip(query.indices, features)))


def _best_frame(
    locator: StructureLocator, bank: ConfidenceMemoryBank, query: QueryFrames, features: list[FrameFeatures]
) -> tuple[int, Localisation, FrameFeatures] | None:
    """The query frame where the structure is found with the highest confidence."""
    best: tuple[int, Localisation, FrameFeatures] | None = None
    for frame, frame_features in zip(query.indices, features):
        found = locator.locate(frame_features, bank)
        if found is not None and (best is None or found.confidence > best[1].confidence):
            best = (frame, found, frame_features)
    return best


def _admit(
    locator: StructureLocator, bank: ConfidenceMemoryBank, best: tuple[int, Localisation, FrameFeatures] | None, next_index: int
) -> tuple[bool, int]:
    """Offer an answer to the bank; returns whether it was admitted and the next entry index."""
    if best is None:
        return False, next_index
    entry = locator.entry(next_index, best[2], best[1].probability, best[1].confidence, pinned=False)
    if entry is not None and bank.add(entry):
        return True, next_index - 1
    return False, next_index


def _answer(
    query: QueryFrames,
    best: tuple[int, Localisation, FrameFeatures] | None,
    admitted: bool,
    support_names: dict[int, str],
    seconds: float,
    searched: dict[int, FrameFeatures],
) -> QueryAnswer:
    return QueryAnswer(
        name=query.name,
        frame=best[0] if best else None,
        localisation=best[1] if best else None,
        admitted=admitted,
        support=leaned_on(best[1], support_names) if best else None,
        seconds=seconds,
        searched=searched,
    )
