"""One-prompt segmentation over whole images and volumes: supports in, label maps out.

:func:`run_one_prompt` is what :meth:`medsam2.Segmenter.one_prompt` and ``medsam2 oneprompt`` call.
2D queries get the located mask; 3D queries are searched on ``scan_slices`` evenly spaced axial
slices, and the most confident slice's mask becomes a mask prompt that the ordinary engine
propagates through the query volume.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from medsam2.engine.engine import Engine
from medsam2.engine.feature_cache import SeededBackbone
from medsam2.engine.oneprompt.locate import OnePromptSettings, QueryAnswer, QueryFailure, QueryFrames, StructureLocator, answer_queries
from medsam2.errors import MedSAM2Error, PromptError
from medsam2.io.limits import ReadLimits
from medsam2.io.readers import load_volume
from medsam2.io.slicing import to_frames
from medsam2.io.volume import Volume
from medsam2.io.windows import WindowedFrames, choose_window
from medsam2.prompts.parse import MaskPrompt, ObjectPrompts, validate_prompts


@dataclass
class QueryOutcome:
    """One query's answer.

    Attributes:
        name: the query's name (file name for files, "query N" for volumes given in Python).
        labels: label map in the query's voxel grid (z, y, x), 0 and ``label``; None on error.
        confidence: predicted IoU x agreement of the located mask, in [0, 1].
        flagged: True when the confidence is below the review threshold (or nothing was found).
        support: the support the query leaned on most (largest readout weight).
        located_slice: the query slice where the structure was located (3D queries).
        admitted: whether the answer joined the memory bank.
        seconds: encoding, locating and (3D) propagation time.
        error: why the query could not be segmented, or None.
        voxels: foreground voxels (pixels) of the answer.
        volume: the query as read (a caller that has written the answer may drop ``labels`` and
            ``volume`` to keep memory flat over many queries).
    """

    name: str
    labels: np.ndarray | None
    confidence: float
    flagged: bool
    support: str | None
    located_slice: int | None
    admitted: bool
    seconds: float
    error: str | None = None
    voxels: int = 0
    volume: Volume | None = field(default=None, repr=False)


@dataclass
class OnePromptResult:
    """Answers in the order the queries were given, and how the run went."""

    queries: list[QueryOutcome]
    supports: list[str]
    order: list[str]
    backbone: str
    runtime: str
    precision: str
    decode_calls: int
    seconds: float

    def to_dict(self) -> dict:
        rows = []
        for q in self.queries:
            row = {k: v for k, v in asdict(q).items() if k not in ("labels", "volume")}
            row["confidence"] = round(q.confidence, 4)
            row["seconds"] = round(q.seconds, 3)
            rows.append(row)
        flagged = [q.name for q in self.queries if q.flagged]
        return {
            "supports": self.supports, "order_processed": self.order, "backbone": self.backbone, "runtime": self.runtime,
            "precision": self.precision, "decode_calls": self.decode_calls, "seconds": round(self.seconds, 2),
            "flagged_for_review": flagged, "queries": rows,
        }


@dataclass
class _Support:
    name: str
    volume: Volume
    prompts: ObjectPrompts


def _support_masks(engine: Engine, support: _Support, window: str) -> np.ndarray:
    """(z, y, x) bool mask of the support's structure (from its mask prompt, or segmented from
    its box/click prompts)."""
    prompts = support.prompts
    shape = support.volume.shape
    if not (prompts.boxes or prompts.points or prompts.masks):
        raise PromptError(f"support {support.name} has no prompt; give --support-mask, --support-box or --support-point")
    validate_prompts([prompts], shape[0], shape[1], shape[2], "axial")
    if prompts.masks and not prompts.boxes and not prompts.points:
        mask = np.zeros(shape, dtype=bool)
        for m in prompts.masks:
            mask[m.frame] |= m.mask
        return mask
    result = engine.segment(support.volume, [prompts], window=window)
    mask = result.labels == prompts.label
    if not mask.any():
        raise PromptError(f"support {support.name}: its prompt gave an empty mask; give a mask or a larger box")
    return mask


def _support_slices(mask: np.ndarray, count: int) -> list[int]:
    """The slice with the largest area, then slices spread evenly over the mask's extent."""
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    present = np.flatnonzero(areas)
    chosen = [int(present[np.argmax(areas[present])])]
    for z in np.linspace(present[0], present[-1], count + 2)[1:-1].round().astype(int):
        if len(chosen) >= count:
            break
        if areas[z] and z not in chosen:
            chosen.append(int(z))
    return chosen


def _windowed(volume: Volume, window: str) -> WindowedFrames:
    frames = to_frames(volume.array, "k")
    intensity = choose_window(frames, window, volume.modality)
    intensity.require_structure(volume.source)
    return WindowedFrames(frames, intensity)


def _propagator(engine: Engine, frames: WindowedFrames, answer: QueryAnswer) -> Engine:
    """The engine, its backbone seeded with the query's searched slices (not encoded twice)."""
    seeded = SeededBackbone(engine.backbone, [(frames[z], features) for z, features in answer.searched.items()])
    return replace(engine, backbone=seeded)


def run_one_prompt(
    engine: Engine,
    supports: Sequence[tuple[Volume, ObjectPrompts]],
    queries: Sequence[Volume | str | os.PathLike],
    settings: OnePromptSettings | None = None,
    window: str = "auto",
    support_names: Sequence[str] | None = None,
    on_outcome: Callable[[int, QueryOutcome], None] | None = None,
    limits: ReadLimits | None = None,
) -> OnePromptResult:
    """Segment the supports' structure in every query with no prompt on the queries.

    Arguments:
        engine: the backbone (and the propagation through 3D queries).
        supports: (volume, prompts) pairs; 2D images are one-slice volumes. Prompts are axial.
        queries: volumes, or paths loaded one at a time (an unreadable path becomes an outcome
            with ``error`` set; the others go on).
        on_outcome: called with (query position, outcome) as soon as each query is answered.
        limits: the cap on a query file's decoded size (default 8 GiB).

    Raises:
        PromptError: a support without a prompt, or with an empty mask.
    """
    began = time.perf_counter()
    settings = settings or OnePromptSettings()
    locator = StructureLocator(engine.backbone, settings)
    names = list(support_names or [p.name or Path(v.source).name or f"support {i}" for i, (v, p) in enumerate(supports)])
    bank, index_names = _support_bank(engine, locator, supports, names, window, settings)
    run = _QueryRun(engine, queries, settings, window, on_outcome, limits)
    for item in answer_queries(locator, bank, index_names, [run.loader(i) for i in range(len(queries))]):
        if isinstance(item, QueryFailure):
            run.failed(item.position, item.error)
        else:
            run.answered(item)
    plan = engine.backbone.plan
    return OnePromptResult(
        queries=[o for o in run.outcomes if o is not None], supports=names, order=run.order, backbone=engine.backbone.name,
        runtime=plan.runtime if plan else "torch", precision=plan.precision if plan else "fp32",
        decode_calls=locator.decode_calls, seconds=time.perf_counter() - began,
    )


def _support_bank(engine: Engine, locator: StructureLocator, supports: Sequence[tuple[Volume, ObjectPrompts]], names: list[str],
                  window: str, settings: OnePromptSettings):
    """The memory bank of the supports' slices, and the support's name of each bank entry.

    Raises:
        PromptError: a support without a prompt, an empty mask, or masks that cover whole images.
    """
    bank = locator.new_bank()
    index_names: dict[int, str] = {}
    for i, (volume, prompts) in enumerate(supports):
        support = _Support(names[i], volume, prompts)
        mask = _support_masks(engine, support, window)
        frames = _windowed(volume, window)
        for z in _support_slices(mask, settings.support_slices):
            features = engine.backbone.encode([frames[z]])[0]
            probability = features.geometry.frame_to_model(mask[z].astype(np.float32), size=engine.backbone.input_size)
            entry = locator.entry(len(index_names), features, (probability > 0.5).float(), 1.0, pinned=True)
            if entry is None:
                continue
            index_names[entry.frame] = support.name
            bank.add(entry)
    if not index_names:
        raise PromptError("the support mask covers the whole image or nothing of it; draw the structure only")
    return bank, index_names


class _QueryRun:
    """The queries of one run: loaded one at a time as the locator asks, answered (located, then
    propagated through a 3D query) or failed, each outcome reported as soon as it is known."""

    def __init__(self, engine: Engine, queries: Sequence[Volume | str | os.PathLike], settings: OnePromptSettings, window: str,
                 on_outcome: Callable[[int, QueryOutcome], None] | None, limits: ReadLimits | None) -> None:
        self.engine, self.queries, self.settings, self.window = engine, queries, settings, window
        self.on_outcome, self.limits = on_outcome, limits
        self.outcomes: list[QueryOutcome | None] = [None] * len(queries)
        self.order: list[str] = []
        self._loaded: dict[str, tuple[int, Volume, WindowedFrames]] = {}

    def loader(self, position: int) -> Callable[[], QueryFrames]:
        """A loader of query ``position``'s frames and the slices to scan."""
        def load() -> QueryFrames:
            item = self.queries[position]
            volume = item if isinstance(item, Volume) else load_volume(item, limits=self.limits)
            name = Path(volume.source).name if volume.source else f"query {position}"
            name = name if name not in self._loaded else f"{name} ({position})"
            frames = _windowed(volume, self.window)
            self._loaded[name] = (position, volume, frames)
            count = len(frames)
            indices = sorted(set(np.linspace(0, count - 1, min(self.settings.scan_slices, count)).round().astype(int).tolist()))
            return QueryFrames(name=name, frames=frames, indices=indices)

        return load

    def answered(self, answer: QueryAnswer) -> None:
        """The located structure, propagated through a 3D query, as the query's outcome."""
        position, volume, frames = self._loaded.pop(answer.name)
        self.order.append(answer.name)
        start = time.perf_counter()
        localisation = answer.localisation
        labels = np.zeros(volume.shape, dtype=np.uint8)
        confidence = 0.0
        if localisation is not None and answer.features is not None and answer.frame is not None:
            confidence = localisation.confidence
            mask = answer.features.geometry.model_to_frame(localisation.probability).numpy() > 0.5
            if volume.shape[0] == 1:
                labels[0][mask] = 1
            elif mask.any():
                prompts = ObjectPrompts(1, "structure", masks=[MaskPrompt(answer.frame, mask)])
                propagated = _propagator(self.engine, frames, answer).segment(volume, [prompts], window=self.window)
                labels = (propagated.labels > 0).astype(np.uint8)
        self._report(position, QueryOutcome(
            name=answer.name, labels=labels, confidence=confidence, flagged=confidence < self.settings.review_below,
            support=answer.support, located_slice=answer.frame if volume.shape[0] > 1 else None, admitted=answer.admitted,
            seconds=answer.seconds + time.perf_counter() - start, voxels=int((labels > 0).sum()), volume=volume,
        ))

    def failed(self, position: int, exc: Exception) -> None:
        """A query that could not be read or answered: an outcome with its one-line error."""
        item = self.queries[position]
        name = Path(item).name if not isinstance(item, Volume) else f"query {position}"
        message = str(exc) if isinstance(exc, MedSAM2Error) else f"{exc.__class__.__name__}: {exc}"
        self._report(position, QueryOutcome(name=name, labels=None, confidence=0.0, flagged=True, support=None, located_slice=None,
                                            admitted=False, seconds=0.0, error=message.splitlines()[0] if message else "unreadable"))

    def _report(self, position: int, outcome: QueryOutcome) -> None:
        self.outcomes[position] = outcome
        if self.on_outcome:
            self.on_outcome(position, outcome)


def support_from_arrays(volume: Volume, mask: np.ndarray, name: str = "support") -> tuple[Volume, ObjectPrompts]:
    """A support from an image and a mask array of its voxel grid ((z, y, x) or (y, x) for 2D)."""
    from medsam2.prompts.parse import mask_prompts_from_array

    mask = np.asarray(mask)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.shape != volume.shape:
        raise PromptError(f"support mask {name} has size {mask.shape} but the support image has {volume.shape}")
    return volume, ObjectPrompts(1, name, masks=mask_prompts_from_array(mask, name))

