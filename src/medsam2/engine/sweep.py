"""The one sweep loop of every engine: prompted frames first, then both directions, several objects
at once, each frame encoded once for all the objects active there.

What differs between backbones lives in a :class:`Step` (how a prompted frame is decoded, what a
pass remembers, how a frame is decoded from memory, when an object ends, how two passes over a
frame merge): LiteMedSAM's memory readout -> boxes -> decode
(:class:`medsam2.engine.litemedsam_step.LiteMedSAMStep`) and SAM 2's memory attention -> heads ->
memory encoder (:class:`medsam2.engine.sam2_step.Sam2Step`).

For each direction the loop starts at the first prompted frame of any object in that direction.
An object becomes active at its first prompted frame (its pass begins with all its prompts in
memory), is told of each further prompted frame it reaches (and is active again from there, if it
had ended), and stops where its step says it ends. The loop stops when no object is active and no
prompt lies ahead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm import tqdm

from medsam2.backbones.base import Backbone, FrameFeatures
from medsam2.engine.tracks import FeatureStore, FramePrediction, ObjectTrack, PropagationStats, frames_between_prompts
from medsam2.prompts.parse import ObjectPrompts


@dataclass
class Advance:
    """What one propagated frame gives one object.

    Attributes:
        commit: answers to merge into the object's track now (a step may hold some back until it
            knows whether the object goes on).
        ended: the object ends in this direction.
    """

    commit: list[FramePrediction] = field(default_factory=list)
    ended: bool = False


class Step(Protocol):
    """One backbone's way of carrying objects from frame to frame (see the module docstring)."""

    backbone: Backbone
    stats: PropagationStats

    def prepare(self, objects: list[ObjectPrompts], store: FeatureStore) -> Iterator[tuple[int, int]]:
        """Decode every object's prompted frames; yields (label, frame) after each."""
        ...

    def begin(self, index: int, direction: int) -> None:
        """Object ``index`` starts its pass in ``direction`` (1 or -1) with its prompts in memory."""
        ...

    def prompted(self, index: int, frame: int) -> None:
        """The pass of object ``index`` reaches another of its prompted frames."""
        ...

    def frame_context(self, features: FrameFeatures) -> object:
        """Work on a frame shared by every object decoded there (e.g. its memory key)."""
        ...

    def advance(self, index: int, frame: int, features: FrameFeatures, context: object, direction: int) -> Advance:
        """Decode object ``index`` on an unprompted frame from its memory."""
        ...

    def merge(self, track: ObjectTrack, result: FramePrediction) -> None:
        """Put an answer into a track that may hold one for that frame already (the other pass's)."""
        ...

    def finish(self, index: int, track: ObjectTrack) -> None:
        """Put object ``index``'s prompted frames' answers into its track."""
        ...


class Tracker:
    """Runs the sweeps of a :class:`Step` over one stack of frames.

    Arguments:
        step: the backbone's step.
        frames01: n frames, (H, W) or (H, W, 3) values in [0, 1], with a ``shape`` (an array, or
            :class:`medsam2.io.windows.WindowedFrames`).
        progress: show a tqdm bar.

    After :meth:`run` (or a finished :meth:`iter_run`), ``tracks`` holds one track per object; while
    :meth:`iter_run` runs, it holds the answers of the unprompted frames decoded so far.
    """

    def __init__(self, step: Step, frames01: Sequence[np.ndarray], progress: bool = False) -> None:
        self.step = step
        self.frames01 = frames01
        self.progress = progress
        self.stats = step.stats
        self.tracks: list[ObjectTrack] = []

    def run(self, objects: list[ObjectPrompts]) -> list[ObjectTrack]:
        """Segment every object on every frame where it is found; one track per object."""
        for _ in self.iter_run(objects):
            pass
        return self.tracks

    def iter_run(self, objects: list[ObjectPrompts]) -> Iterator[tuple[int, int]]:
        """:meth:`run` one decoded frame at a time: yields (label, frame) after each decode."""
        step = self.step
        store = FeatureStore(self.frames01, step.backbone, frames_between_prompts(objects), self.stats)
        yield from step.prepare(objects, store)
        tracks = [ObjectTrack(o.label, o.name, o.prompted_frames()) for o in objects]
        self.tracks = tracks  # filled while it runs: a caller may look at a frame's answer as it is yielded
        prompted = [set(o.prompted_frames()) for o in objects]
        bar = tqdm(desc="propagating", unit="slice", disable=not self.progress, leave=False)
        try:
            for direction in (1, -1):
                yield from self._pass(direction, objects, prompted, tracks, store, bar)
        finally:
            bar.close()
        for index, track in enumerate(tracks):
            step.finish(index, track)
        self.tracks = tracks

    def _pass(self, direction, objects, prompted, tracks, store, bar) -> Iterator[tuple[int, int]]:
        step = self.step
        n = len(self.frames01)
        starts = [min(p) if direction == 1 else max(p) for p in prompted]
        begun = [False] * len(objects)
        active = [False] * len(objects)
        frame = min(starts) if direction == 1 else max(starts)
        while 0 <= frame < n:
            for i in range(len(objects)):
                if frame in prompted[i]:
                    if begun[i]:
                        step.prompted(i, frame)
                    else:
                        step.begin(i, direction)
                        begun[i] = True
                    active[i] = True
            if not any(active):
                if not any((f - frame) * direction > 0 for p in prompted for f in p):
                    break
                frame += direction
                continue
            todo = [i for i in range(len(objects)) if active[i] and frame not in prompted[i]]
            if todo:
                features = store.get(frame)
                bar.update(1)
                context = step.frame_context(features)
                for i in todo:
                    outcome = step.advance(i, frame, features, context, direction)
                    for result in outcome.commit:
                        step.merge(tracks[i], result)
                    if outcome.ended:
                        active[i] = False
                    yield objects[i].label, frame
            frame += direction
