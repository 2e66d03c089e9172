"""Which slicing axis: one reference box along axial, coronal or sagittal, and multi-view, on every
labelled 3D set in ../shared/data.

Each structure gets the reference box on its middle slice along the mode's axis (``box-mid``:
``evaluation.protocols.middle_slice_box``); every structure of a scan is segmented in one call, as
``evaluate`` does. Multi-view (``engine.multiview.segment_multiview``) starts from the axial box, as a
user who does not know the best axis would, re-prompts along coronal and sagittal from the axial
result (boxed on the slice where its mask is largest, or on its middle slice: both are measured)
and keeps the voxels that two of the three passes agree on. Dice is over the whole volume.

Per set: the mean Dice per mode, the mean of each structure's best single axis (an oracle a user
cannot pick), and how many structures each mode wins (ties count for every tied mode). Then one row
per structure.

    python benchmarks/axes.py [--only ct,mr,lesions,brain,hippocampus] [--hippocampus-cases 10] [--start largest|middle]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from rounds import datasets  # noqa: E402

AXES = ("axial", "coronal", "sagittal")
#: the columns measured per structure: three single axes and multi-view from each start slice
MODES = (*AXES, "multiview-largest", "multiview-middle")
#: what one mode's Dice equal to the best within this counts as a win (a tie)
TIE = 1e-9


@dataclass
class Structure:
    """One structure's Dice per mode (keys of :data:`MODES`)."""

    set_name: str
    case: str
    label: int
    dice: dict[str, float]


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two bool masks (1.0 where both are empty)."""
    total = int(prediction.sum()) + int(reference.sum())
    return 1.0 if total == 0 else 2.0 * float((prediction & reference).sum()) / total


def run_case(segmenter, image: Path, label_path: Path, labels: tuple[int, ...] | None) -> dict[int, dict[str, float]]:
    """label -> {mode: Dice} for one scan."""
    from medsam2 import ObjectPrompts, load_volume
    from medsam2.engine.multiview import segment_multiview
    from medsam2.evaluation.protocols import middle_slice_box
    from medsam2.io.slicing import to_frames, voxel_axis

    volume, reference = load_volume(image), load_volume(label_path).array.astype(np.int64)
    present = [int(v) for v in np.unique(reference) if v != 0]
    wanted = [v for v in (labels or present) if v in present]
    results: dict[str, np.ndarray] = {}
    prompts_per_axis = {}
    for axis in AXES:
        frames = to_frames(reference, voxel_axis(axis, volume.direction))
        prompts_per_axis[axis] = [ObjectPrompts(value, boxes=[middle_slice_box(frames == value)]) for value in wanted]
        results[axis] = segmenter.segment(volume, prompts_per_axis[axis], axis=axis).labels
    for start in ("largest", "middle"):
        fused, per_axis = segment_multiview(segmenter, volume, prompts_per_axis["axial"], axis="axial", start=start)
        if not np.array_equal(per_axis["axial"], results["axial"]):
            print(f"# note: {image.name}: multi-view's axial pass differs from the axial run", file=sys.stderr)
        results[f"multiview-{start}"] = fused
    return {value: {mode: dice(results[mode] == value, reference == value) for mode in MODES} for value in wanted}


def wins(structures: list[Structure], modes: tuple[str, ...]) -> dict[str, int]:
    """How many structures each of ``modes`` wins (Dice within :data:`TIE` of the best of them)."""
    counts = dict.fromkeys(modes, 0)
    for item in structures:
        best = max(item.dice[m] for m in modes)
        for mode in modes:
            counts[mode] += item.dice[mode] >= best - TIE
    return counts


def summary_row(name: str, structures: list[Structure], compared: tuple[str, ...], seconds: float | None) -> str:
    means = " | ".join(f"{np.mean([s.dice[m] for s in structures]):.3f}" for m in MODES)
    oracle = np.mean([max(s.dice[a] for a in AXES) for s in structures])
    won = " | ".join(str(n) for n in wins(structures, compared).values())
    timing = "" if seconds is None else f"{seconds:.0f}"
    return f"| {name} | {len(structures)} | {means} | {oracle:.3f} | {won} | {timing} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ct,mr,lesions,brain,hippocampus")
    parser.add_argument("--hippocampus-cases", type=int, default=10)
    parser.add_argument("--start", choices=("largest", "middle"), default="largest",
                        help="which multi-view start slice the 'wins' columns compare with the single axes")
    parser.add_argument("--cache-mb", type=float, default=6000.0, help="encoder feature cache per scan (shared by the modes)")
    args = parser.parse_args()
    from medsam2 import Segmenter
    from medsam2.backbones.litemedsam import LiteMedSAMBackbone
    from medsam2.engine.feature_cache import CachedBackbone

    backbone = CachedBackbone(LiteMedSAMBackbone(), budget_mb=args.cache_mb)
    segmenter = Segmenter(backbone=backbone)
    compared = (*AXES, f"multiview-{args.start}")
    print(f"# medsam2 slicing axis and multi-view: {machine_line()}")
    print("# one reference box on the middle slice along each axis; multi-view starts from the axial box and fuses "
          "axial + coronal + sagittal passes (2 of 3); 'best axis': mean of each structure's best single axis (oracle); "
          f"wins compare {', '.join(compared)} (ties count for each)")
    print()
    print("| set | structures | " + " | ".join(MODES) + " | best axis (oracle) | " + " | ".join(f"wins {m}" for m in compared) + " | s |")
    print("|---|---|" + "---|" * (len(MODES) + 1 + len(compared) + 1))
    everything: list[Structure] = []
    with tempfile.TemporaryDirectory() as folder:
        sets = datasets(Path(folder), args.hippocampus_cases)
        for name in args.only.split(","):
            pairs, labels = sets[name]
            began = time.perf_counter()
            structures = []
            for image, label in pairs:
                for value, scores in run_case(segmenter, image, label, labels).items():
                    structures.append(Structure(name, image.name, value, scores))
                    print(f"# {name} {image.name} label {value}: " + ", ".join(f"{m} {d:.3f}" for m, d in scores.items()),
                          file=sys.stderr, flush=True)
                backbone.clear()
            everything += structures
            print(summary_row(name, structures, compared, time.perf_counter() - began), flush=True)
        print(summary_row("all", everything, compared, None))
    print()
    print("| set | case | label | " + " | ".join(MODES) + " |")
    print("|---|---|---|" + "---|" * len(MODES))
    for item in everything:
        print(f"| {item.set_name} | {item.case} | {item.label} | " + " | ".join(f"{item.dice[m]:.3f}" for m in MODES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
