"""``medsam2 evaluate``: methods side by side on a labelled dataset with simulated prompts.

Protocols (the prompts a simulated user gives, per structure, from its reference mask):

* ``box-mid``: the bounding box on the slice in the middle of the structure's extent;
* ``box-largest``: the bounding box on the slice where the structure is largest;
* ``click-mid``: one foreground click at the point deepest inside the structure (largest
  distance to its border) on the middle slice;
* ``box-every-K``: a box every K slices of the extent, starting at its first slice;
* ``oneprompt``: the first case is the annotated support (its whole reference mask of each
  structure); every other case is a query segmented with no prompt (``medsam2 oneprompt``). Methods:
  ``confidence`` (the bank admits confident answers), ``none`` (the support alone) and ``oracle``
  (box on every slice of each query).

* ``interactive-N`` (N = 1..10): ``box-mid``, then N rounds in which a simulated annotator corrects
  each structure on its worst slice (``--correction box|click``, see :mod:`medsam2.interactive`);
  Dice is recorded after every round (``dice_round_0..N``), with the area under that curve.

``--jitter P`` moves every box edge by a random whole number of pixels in [-P, P] (seeded).

Methods: ``confidence`` (the confidence memory bank), ``fifo`` (prompted frames plus the last
six), ``none`` (previous slice only) and ``oracle`` (the reference box on every slice: an upper
bound that costs one prompt per slice).
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from medsam2.datasets import Dataset
from medsam2.errors import InputError, OutputError, UsageError
from medsam2.interactive import CORRECTIONS, MAX_ROUNDS, dice_auc, interactive_rounds, run_interactive
from medsam2.io.atomic import atomic_write
from medsam2.io.volume import load_volume, save_mask
from medsam2.metrics import dice, hd95, iou, nsd
from medsam2.peakmem import PeakMemory
from medsam2.prompts import Box, ObjectPrompts, Point
from medsam2.slicing import frame_spacing, to_frames

METHODS = ("confidence", "fifo", "none", "oracle")
_EVERY = re.compile(r"^box-every-(\d+)$")
PER_CASE_FIELDS = [
    "case", "method", "label", "structure", "dice", "iou", "hd95_mm", "nsd", "prompts", "prompted_slices",
    "slices_decoded", "seconds", "seconds_per_slice", "peak_rss_mb",
]


@dataclass(frozen=True)
class EvaluationConfig:
    """What a run measures; a resumed run must have the same."""

    protocol: str = "box-mid"
    methods: tuple[str, ...] = ("confidence", "oracle")
    labels: tuple[int, ...] | None = None
    cases: int | None = None
    seed: int = 0
    jitter: int = 0
    nsd_tolerance_mm: float = 2.0
    axis: str = "axial"
    window: str = "auto"
    correction: str = "box"


def check_config(config: EvaluationConfig) -> None:
    """Raises UsageError for an unknown protocol or method."""
    known = config.protocol in ("box-mid", "box-largest", "click-mid", "oneprompt") or _EVERY.match(config.protocol)
    rounds = interactive_rounds(config.protocol)
    if not known and rounds is None:
        raise UsageError(
            f"unknown protocol '{config.protocol}'; choose box-mid, box-largest, click-mid, box-every-K, oneprompt or interactive-N"
        )
    if rounds is not None and not 1 <= rounds <= MAX_ROUNDS:
        raise UsageError(f"--protocol interactive-N takes N from 1 to {MAX_ROUNDS} (got {rounds})")
    if config.correction not in CORRECTIONS:
        raise UsageError(f"unknown correction '{config.correction}'; choose {' or '.join(CORRECTIONS)}")
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise UsageError(f"unknown method {unknown[0] if unknown else '(none)'}; choose from {', '.join(METHODS)}")
    if config.protocol == "oneprompt" and "fifo" in config.methods:
        raise UsageError("method fifo does not apply to --protocol oneprompt; choose from confidence, none, oracle")
    if config.jitter < 0:
        raise UsageError("--jitter must be 0 or more pixels")


def _extent(reference: np.ndarray) -> np.ndarray:
    return np.flatnonzero(reference.reshape(reference.shape[0], -1).any(axis=1))


def _box_on(reference: np.ndarray, frame: int, rng: np.random.Generator, jitter: int) -> Box:
    rows, cols = np.nonzero(reference[frame])
    x0, y0, x1, y1 = (int(v) for v in (cols.min(), rows.min(), cols.max(), rows.max()))
    if jitter:
        x0, y0, x1, y1 = (v + int(rng.integers(-jitter, jitter + 1)) for v in (x0, y0, x1, y1))
    height, width = reference.shape[1:3]
    x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1, 0), width - 1)))
    y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1, 0), height - 1)))
    if x1 == x0:
        x1, x0 = (x0 + 1, x0) if x0 + 1 < width else (x0, x0 - 1)
    if y1 == y0:
        y1, y0 = (y0 + 1, y0) if y0 + 1 < height else (y0, y0 - 1)
    return Box(frame, x0, y0, x1, y1)


def simulate_prompts(reference: np.ndarray, protocol: str, rng: np.random.Generator, jitter: int = 0) -> ObjectPrompts:
    """Prompts for one structure from its (frames, rows, cols) bool reference (label set later)."""
    slices = _extent(reference)
    middle = int((slices[0] + slices[-1]) // 2)
    if not reference[middle].any():  # a structure with a gap at its middle: nearest slice holding it
        middle = int(slices[np.argmin(np.abs(slices - middle))])
    if protocol == "box-mid" or interactive_rounds(protocol) is not None:
        return ObjectPrompts(0, boxes=[_box_on(reference, middle, rng, jitter)])
    if protocol == "box-largest":
        areas = reference.reshape(reference.shape[0], -1).sum(axis=1)
        return ObjectPrompts(0, boxes=[_box_on(reference, int(np.argmax(areas)), rng, jitter)])
    if protocol == "click-mid":
        depth = ndimage.distance_transform_edt(np.pad(reference[middle], 1))[1:-1, 1:-1]
        row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
        return ObjectPrompts(0, points=[Point(middle, float(col), float(row))])
    if protocol == "oracle":
        return ObjectPrompts(0, boxes=[_box_on(reference, int(z), rng, 0) for z in slices])
    match = _EVERY.match(protocol)
    if match:
        step = max(1, int(match.group(1)))
        frames = [int(z) for z in range(int(slices[0]), int(slices[-1]) + 1, step) if reference[z].any()]
        return ObjectPrompts(0, boxes=[_box_on(reference, z, rng, jitter) for z in frames])
    raise UsageError(f"unknown protocol '{protocol}'")


def middle_slice_box(reference: np.ndarray) -> Box:
    """The ``box-mid`` prompt without jitter: the reference's bounding box on the middle slice of
    its extent. ``reference`` is (frames, rows, cols) bool with at least one foreground voxel."""
    return simulate_prompts(reference, "box-mid", np.random.default_rng(0)).boxes[0]


@dataclass
class StructureResult:
    """One structure of one case under one method."""

    case: str
    method: str
    label: int
    structure: str
    dice: float
    iou: float
    hd95_mm: float
    nsd: float
    prompts: int
    prompted_slices: str
    slices_decoded: int
    seconds: float
    seconds_per_slice: float
    peak_rss_mb: float
    #: Dice per reference slice by distance (in slices) from the nearest prompted slice
    dice_by_distance: dict[int, list[float]] | None = None
    #: interactive protocols: Dice after round 0..N, mean seconds and slices re-decoded per correction
    dice_rounds: list[float] | None = None
    correction_seconds: float | None = None
    redecoded_per_correction: float | None = None

    def row(self) -> dict:
        """The per_case.csv row: Dice per round as dice_round_0..N, and the area under that curve."""
        interactive = ("correction_seconds", "redecoded_per_correction")
        data = {k: v for k, v in asdict(self).items() if k not in ("dice_by_distance", "dice_rounds", *interactive)}
        if self.dice_rounds is not None:
            data.update({k: getattr(self, k) for k in interactive})
            data.update({f"dice_round_{i}": value for i, value in enumerate(self.dice_rounds)})
            data["dice_auc"] = round(dice_auc(self.dice_rounds), 5)
        return data


def slice_dice_by_distance(predicted: np.ndarray, truth: np.ndarray, prompted: list[int]) -> dict[int, list[float]]:
    """(frames, rows, cols) masks -> {distance from the nearest prompted slice: [Dice of each slice]}
    over the slices where the reference has the structure."""
    out: dict[int, list[float]] = {}
    for z in _extent(truth):
        if not truth[z].any():
            continue
        distance = int(min(abs(int(z) - p) for p in prompted)) if prompted else -1
        inter = float((predicted[z] & truth[z]).sum())
        out.setdefault(distance, []).append(round(2 * inter / (float(predicted[z].sum()) + float(truth[z].sum())), 5))
    return out


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
    loaded = _load_case(case)
    if loaded is None:
        return [], [f"{case.case_id}: image and label differ in shape; skipped"]
    volume, reference = loaded
    labels, notes = _wanted_labels(reference, config, case.case_id)
    if not labels:
        return [], notes
    frames_reference = to_frames(reference, config.axis)
    spacing = frame_spacing(volume.spacing, config.axis)
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
        segmenter = segmenter_for("confidence" if method == "oracle" else method)
        start = time.perf_counter()
        traces = {}
        with PeakMemory() as memory:
            if rounds is not None and method != "oracle":
                session = segmenter.open(volume, axis=config.axis, window=config.window)
                for obj in objects:
                    session.add(obj)
                traces = run_interactive(session, frames_reference, labels, rounds, config.correction)
                outcome = session.result()
            else:
                outcome = segmenter.segment(volume, objects, axis=config.axis, window=config.window)
        seconds = time.perf_counter() - start
        frames_prediction = to_frames(outcome.labels, config.axis)
        if predictions_dir is not None:
            save_mask(outcome.labels, volume, predictions_dir / method / f"{case.case_id}.nii.gz", overwrite=True)
        encoded = max(outcome.report.slices_encoded, 1)
        for obj, report in zip(objects, outcome.report.objects):
            predicted = frames_prediction == obj.label
            truth = frames_reference == obj.label
            trace = traces.get(obj.label)
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
                    dice_rounds=trace.dice_per_round if trace else None,
                    correction_seconds=round(float(np.mean(trace.seconds)), 4) if trace and trace.seconds else None,
                    redecoded_per_correction=round(float(np.mean(trace.redecoded)), 2) if trace and trace.redecoded else None,
                )
            )
    return results, notes


def _load_case(case) -> tuple | None:
    """(image volume, (z, y, x) reference labels) of a case; None when their shapes differ."""
    volume = load_volume(case.image)
    reference_volume = load_volume(case.label)
    if reference_volume.shape != volume.shape:
        return None
    reference = np.asarray(reference_volume.array if reference_volume.array.ndim == 3 else reference_volume.array[..., 0])
    return volume, reference


def evaluate_oneprompt(
    cases: list, segmenter_for, config: EvaluationConfig, names: dict[int, str], predictions_dir: Path | None
) -> tuple[list[StructureResult], list[str]]:
    """The ``oneprompt`` protocol: cases[0] is the support, the others are queries with no prompt."""
    from medsam2.oneprompt import OnePromptSettings
    from medsam2.oneprompt_run import support_from_arrays

    if len(cases) < 2:
        return [], ["oneprompt needs at least two cases (a support and a query)"]
    loaded = _load_case(cases[0])
    if loaded is None:
        return [], [f"{cases[0].case_id}: image and label differ in shape; the support cannot be used"]
    support, support_reference = loaded
    labels, notes = _wanted_labels(support_reference, config, f"{cases[0].case_id} (support)")
    queries = []
    for case in cases[1:]:
        query = _load_case(case)
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
                truth = to_frames(reference == label, config.axis)
                predicted = to_frames(outcome.labels > 0, config.axis)
                if predictions_dir is not None:
                    suffix = ".png" if volume.is_2d else ".nii.gz"
                    target = predictions_dir / method / f"{case.case_id}_label{label}{suffix}"
                    save_mask((outcome.labels * label).astype(reference.dtype), volume, target, overwrite=True)
                spacing = frame_spacing(volume.spacing, config.axis)
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


def summarise(rows: list[dict]) -> list[dict]:
    """Mean, std and median per method and structure, and the ratio of each mean Dice to the oracle's."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["structure"]), []).append(row)
    oracle = {s: statistics.fmean(float(r["dice"]) for r in g) for (m, s), g in groups.items() if m == "oracle"}
    summary = []
    for (method, structure), group in sorted(groups.items()):
        values = [float(r["dice"]) for r in group]
        nsds = [float(r["nsd"]) for r in group]
        hds = [float(r["hd95_mm"]) for r in group]
        mean = statistics.fmean(values)
        summary.append(
            {
                "method": method,
                "structure": structure,
                "cases": len(group),
                "dice_mean": round(mean, 4),
                "dice_std": round(statistics.pstdev(values), 4),
                "dice_median": round(statistics.median(values), 4),
                "nsd_mean": round(statistics.fmean(nsds), 4),
                "hd95_median_mm": round(statistics.median(hds), 3),
                "ratio_to_oracle": round(mean / oracle[structure], 4) if oracle.get(structure) else None,
            }
        )
        rounds = sorted(int(k.rsplit("_", 1)[1]) for k in group[0] if k.startswith("dice_round_") and group[0][k] not in ("", None))
        for index in rounds:
            summary[-1][f"dice_round_{index}_mean"] = round(statistics.fmean(float(r[f"dice_round_{index}"]) for r in group), 4)
        if rounds:
            summary[-1]["dice_auc_mean"] = round(statistics.fmean(float(r["dice_auc"]) for r in group), 4)
            costs = [float(r["correction_seconds"]) for r in group if r.get("correction_seconds") not in ("", None)]
            summary[-1]["correction_seconds_mean"] = round(statistics.fmean(costs), 4) if costs else None
    return summary


def per_case_fields(config: EvaluationConfig) -> list[str]:
    """per_case.csv's columns; interactive protocols add Dice per round, its area and correction costs."""
    rounds = interactive_rounds(config.protocol)
    if rounds is None:
        return list(PER_CASE_FIELDS)
    return PER_CASE_FIELDS + [f"dice_round_{i}" for i in range(rounds + 1)] + ["dice_auc", "correction_seconds", "redecoded_per_correction"]


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write, ".csv")


def _summary_markdown(summary: list[dict], config: EvaluationConfig) -> str:
    lines = [
        f"# medsam2 evaluate: protocol {config.protocol}, jitter {config.jitter} px, NSD tolerance {config.nsd_tolerance_mm} mm",
        "",
        "| method | structure | cases | Dice mean | Dice std | Dice median | NSD mean | HD95 median (mm) | / oracle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        ratio = "" if s["ratio_to_oracle"] is None else f"{s['ratio_to_oracle']:.3f}"
        lines.append(
            f"| {s['method']} | {s['structure']} | {s['cases']} | {s['dice_mean']:.4f} | {s['dice_std']:.4f} | "
            f"{s['dice_median']:.4f} | {s['nsd_mean']:.4f} | {s['hd95_median_mm']} | {ratio} |"
        )
    interactive = [s for s in summary if "dice_auc_mean" in s]
    if interactive:
        rounds = sorted(int(k.split("_")[2]) for k in interactive[0] if k.startswith("dice_round_"))
        lines += [
            "",
            f"Mean Dice after each round of corrections ({config.correction}); AUC: area under Dice per round (0..{rounds[-1]})",
            "",
            "| method | structure | " + " | ".join(f"round {i}" for i in rounds) + " | AUC | s per correction |",
            "|---|---|" + "---|" * (len(rounds) + 2),
        ]
        for s in interactive:
            cells = " | ".join(f"{s[f'dice_round_{i}_mean']:.4f}" for i in rounds)
            lines.append(f"| {s['method']} | {s['structure']} | {cells} | {s['dice_auc_mean']:.3f} | {s['correction_seconds_mean']} |")
    return "\n".join(lines) + "\n"


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
) -> dict:
    """Evaluate every case; writes per_case.csv, summary.csv, summary.md and results.json.

    Arguments:
        segmenter_for: memory kind -> a Segmenter (built once per kind by the caller).
        after_case: called after each case, e.g. to clear a feature cache that the methods share.
    """
    check_config(config)
    rows, curves = prepare_results_dir(results_dir, config, resume, overwrite)
    done = {r["case"] for r in rows}
    cases = dataset.cases[: config.cases] if config.cases else dataset.cases
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
    for case in tqdm(cases, desc="cases", unit="case", disable=not progress):
        if case.case_id in done:
            continue
        try:
            results, case_notes = evaluate_case(case, segmenter_for, config, dataset.label_names, predictions_dir)
        except InputError as exc:
            results, case_notes = [], [f"{case.case_id}: {exc}; skipped"]
        finally:
            if after_case is not None:
                after_case()
        notes.extend(case_notes)
        for result in results:
            curves.extend(
                {"case": result.case, "method": result.method, "structure": result.structure, "distance": d, "dice": v}
                for d, values in (result.dice_by_distance or {}).items() for v in values
            )
            rows.append(result.row())
        _write_outputs(results_dir, rows, curves, config, notes, dataset)  # after every case: a run can resume
    if not rows:
        raise InputError("no structure could be evaluated: " + ("; ".join(notes[:3]) or "no case"))
    results = _write_outputs(results_dir, rows, curves, config, notes, dataset)
    write_plots(results_dir, rows, curves)
    return results


def _write_outputs(
    results_dir: Path, rows: list[dict], curves: list[dict], config: EvaluationConfig, notes: list[str], dataset: Dataset
) -> dict:
    summary = summarise(rows) if rows else []
    _write_csv(results_dir / "per_case.csv", rows, per_case_fields(config))
    if summary:
        _write_csv(results_dir / "summary.csv", summary, list(summary[0]))
    atomic_write(results_dir / "summary.md", lambda tmp: tmp.write_text(_summary_markdown(summary, config)), ".md")
    results = {
        "config": asdict(config),
        "dataset": str(dataset.root),
        "layout": dataset.layout,
        "notes": notes,
        "summary": summary,
        "per_case": rows,
        "dice_by_distance": curves,
    }
    atomic_write(results_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)), ".json")
    return results


def write_plots(results_dir: Path, rows: list[dict], curves: list[dict]) -> None:
    """``dice_boxplot.png`` (Dice per method and structure) and ``dice_by_distance.png`` (mean
    slice Dice against the distance from the nearest prompted slice, per method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r["method"] for r in rows})
    structures = sorted({r["structure"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(structures) * len(methods)), 4))
    data, labels = [], []
    for structure in structures:
        for method in methods:
            data.append([float(r["dice"]) for r in rows if r["method"] == method and r["structure"] == structure])
            labels.append(f"{structure}\n{method}")
    ax.boxplot(data)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1.02)
    ax.set_title("Dice per method and structure")
    fig.tight_layout()
    atomic_write(results_dir / "dice_boxplot.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110), ".png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        points = [c for c in curves if c["method"] == method]
        distances = sorted({int(c["distance"]) for c in points})
        means = [statistics.fmean(float(c["dice"]) for c in points if int(c["distance"]) == d) for d in distances]
        ax.plot(distances, means, marker="o", label=method)
    ax.set_xlabel("distance from the nearest prompted slice (slices)")
    ax.set_ylabel("mean slice Dice")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("How accuracy decays away from the prompt")
    fig.tight_layout()
    atomic_write(results_dir / "dice_by_distance.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110), ".png")
    plt.close(fig)

    rounds = sorted(int(k.rsplit("_", 1)[1]) for k in (rows[0] if rows else {}) if k.startswith("dice_round_"))
    if rounds:
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in methods:
            for structure in structures:
                group = [r for r in rows if (r["method"], r["structure"]) == (method, structure) and r.get("dice_round_0") is not None]
                if group:
                    means = [statistics.fmean(float(r[f"dice_round_{i}"]) for r in group) for i in rounds]
                    ax.plot(rounds, means, marker="o", label=f"{method}: {structure}")
        ax.set_xlabel("round of corrections (0: the first propagation)")
        ax.set_ylabel("mean Dice")
        ax.set_xticks(rounds)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        ax.set_title("Dice after each correction round")
        fig.tight_layout()
        atomic_write(results_dir / "dice_by_round.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110), ".png")
        plt.close(fig)


__all__ = ["METHODS", "EvaluationConfig", "middle_slice_box", "run_evaluation", "simulate_prompts", "summarise"]
