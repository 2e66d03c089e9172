"""What a session keeps per object, and the small pieces its rooms share: edits of an object's
prompts, an answer laid on its frame, a fresh tracker, a run's statistics added to the session's,
and the warning a run over many objects gives.

The session (:mod:`medsam2.engine.session`) holds the state; its corrections
(:mod:`medsam2.engine.corrections`) and its result (:mod:`medsam2.engine.session_results`) work on
it through these, and none of them imports the session back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from medsam2.engine.memory import MemoryEntry
from medsam2.engine.sweep import Tracker
from medsam2.engine.tracks import FramePrediction, ObjectTrack, PropagationStats
from medsam2.prompts.parse import Box, MaskPrompt, ObjectPrompts, Point

if TYPE_CHECKING:
    from medsam2.backbones.base import Backbone
    from medsam2.engine.feature_cache import CachedBackbone
    from medsam2.engine.step_kinds import StepKind
    from medsam2.io.volume import Volume
    from medsam2.io.windows import IntensityWindow, WindowedFrames


class EngineView(Protocol):
    """What a session and its rooms read of their engine (:class:`medsam2.engine.engine.Engine`,
    which opens sessions: the session names this view, not the engine, so neither imports the other)."""

    @property
    def backbone(self) -> Backbone: ...

    @property
    def memory(self) -> str: ...

    @property
    def settings(self) -> object: ...

    @property
    def kind(self) -> StepKind: ...


class SessionView(Protocol):
    """What the corrections (:mod:`medsam2.engine.corrections`) and the results
    (:mod:`medsam2.engine.session_results`) read of a :class:`medsam2.engine.session.Session`."""

    volume: Volume
    axis: str
    voxel_axis: str
    shape: tuple[int, int, int]
    intensity: IntensityWindow
    frames: WindowedFrames
    cache: CachedBackbone
    engine: EngineView


#: default memory budget of a session's feature cache: about 300 LiteMedSAM slices (6.6 MB each),
#: or 60 SAM 2 slices at 1024 input (34 MB each)
DEFAULT_FEATURE_CACHE_MB = 2048.0
#: above this many objects a run warns how long decoding will take
MANY_OBJECTS = 20
#: decoder seconds per object per slice it covers, measured here (50 objects on a 5-slice CT crop,
#: 2 cores, OpenVINO fp32 decoder: 17.7 s of decoding, about 1.3 decoder calls per object-slice)
DECODE_SECONDS_PER_OBJECT_SLICE = 0.07


@dataclass
class ObjectState:
    """One object in a session. Replaced, never changed in place, so that undo snapshots stay valid.

    Attributes:
        prompts: every prompt of the object (corrections included).
        track: its answers per slice; None until propagated.
        pinned: LiteMedSAM: the memory entries of its prompted slices (a correction reuses them).
        clicks: clicks given by corrections, per slice (they accumulate on a slice).
    """

    prompts: ObjectPrompts
    track: ObjectTrack | None = None
    pinned: dict[int, MemoryEntry] = field(default_factory=dict)
    clicks: dict[int, list[Point]] = field(default_factory=dict)
    #: a locked object wins every voxel it shares with another in the label map
    locked: bool = False

    def copy(self) -> ObjectState:
        track = None
        if self.track is not None:
            track = ObjectTrack(self.track.label, self.track.name, list(self.track.prompted_frames), dict(self.track.frames))
        return ObjectState(copy_prompts(self.prompts), track, dict(self.pinned), {f: list(c) for f, c in self.clicks.items()},
                           self.locked)


def copy_prompts(prompts: ObjectPrompts) -> ObjectPrompts:
    """A copy whose prompt lists can change without touching the original (the prompts are shared)."""
    return ObjectPrompts(int(prompts.label), prompts.name, list(prompts.boxes), list(prompts.points), list(prompts.masks))


def replace_slice_prompts(
    prompts: ObjectPrompts,
    slice: int,
    boxes: Sequence[Box] = (),
    points: Sequence[Point] = (),
    masks: Sequence[MaskPrompt] = (),
) -> None:
    """Drop every prompt of ``prompts`` on ``slice`` and put the given ones there instead."""
    prompts.boxes = [b for b in prompts.boxes if b.frame != slice] + list(boxes)
    prompts.points = [p for p in prompts.points if p.frame != slice] + list(points)
    prompts.masks = [m for m in prompts.masks if m.frame != slice] + list(masks)


def on_frame(result: FramePrediction, geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """One answer on its (rows, cols) frame: (foreground mask, probability). SAM 2 answers keep SAM 2's
    own rule (logits resized to the frame, > 0); an opened label map's slice is its own mask; the
    others are probability > 0.5."""
    if result.exact is not None:
        return result.exact, result.exact.float()
    if result.logits is not None:
        logits = geometry.model_to_frame(result.logits)
        return logits > 0, torch.sigmoid(logits)
    probability = geometry.model_to_frame(result.probability_float())
    return probability > 0.5, probability


def frame_mask(state: ObjectState, slice: int, geometry) -> np.ndarray | None:
    """The object's (rows, cols) mask on a slice, None where it is absent."""
    if state.track is None or slice not in state.track.frames:
        return None
    mask = on_frame(state.track.frames[slice], geometry)[0].numpy()
    return mask if mask.any() else None


def new_tracker(engine: EngineView, backbone: Backbone, frames, progress: bool = False) -> Tracker:
    """The sweep with the engine's step over ``backbone`` (a fresh step: its memories are per run)."""
    return Tracker(engine.kind.make_step(backbone, engine.memory, engine.settings), frames, progress)


def absorb(total: PropagationStats, run: PropagationStats) -> None:
    """Add a run's statistics to ``total`` (the session's)."""
    total.encode_seconds += run.encode_seconds
    total.decode_seconds += run.decode_seconds
    total.decode_calls += run.decode_calls
    total.encoded_frames |= run.encoded_frames


def many_objects_note(n_objects: int, n_frames: int) -> str | None:
    """A warning with the expected decoding time when there are more than :data:`MANY_OBJECTS`
    objects (their features are shared, but each object is decoded on every slice it covers)."""
    if n_objects <= MANY_OBJECTS:
        return None
    seconds = n_objects * n_frames * DECODE_SECONDS_PER_OBJECT_SLICE
    return (
        f"{n_objects} objects: each is decoded on every slice it covers, so decoding may take up to about "
        f"{seconds:.0f} s on a 2-core CPU ({DECODE_SECONDS_PER_OBJECT_SLICE} s per object per slice); "
        "encoding is shared by all objects"
    )
