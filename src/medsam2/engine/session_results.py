"""A session's result built from its state: the label map of its objects' answers, each object's
report (with the sanity warnings judged from its evidence), and the segmentation's report.

:meth:`medsam2.engine.session.Session.result` gathers the state and calls these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from medsam2._version import __version__
from medsam2.engine.results import ObjectReport, SegmentationReport, Timings
from medsam2.engine.sanity import ObjectEvidence, gather_evidence, sanity_warnings
from medsam2.engine.session_state import SessionView, on_frame
from medsam2.engine.tracks import ObjectTrack, PropagationStats
from medsam2.prompts.parse import Box, ObjectPrompts

if TYPE_CHECKING:
    from medsam2.engine.feature_cache import CachedBackbone
    from medsam2.io.volume import Volume

#: an object's evidence for the sanity warnings: (label, the frames' label map, its confidence per frame)
EvidenceOf = Callable[[int, np.ndarray, dict[int, float]], ObjectEvidence]


def label_map(
    tracks: Sequence[ObjectTrack], shape: tuple[int, int, int], geometry, locked: frozenset[int] = frozenset()
) -> tuple[np.ndarray, dict[int, dict[int, float]]]:
    """The frames' label map (uint8, uint16 past label 255) and each object's confidence per frame.

    Where objects overlap, a ``locked`` one wins; otherwise the one with the higher probability x
    confidence (of two locked ones, the first).
    """
    n_frames, rows, cols = shape
    max_label = max((t.label for t in tracks), default=0)
    labels = np.zeros(shape, dtype=np.uint8 if max_label < 256 else np.uint16)
    confidences: dict[int, dict[int, float]] = {t.label: {} for t in tracks}
    for frame in sorted({f for t in tracks for f in t.frames}):
        best = torch.zeros((rows, cols))
        for track in tracks:
            result = track.frames.get(frame)
            if result is None:
                continue
            foreground, probability = on_frame(result, geometry)
            weight = 2.0 if track.label in locked else probability.clamp(min=1e-6) * max(result.confidence, 1e-3)
            score = torch.where(foreground, weight, torch.zeros(()))
            win = score > best
            labels[frame][win.numpy()] = track.label
            best = torch.maximum(best, score)
            confidences[track.label][frame] = round(result.confidence, 4)
    return labels, confidences


def object_reports(
    tracks: Sequence[ObjectTrack],
    labels_frames: np.ndarray,
    confidences: dict[int, dict[int, float]],
    volume: Volume,
    evidence: EvidenceOf | None = None,
) -> tuple[list[ObjectReport], list[str]]:
    """Each object's report from the frames' label map, and the notes on them in the objects' order:
    an object that nothing was segmented of, and (with ``evidence``) the sanity warnings."""
    reports, notes = [], []
    for track in tracks:
        report = object_report(track, labels_frames, confidences[track.label], volume)
        reports.append(report)
        if not report.slices:
            notes.append(f"label {track.label}: nothing was segmented")
        if evidence is not None:
            notes.extend(sanity_warnings(evidence(track.label, labels_frames, report.confidence_per_slice)))
    return reports, notes


def object_report(track: ObjectTrack, labels_frames: np.ndarray, confidences: dict[int, float], volume: Volume) -> ObjectReport:
    """One object's report: the slices it is on in the label map, its size and its confidence."""
    n = labels_frames.shape[0]
    flat = volume.is_2d
    pixel_mm2 = float(volume.spacing[0] * volume.spacing[1])
    present = np.flatnonzero((labels_frames == track.label).reshape(n, -1).any(axis=1)).tolist()
    voxels = int((labels_frames == track.label).sum())
    per_slice = {f: confidences[f] for f in present}
    values = list(per_slice.values())
    return ObjectReport(
        label=track.label,
        name=track.name,
        slices=present,
        first_slice=present[0] if present else None,
        last_slice=present[-1] if present else None,
        voxels=voxels,
        volume_ml=None if flat else round(voxels * volume.voxel_volume_ml, 3),
        mean_confidence=round(float(np.mean(values)), 4) if values else None,
        min_confidence=round(float(np.min(values)), 4) if values else None,
        confidence_per_slice=per_slice,
        prompted_slices=track.prompted_frames,
        area_mm2=round(voxels * pixel_mm2, 3) if flat and volume.spacing_known else None,
        area_pixels=voxels if flat else None,
    )


def object_evidence(
    prompts: ObjectPrompts, mask: np.ndarray, per_slice: dict[int, float], session: SessionView, probe: Callable | None
) -> ObjectEvidence:
    """What an object's sanity warnings are judged from (``mask``: its frames, bool)."""
    volume = session.volume
    return gather_evidence(
        prompts, mask, per_slice, session.frames, None if volume.is_2d else volume.voxel_volume_ml, probe=probe,
        axis=None if volume.is_2d else session.axis,
    )


class BoxProbes:
    """The model's answer to one box on its frame alone (features from the cache): (confidence,
    mask); kept, so that a result asked for again (each round of a correction loop) decodes nothing."""

    def __init__(self, cache: CachedBackbone, frames, rows: int, cols: int) -> None:
        self.cache = cache
        self.frames = frames
        self.rows, self.cols = rows, cols
        self._answers: dict[tuple, tuple[float, np.ndarray]] = {}

    def __call__(self, box: Box) -> tuple[float, np.ndarray]:
        key = (box.frame, *box.as_tuple())
        if key not in self._answers:
            features = self.cache.encode([self.frames[box.frame]])[0]
            geometry = self.cache.frame_geometry(self.rows, self.cols)
            prediction = self.cache.decode(features, box=geometry.box_to_model(box.as_tuple()))
            mask = geometry.model_to_frame(torch.sigmoid(prediction.logits)).numpy() > 0.5
            self._answers[key] = (float(prediction.confidence), mask)
        return self._answers[key]


def session_timings(stats: PropagationStats, preprocess_seconds: float, work_seconds: float) -> Timings:
    """A session's times: preparing the scan, encoding, decoding, in all."""
    encoded = len(stats.encoded_frames)
    return Timings(
        preprocess_seconds=round(preprocess_seconds, 3),
        encode_seconds=round(stats.encode_seconds, 3),
        decode_seconds=round(stats.decode_seconds, 3),
        total_seconds=round(preprocess_seconds + work_seconds, 3),
        seconds_per_encoded_slice=round(stats.encode_seconds / max(encoded, 1), 4),
    )


def session_report(
    session: SessionView,
    objects: list[ObjectReport],
    notes: list[str],
    stats: PropagationStats,
    timings: Timings,
    corrections: int,
) -> SegmentationReport:
    """The segmentation's report: what ran (backbone, settings), on what (scan, axis, window), its cost and its objects."""
    cache, volume = session.cache, session.volume
    plan = cache.plan
    return SegmentationReport(
        medsam2_version=__version__,
        backbone=cache.name,
        checkpoint=str(cache.checkpoint) if cache.checkpoint else None,
        device=str(cache.device),
        runtime=plan.runtime,
        precision=plan.precision,
        memory=session.engine.memory,
        axis=session.axis,
        window=session.intensity.name,
        input=volume.source,
        size_xyz=list(reversed(volume.shape)),
        spacing_xyz=[float(s) for s in volume.spacing],
        slices_total=session.shape[0],
        slices_encoded=len(stats.encoded_frames),
        decode_calls=stats.decode_calls,
        objects=objects,
        timings=timings,
        warnings=notes,
        feature_cache=cache.stats(),
        corrections=corrections,
        voxel_axis=session.voxel_axis,
        settings=asdict(session.engine.settings),
    )
