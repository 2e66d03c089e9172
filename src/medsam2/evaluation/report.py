"""What ``medsam2 evaluate`` writes: per-structure results, per_case.csv, the summaries (mean, std,
median, ratio to the oracle, Dice per correction round), results.json and the plots."""


from __future__ import annotations

import csv
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medsam2.evaluation.datasets import Dataset
from medsam2.evaluation.interactive import FALL_TOLERANCE, dice_auc, fell, interactive_rounds
from medsam2.evaluation.protocols import EvaluationConfig, structure_slices
from medsam2.io.atomic import atomic_write

PER_CASE_FIELDS = [
    "case", "method", "label", "structure", "dice", "iou", "hd95_mm", "nsd", "prompts", "prompted_slices",
    "slices_decoded", "seconds", "seconds_per_slice", "peak_rss_mb",
    "dice_prompted", "dice_shared", "slices_missed", "slices_extra",
]


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
    #: where the Dice is lost (:class:`SliceExtent`); None for one-prompt queries
    dice_prompted: float | None = None
    dice_shared: float | None = None
    slices_missed: int | None = None
    slices_extra: int | None = None
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


@dataclass(frozen=True)
class SliceExtent:
    """Where a propagated structure loses its Dice, slice by slice.

    Attributes:
        dice_prompted: Dice on the prompted slices that hold the structure (None: no such slice).
        dice_shared: Dice over the slices where both the prediction and the reference have it
            (how well it is followed where it is found; None: no such slice).
        slices_missed: reference slices with no prediction (ended too early, or never reached).
        slices_extra: predicted slices with no reference (ended too late, or leaked).
    """

    dice_prompted: float | None
    dice_shared: float | None
    slices_missed: int
    slices_extra: int


def slice_extent(predicted: np.ndarray, truth: np.ndarray, prompted: list[int]) -> SliceExtent:
    """:class:`SliceExtent` of (frames, rows, cols) bool masks, ``prompted`` the prompted frame indices."""
    in_prediction = predicted.reshape(predicted.shape[0], -1).any(axis=1)
    in_truth = truth.reshape(truth.shape[0], -1).any(axis=1)

    def dice_on(frames: np.ndarray) -> float | None:
        if not frames.any():
            return None
        p, t = predicted[frames], truth[frames]
        return round(2.0 * float((p & t).sum()) / float(p.sum() + t.sum()), 5)

    prompted_frames = np.zeros_like(in_truth)
    prompted_frames[[f for f in prompted if 0 <= f < len(in_truth)]] = True
    return SliceExtent(
        dice_prompted=dice_on(prompted_frames & in_truth),
        dice_shared=dice_on(in_prediction & in_truth),
        slices_missed=int((in_truth & ~in_prediction).sum()),
        slices_extra=int((in_prediction & ~in_truth).sum()),
    )


def slice_dice_by_distance(predicted: np.ndarray, truth: np.ndarray, prompted: list[int]) -> dict[int, list[float]]:
    """(frames, rows, cols) masks -> {distance from the nearest prompted slice: [Dice of each slice]}
    over the slices where the reference has the structure."""
    out: dict[int, list[float]] = {}
    for z in structure_slices(truth):
        if not truth[z].any():
            continue
        distance = int(min(abs(int(z) - p) for p in prompted)) if prompted else -1
        inter = float((predicted[z] & truth[z]).sum())
        out.setdefault(distance, []).append(round(2 * inter / (float(predicted[z].sum()) + float(truth[z].sum())), 5))
    return out


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
            falls = [fell([float(r[f"dice_round_{i}"]) for i in rounds]) for r in group]
            for index in rounds[1:]:
                summary[-1][f"fell_round_{index}"] = sum(case[index - 1] for case in falls)
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
            f"Mean Dice after each round of corrections ({config.correction}); AUC: area under Dice per round (0..{rounds[-1]}); "
            f"fell: cases whose Dice went down in rounds 1..{rounds[-1]} (by more than {FALL_TOLERANCE})",
            "",
            "| method | structure | " + " | ".join(f"round {i}" for i in rounds) + " | AUC | fell | s per correction |",
            "|---|---|" + "---|" * (len(rounds) + 3),
        ]
        for s in interactive:
            cells = " | ".join(f"{s[f'dice_round_{i}_mean']:.4f}" for i in rounds)
            falls = ", ".join(str(s.get(f"fell_round_{i}", "")) for i in rounds[1:])
            auc, cost = f"{s['dice_auc_mean']:.3f}", s["correction_seconds_mean"]
            lines.append(f"| {s['method']} | {s['structure']} | {cells} | {auc} | {falls} | {cost} |")
    return "\n".join(lines) + "\n"


def write_outputs(
    results_dir: Path, rows: list[dict], curves: list[dict], config: EvaluationConfig, notes: list[str], dataset: Dataset
) -> dict:
    """Write per_case.csv, summary.csv, summary.md and results.json (atomically); returns the results."""
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


#: dice_by_distance.png leaves out distances with fewer reference slices than this (a mean of one or
#: two slices at the structures' ends made the curve jump)
MIN_SLICES_PER_DISTANCE = 5


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

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        points = [c for c in curves if c["method"] == method]
        if method == "oracle":  # a box on every slice: every slice is at distance 0, so a line, not a point
            if points:
                level = statistics.fmean(float(c["dice"]) for c in points)
                ax.axhline(level, linestyle="--", color="grey", label=f"oracle: a box on every slice ({len(points)} slices)")
            continue
        distances = sorted({int(c["distance"]) for c in points})
        counts = {d: sum(int(c["distance"]) == d for c in points) for d in distances}
        shown = [d for d in distances if counts[d] >= MIN_SLICES_PER_DISTANCE]
        means = [statistics.fmean(float(c["dice"]) for c in points if int(c["distance"]) == d) for d in shown]
        (line,) = ax.plot(shown, means, marker="o", label=method)
        for d, m in zip(shown, means):
            ax.annotate(str(counts[d]), (d, m), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=6,
                        color=line.get_color())
    ax.set_xlabel("distance from the nearest prompted slice (slices)")
    ax.set_ylabel("mean slice Dice")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(f"How accuracy decays away from the prompt\n(numbers: slices behind each point; "
                 f"distances with fewer than {MIN_SLICES_PER_DISTANCE} slices left out)", fontsize=9)
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



