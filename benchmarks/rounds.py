"""Rounds that never fall: the interactive protocol on every labelled 3D set in ../shared/data.

Each structure gets the ``box-mid`` prompt (the reference box on its middle slice), is propagated,
then corrected ``--rounds`` times on its worst slice as ``evaluate --protocol interactive-N``
corrects (``evaluation.interactive.run_interactive``: the reference box there, or an erase where the
reference is empty). Per set and round: the mean Dice, how many structures fell since the round
before (by more than ``--tolerance``), the largest fall, and a correction's median seconds and
slices re-decoded. ``--adapt``: after each correction, the session learns from the object's
corrected slices (``Session.adapt``), to compare with plain corrections.

    python benchmarks/rounds.py [--only ct,mr,lesions,brain,hippocampus] [--rounds 3] [--hippocampus-cases 10] [--adapt]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from accuracy import BRAIN_LABELS, SHARED, brain_dataset  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from common import machine_line  # noqa: E402


def datasets(tmp: Path, hippocampus_cases: int) -> dict[str, tuple[list[tuple[Path, Path]], tuple[int, ...] | None]]:
    """name -> ((image, label) pairs, the labels to prompt (None: every label present))."""
    ts = SHARED / "totalseg_example"
    lesions = SHARED / "pyradiomics_tumor"
    brain = brain_dataset(tmp / "brain", BRAIN_LABELS)
    hippocampus = sorted((SHARED / "msd_hippocampus" / "images").glob("*.nii.gz"))[:hippocampus_cases]
    return {
        "ct": ([(ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz")], (1, 2, 3, 5, 6)),
        "mr": ([(ts / "example_mr_sm.nii.gz", ts / "example_seg_mr.nii.gz")], (1, 2, 3, 5)),
        "lesions": ([(lesions / f"{n}_image.nrrd", lesions / f"{n}_label.nrrd") for n in ("brain1", "brain2", "breast1")], None),
        "brain": ([(p, brain / "labels" / p.name) for p in sorted((brain / "images").iterdir())], None),
        "hippocampus": ([(p, p.parent.parent / "labels" / p.name) for p in hippocampus], None),
    }


def run_case(segmenter, image: Path, label_path: Path, labels: tuple[int, ...] | None, rounds: int,
             adapt: bool = False) -> dict[int, object]:
    """label -> the structure's trace (Dice after round 0..rounds, seconds and slices re-decoded per correction) for one scan."""
    from medsam2 import ObjectPrompts, load_volume
    from medsam2.evaluation.interactive import run_interactive
    from medsam2.evaluation.protocols import middle_slice_box
    from medsam2.io.slicing import to_frames

    volume, reference = load_volume(image), load_volume(label_path).array.astype(np.int64)
    present = [int(v) for v in np.unique(reference) if v != 0]
    wanted = [v for v in (labels or present) if v in present]
    session = segmenter.open(volume)
    frames = to_frames(reference, session.voxel_axis)  # boxes and Dice along the session's axis
    for value in wanted:
        session.add(ObjectPrompts(value, boxes=[middle_slice_box(frames == value)]))
    traces = run_interactive(session, frames, wanted, rounds, "box", adapt=adapt)
    return dict(traces)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ct,mr,lesions,brain,hippocampus")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hippocampus-cases", type=int, default=10)
    parser.add_argument("--adapt", action="store_true", help="learn from the corrected slices after each round (session.adapt)")
    parser.add_argument("--tolerance", type=float, default=None, help="default: evaluate's FALL_TOLERANCE (0.005)")
    args = parser.parse_args()
    from medsam2 import Segmenter
    from medsam2.evaluation.interactive import FALL_TOLERANCE, fell

    args.tolerance = FALL_TOLERANCE if args.tolerance is None else args.tolerance
    segmenter = Segmenter()
    print(f"# medsam2 correction rounds: {machine_line()}")
    adapting = " + learning from them (adapt)" if args.adapt else ""
    print(f"# box-mid, then {args.rounds} box corrections on the worst slice{adapting}; 'fell': Dice lower than the round before by more "
          f"than {args.tolerance}")
    print()
    header = " | ".join(f"round {r}" for r in range(args.rounds + 1))
    print(f"| set | structures | {header} | fell (rounds 1..{args.rounds}) | largest fall | s per correction (median) "
          "| slices re-decoded (median) | s |")
    print("|---|---|" + "---|" * (args.rounds + 1) + "---|---|---|---|---|")
    all_curves: list[list[float]] = []
    all_costs: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as folder:
        sets = datasets(Path(folder), args.hippocampus_cases)
        for name in args.only.split(","):
            pairs, labels = sets[name]
            began = time.perf_counter()
            curves, costs = [], []
            for image, label in pairs:
                for value, trace in run_case(segmenter, image, label, labels, args.rounds, args.adapt).items():
                    curve = trace.dice_per_round
                    curves.append(curve)
                    costs += list(zip(trace.seconds, trace.redecoded))
                    if any(fell(curve, args.tolerance)):
                        print(f"# fell: {name} {image.name} label {value}: {' -> '.join(f'{d:.3f}' for d in curve)}", file=sys.stderr)
            all_curves += curves
            all_costs += costs
            print(row(name, curves, args.rounds, args.tolerance, time.perf_counter() - began, costs), flush=True)
        print(row("all", all_curves, args.rounds, args.tolerance, float("nan"), all_costs))
    return 0


def row(name: str, curves: list[list[float]], rounds: int, tolerance: float, seconds: float, costs: list[tuple[float, int]]) -> str:
    values = np.array(curves)
    means = " | ".join(f"{m:.3f}" for m in values.mean(axis=0))
    steps = np.diff(values, axis=1)
    fell = [int((steps[:, r] < -tolerance).sum()) for r in range(rounds)]
    per_correction = np.array(costs) if costs else np.zeros((1, 2))
    return (f"| {name} | {len(curves)} | {means} | {', '.join(map(str, fell))} | {max(0.0, float(-steps.min())):.3f} | "
            f"{np.median(per_correction[:, 0]):.2f} | {np.median(per_correction[:, 1]):.0f} | {seconds:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
