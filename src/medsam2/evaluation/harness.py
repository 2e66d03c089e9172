"""``medsam2 evaluate``: every method on every case of a labelled dataset with simulated prompts
(:mod:`medsam2.evaluation.protocols`), results written after every case so that a run can resume
(:mod:`medsam2.evaluation.report`)."""


from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medsam2.backbones.base import Backbone
from medsam2.engine.feature_cache import CachedBackbone
from medsam2.engine.jobs import provenance_of
from medsam2.engine.litemedsam_settings import PropagationSettings
from medsam2.engine.options import ModelOptions
from medsam2.engine.segmenter import Segmenter
from medsam2.errors import InputError, OutputError, UsageError
from medsam2.evaluation.datasets import Dataset
from medsam2.evaluation.interactive import interactive_rounds, run_interactive
from medsam2.evaluation.metrics import dice, hd95, iou, nsd
from medsam2.evaluation.protocols import MEMORY_OF_METHOD, EvaluationConfig, check_config, simulate_prompts
from medsam2.evaluation.report import StructureResult, slice_dice_by_distance, slice_extent, write_outputs, write_plots
from medsam2.io.formats import DICOM_KINDS, label_format
from medsam2.io.readers import load_volume
from medsam2.io.slicing import frame_spacing, from_frames, to_frames, voxel_axis
from medsam2.io.volume import suffix_of
from medsam2.io.writers import save_mask
from medsam2.prompts.parse import ObjectPrompts
from medsam2.reporting.peakmem import PeakMemory


class MethodSegmenters:
    """One :class:`~medsam2.engine.segmenter.Segmenter` per memory rule over one shared feature cache, so
    that the methods of a case encode each slice once; pass it as ``segmenter_for`` and its
    :meth:`clear` as ``after_case`` to :func:`run_evaluation`.

    Arguments:
        make_backbone: builds the backbone at the first call (a run with nothing to do loads no model).
        settings: the engine's settings for every method (None: the measured defaults).
    """

    def __init__(self, make_backbone: Callable[[], Backbone], settings: PropagationSettings | None = None) -> None:
        self._make_backbone = make_backbone
        self._settings = settings
        self._cache: CachedBackbone | None = None
        self._segmenters: dict[str, Segmenter] = {}

    @property
    def backbone(self) -> CachedBackbone:
        """The shared, cached backbone (built on first use)."""
        if self._cache is None:
            self._cache = CachedBackbone(self._make_backbone())
        return self._cache

    def __call__(self, memory: str) -> Segmenter:
        if memory not in self._segmenters:
            self._segmenters[memory] = Segmenter(backbone=self.backbone, memory=memory, settings=self._settings)
        return self._segmenters[memory]

    def clear(self) -> None:
        """Drop the cached features (between cases)."""
        if self._cache is not None:
            self._cache.clear()


@dataclass(frozen=True)
class EvaluateWorker:
    """A worker of a :mod:`medsam2.batch.pool` pool that evaluates whole cases with its own model
    (``evaluate --workers N`` / ``--ray``); every method of a case shares that worker's features."""

    model: ModelOptions
    config: EvaluationConfig
    names: dict[int, str]
    predictions_dir: Path | None

    def build(self) -> MethodSegmenters:
        return MethodSegmenters(self.model.build_backbone, self.model.settings)

    def run(self, segmenters: MethodSegmenters, case) -> tuple[str, list[StructureResult], list[str]]:
        results, notes = _evaluate_here(case, segmenters, self.config, self.names, self.predictions_dir, segmenters.clear)
        return case.case_id, results, notes

    def died(self, case, reason: str) -> tuple[str, list[StructureResult], list[str]]:
        return case.case_id, [], [f"{case.case_id}: {reason}; skipped"]


def boxed_slices_only(labels: np.ndarray, objects: list[ObjectPrompts], axis: str) -> np.ndarray:
    """The oracle's answer: a (z, y, x) label map with each object's label kept only on the slices
    (along ``axis``) that hold one of its boxes. The engine would carry the last box's mask past the
    structure's end; a user who boxes every slice has also said where the structure is absent."""
    frames = to_frames(labels, axis).copy()
    for obj in objects:
        boxed = np.zeros(frames.shape[0], dtype=bool)
        boxed[[b.frame for b in obj.boxes]] = True
        frames[(frames == obj.label) & ~boxed[:, None, None]] = 0
    return from_frames(frames, axis)


def _wanted_labels(reference: np.ndarray, config: EvaluationConfig, case_name: str) -> tuple[list[int], list[str]]:
    """Labels to evaluate in a reference (``--labels`` or every non-zero value) and notes for the asked ones it lacks."""
    present = [int(v) for v in np.unique(reference) if v != 0]
    wanted = list(config.labels) if config.labels else present
    notes = [f"{case_name}: label {v} not found; skipped" for v in wanted if v not in present]
    return [v for v in wanted if v in present], notes


def evaluate_case(
    case, segmenter_for, config: EvaluationConfig, names: dict[int, str], predictions_dir: Path | None
) -> tuple[list[StructureResult], list[str]]:
    """Run every method on one case; returns results and notes (skipped structures)."""
    loaded = load_case(case)
    if loaded is None:
        return [], [f"{case.case_id}: image and label differ in shape; skipped"]
    volume, reference = loaded
    labels, notes = _wanted_labels(reference, config, case.case_id)
    if not labels:
        return [], notes
    axis = voxel_axis(config.axis, volume.direction)
    frames_reference = to_frames(reference, axis)
    spacing = frame_spacing(volume.spacing, axis)
    rng = np.random.default_rng([config.seed, zlib.crc32(case.case_id.encode())])
    rounds = interactive_rounds(config.protocol)
    prompts = {}
    for label in labels:
        simulated = simulate_prompts(frames_reference == label, config.protocol, rng, config.jitter)
        prompts[label] = simulated
    results = []
    for method in config.methods:
        objects = []
        for label in labels:
            source = simulate_prompts(frames_reference == label, "oracle", rng) if method == "oracle" else prompts[label]
            objects.append(ObjectPrompts(label, names.get(label), boxes=list(source.boxes), points=list(source.points)))
        segmenter = segmenter_for(MEMORY_OF_METHOD.get(method, method))
        start = time.perf_counter()
        traces = {}
        with PeakMemory() as memory:
            if rounds is not None and method != "oracle":
                session = segmenter.open(volume, axis=config.axis, window=config.window)
                for obj in objects:
                    session.add(obj)
                traces = run_interactive(session, frames_reference, labels, rounds, config.correction, adapt=method == "adapt")
                outcome = session.result()
            else:
                outcome = segmenter.segment(volume, objects, axis=config.axis, window=config.window)
        seconds = time.perf_counter() - start
        labels_out = outcome.labels
        if method == "oracle":
            labels_out = boxed_slices_only(labels_out, objects, axis)
        frames_prediction = to_frames(labels_out, axis)
        if predictions_dir is not None:
            save_prediction(
                labels_out, volume, predictions_dir / method, case.case_id, config.prediction_format, names, provenance_of(outcome)
            )
        encoded = max(outcome.report.slices_encoded, 1)
        for obj, report in zip(objects, outcome.report.objects):
            predicted = frames_prediction == obj.label
            truth = frames_reference == obj.label
            trace = traces.get(obj.label)
            extent = slice_extent(predicted, truth, report.prompted_slices)
            results.append(
                StructureResult(
                    case=case.case_id,
                    method=method,
                    label=obj.label,
                    structure=names.get(obj.label, f"label_{obj.label}"),
                    dice=round(dice(predicted, truth), 5),
                    iou=round(iou(predicted, truth), 5),
                    hd95_mm=round(hd95(predicted, truth, spacing), 3),
                    nsd=round(nsd(predicted, truth, spacing, config.nsd_tolerance_mm), 5),
                    prompts=len(obj.boxes) + len(obj.points),
                    prompted_slices=" ".join(str(f) for f in report.prompted_slices),
                    slices_decoded=len(report.confidence_per_slice),
                    seconds=round(seconds, 3),
                    seconds_per_slice=round(seconds / encoded, 4),
                    peak_rss_mb=memory.peak_mb,
                    dice_by_distance=slice_dice_by_distance(predicted, truth, report.prompted_slices),
                    **asdict(extent),
                    dice_rounds=trace.dice_per_round if trace else None,
                    correction_seconds=round(float(np.mean(trace.seconds)), 4) if trace and trace.seconds else None,
                    redecoded_per_correction=round(float(np.mean(trace.redecoded)), 2) if trace and trace.redecoded else None,
                )
            )
    return results, notes


def save_prediction(
    labels: np.ndarray, volume, folder: Path, stem: str, format: str, names: dict[int, str], provenance=None
) -> Path:
    """Write one method's label map (z, y, x) of one case as ``folder/stem.SUFFIX`` in ``format``
    (a DICOM SEG or RT-STRUCT names its structures and ``provenance``, the model that made it)."""
    chosen = None if format == "auto" else label_format(format)
    suffix = chosen.suffix if chosen else (".png" if volume.is_2d else ".nii.gz")
    present = {int(v): names.get(int(v)) for v in np.unique(labels) if v > 0}
    return save_mask(
        labels, volume, folder / f"{stem}{suffix}", overwrite=True, names=present,
        dicom_kind=(chosen.dicom_kind if chosen else None) or DICOM_KINDS[0], provenance=provenance,
    )


def check_prediction_format(cases: list, format: str) -> None:
    """A DICOM prediction references its case's DICOM series: refuse, before any work, a case that is not one.

    Raises:
        UsageError: a case whose image is not a DICOM series folder or file.
    """
    if format == "auto" or not label_format(format).needs_dicom_input:
        return
    for case in cases:
        if not (case.image.is_dir() or suffix_of(case.image) == ".dcm"):
            raise UsageError(
                f"--format {format} writes predictions that reference each case's DICOM series, and {case.case_id}'s image "
                f"{case.image.name} is not DICOM; use --format auto or seg-nrrd"
            )


def _evaluate_here(case, segmenter_for, config, names, predictions_dir, after_case) -> tuple[list[StructureResult], list[str]]:
    """One case in this process: an unreadable case becomes a note; ``after_case`` runs in any event."""
    try:
        return evaluate_case(case, segmenter_for, config, names, predictions_dir)
    except InputError as exc:
        return [], [f"{case.case_id}: {exc}; skipped"]
    finally:
        if after_case is not None:
            after_case()


def load_case(case) -> tuple | None:
    """(image volume, (z, y, x) reference labels) of a case; None when their shapes differ."""
    volume = load_volume(case.image)
    from medsam2.io.dicom_seg import is_dicom_seg, read_dicom_seg

    if is_dicom_seg(case.label):  # a DICOM SEG of the case's series: read on its instances
        return volume, read_dicom_seg(case.label, volume)
    reference_volume = load_volume(case.label)
    if reference_volume.shape != volume.shape:
        return None
    reference = np.asarray(reference_volume.array if reference_volume.array.ndim == 3 else reference_volume.array[..., 0])
    return volume, reference


def evaluate_oneprompt(
    cases: list, segmenter_for, config: EvaluationConfig, names: dict[int, str], predictions_dir: Path | None
) -> tuple[list[StructureResult], list[str]]:
    """The ``oneprompt`` protocol: cases[0] is the support, the others are queries with no prompt."""
    from medsam2.engine.oneprompt.locate import OnePromptSettings
    from medsam2.engine.oneprompt.run import support_from_arrays

    if len(cases) < 2:
        return [], ["oneprompt needs at least two cases (a support and a query)"]
    loaded = load_case(cases[0])
    if loaded is None:
        return [], [f"{cases[0].case_id}: image and label differ in shape; the support cannot be used"]
    support, support_reference = loaded
    labels, notes = _wanted_labels(support_reference, config, f"{cases[0].case_id} (support)")
    queries = []
    for case in cases[1:]:
        query = load_case(case)
        if query is None:
            notes.append(f"{case.case_id}: image and label differ in shape; skipped")
        else:
            queries.append((case, *query))
    results: list[StructureResult] = []
    for label in labels:
        structure = names.get(label, f"label_{label}")
        for method in config.methods:
            if method == "oracle":
                for case, _volume, reference in queries:
                    if not (reference == label).any():
                        continue
                    single = EvaluationConfig(**{**asdict(config), "protocol": "box-mid", "methods": ("oracle",), "labels": (label,)})
                    case_results, _ = evaluate_case(case, segmenter_for, single, names, None)
                    results.extend(replace(r, dice_by_distance=None) for r in case_results)
                continue
            settings = OnePromptSettings()
            if method == "none":  # the support only: nothing else is admitted to the bank
                settings = replace(settings, bank=replace(settings.bank, admit=1.01))
            segmenter = segmenter_for("confidence")
            start = time.perf_counter()
            with PeakMemory() as memory:
                run = segmenter.one_prompt(
                    *support_from_arrays(support, support_reference == label, cases[0].case_id),
                    [volume for _, volume, _ in queries], window=config.window, settings=settings,
                )
            seconds_each = (time.perf_counter() - start) / max(len(queries), 1)
            for (case, volume, reference), outcome in zip(queries, run.queries):
                # one-prompt queries are taken along k (oneprompt.run), whatever --axis says
                truth = to_frames(reference == label, "k")
                predicted = to_frames(outcome.labels > 0, "k")
                if predictions_dir is not None:
                    save_prediction(
                        (outcome.labels * label).astype(reference.dtype), volume, predictions_dir / method,
                        f"{case.case_id}_label{label}", config.prediction_format, names,
                    )
                spacing = frame_spacing(volume.spacing, "k")
                results.append(
                    StructureResult(
                        case=case.case_id, method=method, label=label, structure=structure,
                        dice=round(dice(predicted, truth), 5), iou=round(iou(predicted, truth), 5),
                        hd95_mm=round(hd95(predicted, truth, spacing), 3),
                        nsd=round(nsd(predicted, truth, spacing, config.nsd_tolerance_mm), 5),
                        prompts=0, prompted_slices="", slices_decoded=int(predicted.reshape(predicted.shape[0], -1).any(axis=1).sum()),
                        seconds=round(seconds_each, 3), seconds_per_slice=round(outcome.seconds / max(volume.shape[0], 1), 4),
                        peak_rss_mb=memory.peak_mb,
                    )
                )
    return results, notes


def prepare_results_dir(results_dir: Path, config: EvaluationConfig, resume: bool, overwrite: bool) -> tuple[list[dict], list[dict]]:
    """Create or check RESULTS_DIR; returns the per-case rows and Dice-by-distance rows of a run
    being resumed.

    Raises:
        OutputError: the folder holds another run's results and neither resume nor overwrite
            was asked for, or a resumed run's settings differ.
    """
    results_json = results_dir / "results.json"
    if results_dir.exists() and not results_dir.is_dir():
        raise OutputError(f"{results_dir} exists and is not a folder")
    if results_json.exists():
        previous = json.loads(results_json.read_text())
        if resume:
            if previous.get("config") != json.loads(json.dumps(asdict(config))):
                raise OutputError(f"{results_dir} holds a run with other settings; use another folder or --overwrite")
            return list(previous.get("per_case", [])), list(previous.get("dice_by_distance", []))
        if not overwrite:
            raise OutputError(f"{results_dir} holds results of another run; pass --resume to continue it or --overwrite")
    results_dir.mkdir(parents=True, exist_ok=True)
    return [], []


def run_evaluation(
    dataset: Dataset,
    results_dir: Path,
    config: EvaluationConfig,
    segmenter_for,
    resume: bool = False,
    overwrite: bool = False,
    save_predictions: bool = False,
    progress: bool = False,
    after_case: Callable[[], None] | None = None,
    make_pool: Callable | None = None,
    model: ModelOptions | None = None,
) -> dict:
    """Evaluate every case; writes per_case.csv, summary.csv, summary.md and results.json.

    Arguments:
        segmenter_for: memory kind -> a Segmenter (built once per kind by the caller).
        after_case: called after each case, e.g. to clear a feature cache that the methods share.
        make_pool: worker spec -> a :mod:`medsam2.batch.pool` pool to run the cases in (its
            workers build ``model``); results are written as each case finishes, in any order.
            The one-prompt protocol is one unit and runs here.
    """
    check_config(config)
    cases = dataset.cases[: config.cases] if config.cases else dataset.cases
    if save_predictions:
        check_prediction_format(cases, config.prediction_format)
    rows, curves = prepare_results_dir(results_dir, config, resume, overwrite)
    done = {r["case"] for r in rows}
    notes = list(dataset.skipped)
    predictions_dir = results_dir / "predictions" if save_predictions else None
    if predictions_dir is not None:
        for method in config.methods:
            (predictions_dir / method).mkdir(parents=True, exist_ok=True)
    if config.protocol == "oneprompt":
        # queries depend on each other through the bank: the run is one unit (resume redoes it unless finished)
        cases = [] if done else cases
        if cases:
            try:
                results, case_notes = evaluate_oneprompt(cases, segmenter_for, config, dataset.label_names, predictions_dir)
            finally:
                if after_case is not None:
                    after_case()
            notes.extend(case_notes)
            rows.extend(r.row() for r in results)
        cases = []
    todo = [case for case in cases if case.case_id not in done]
    pool = None
    if make_pool is not None and todo:
        pool = make_pool(EvaluateWorker(model or ModelOptions(), config, dataset.label_names, predictions_dir))
        finished = ((c.outcome[1], c.outcome[2]) for c in pool.run(todo))
    else:
        finished = (_evaluate_here(case, segmenter_for, config, dataset.label_names, predictions_dir, after_case) for case in todo)
    for results, case_notes in tqdm(finished, total=len(todo), desc="cases", unit="case", disable=not progress):
        notes.extend(case_notes)
        for result in results:
            curves.extend(
                {"case": result.case, "method": result.method, "structure": result.structure, "distance": d, "dice": v}
                for d, values in (result.dice_by_distance or {}).items() for v in values
            )
            rows.append(result.row())
        write_outputs(results_dir, rows, curves, config, notes, dataset)  # after every case: a run can resume
    if pool is not None and hasattr(pool, "close"):
        pool.close()
    if not rows:
        raise InputError("no structure could be evaluated: " + ("; ".join(notes[:3]) or "no case"))
    results = write_outputs(results_dir, rows, curves, config, notes, dataset)
    write_plots(results_dir, rows, curves)
    return results


