"""The effort a project saves: a simulated annotator works through a dataset's cases in a fixed
order, with and without retraining the model on the cases finished so far.

Per case and structure: the active model gets one jittered reference box on the structure's middle
slice and propagates it, then is corrected as ``evaluate``'s interactive protocol corrects (the
worst slice first: its reference box, or one click on 2D images) for up to ``--rounds`` rounds.
The corrections it needed are the rounds until Dice reaches ``--target`` (0 when the first prompt
does); a structure that never does counts ``rounds + 1`` (the annotator finishes it by hand). The
reference is then saved in the project as final, and with retraining, every ``--retrain-every``
finished cases ``medsam2 train --project`` runs (a new model is active only when it beats the
active one on the project's validation cases). Without retraining the bundled weights do every case.

Prints, per case, Dice after the first prompt and corrections with and without retraining, the
totals and the corrections saved in percent, and writes a plot of both curves.

    python benchmarks/annotation_loop.py --dataset DIR [--cases 20] [--target 0.8] [--rounds 3]
        [--retrain-every 5] [--epochs 3] [--jitter 2] [--correction box|click] [--plot loop.png]
    python benchmarks/annotation_loop.py --hc18 --cases 30 --correction click    # HC18 (2D), outlines filled
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import SHARED, machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


@dataclass
class CaseEffort:
    case_id: str
    first_dice: float
    corrections: int
    structures: int
    seconds: float
    model: str


def hc18_dataset(root: Path, cases: int) -> Path:
    """HC18's first ``cases`` images with their head outlines filled, in evaluate's plain layout."""
    import SimpleITK as sitk
    from scipy import ndimage

    from medsam2.io.readers import load_volume

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    hc = SHARED / "hc18_fetal_head"
    for index in range(cases):
        image = hc / f"{index:03d}_HC.png"
        outline = load_volume(hc / f"{index:03d}_HC_Annotation.png").array[0] > 0  # (rows, cols)
        if outline.ndim == 3:  # an RGB outline
            outline = outline.any(axis=-1)
        filled = ndimage.binary_fill_holes(outline).astype(np.uint8)
        (root / "images" / f"{index:03d}.png").symlink_to(image)
        sitk.WriteImage(sitk.GetImageFromArray(filled), str(root / "labels" / f"{index:03d}.png"))
    return root


def annotate_case(segmenter, case, rounds: int, target: float, jitter: int, correction: str, seed: int) -> CaseEffort:
    """One case as the simulated annotator does it (every structure of the reference)."""
    from medsam2 import ObjectPrompts, load_volume
    from medsam2.evaluation.interactive import run_interactive
    from medsam2.evaluation.protocols import simulate_prompts
    from medsam2.io.readers import read_mask
    from medsam2.io.slicing import to_frames

    started = time.perf_counter()
    volume = load_volume(case.image)
    reference = read_mask(case.label, volume).astype(np.int64)
    labels = [int(v) for v in np.unique(reference) if v != 0]
    session = segmenter.open(volume)
    frames = to_frames(reference, session.voxel_axis)
    rng = np.random.default_rng(seed)
    for value in labels:
        prompt = simulate_prompts(frames == value, "box-mid", rng, jitter)
        session.add(ObjectPrompts(value, boxes=list(prompt.boxes)))
    traces = run_interactive(session, frames, labels, rounds, correction)
    first = float(np.mean([traces[v].dice_per_round[0] for v in labels]))
    needed = 0
    for value in labels:
        reached = [i for i, d in enumerate(traces[value].dice_per_round) if d >= target]
        needed += reached[0] if reached else rounds + 1
    return CaseEffort(case.case_id, first, needed, len(labels), time.perf_counter() - started, "")


def run_loop(dataset, work: Path, args, retrain: bool) -> list[CaseEffort]:
    """Every case in order; with ``retrain``, a project trained every ``--retrain-every`` finals."""
    from medsam2 import Segmenter
    from medsam2.backbones.devices import resolve_device
    from medsam2.errors import MedSAM2Error
    from medsam2.io.readers import load_volume, read_mask
    from medsam2.project.models import active_checkpoint
    from medsam2.project.sources import CaseSource
    from medsam2.project.store import create_project
    from medsam2.train.from_project import train_project
    from medsam2.train.settings import TrainSettings

    store = create_project(work / ("retrained" if retrain else "bundled"), [CaseSource(c.case_id, c.image) for c in dataset.cases])
    efforts, segmenter, model = [], Segmenter(), "bundled"
    for index, case in enumerate(dataset.cases):
        effort = annotate_case(segmenter, case, args.rounds, args.target, args.jitter, args.correction, args.seed + index)
        effort.model = model
        efforts.append(effort)
        volume = load_volume(case.image)
        store.save_version(case.case_id, read_mask(case.label, volume), volume, "final", None)
        finished = index + 1
        if retrain and finished % args.retrain_every == 0 and finished < len(dataset.cases):
            started = time.perf_counter()
            try:
                trained = train_project(store, TrainSettings(epochs=args.epochs, seed=args.seed), resolve_device("cpu"))
            except MedSAM2Error as exc:
                print(f"  after case {finished}: no training ({exc})", file=sys.stderr, flush=True)
                continue
            print(f"  after case {finished}: {trained.name} {'active' if trained.active else 'inactive'} "
                  f"({trained.reason}; {time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
            checkpoint = active_checkpoint(store)
            if checkpoint is not None and store.meta("active_model") != model:
                model = store.meta("active_model")
                segmenter = Segmenter(checkpoint=str(checkpoint))
    store.close()
    return efforts


def plot(path: Path, bundled: list[CaseEffort], retrained: list[CaseEffort], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, len(bundled) + 1)
    for efforts, name in ((bundled, "bundled weights"), (retrained, "retrained on the project")):
        left.plot(x, [e.first_dice for e in efforts], marker="o", ms=3, label=name)
        right.plot(x, np.cumsum([e.corrections for e in efforts]), marker="o", ms=3, label=name)
    left.set(xlabel="case", ylabel="Dice after one box", title=title)
    right.set(xlabel="case", ylabel="corrections so far (cumulative)")
    left.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="a dataset in evaluate's layout")
    parser.add_argument("--hc18", action="store_true", help="HC18 (2D) from ../shared/data, outlines filled")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--retrain-every", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--jitter", type=int, default=2)
    parser.add_argument("--correction", choices=("box", "click"), default="box")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=Path("annotation_loop.png"))
    args = parser.parse_args()
    from medsam2.evaluation.datasets import discover_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = hc18_dataset(Path(tmp) / "hc18", args.cases) if args.hc18 else Path(args.dataset)
        dataset = discover_dataset(root)
        dataset.cases = dataset.cases[: args.cases]
        bundled = run_loop(dataset, Path(tmp), args, retrain=False)
        retrained = run_loop(dataset, Path(tmp), args, retrain=True)
    print(machine_line())
    print(f"{root.name if not args.hc18 else 'hc18'}: {len(dataset.cases)} cases in order; target Dice {args.target}, "
          f"up to {args.rounds} {args.correction} corrections, retrain every {args.retrain_every} finals ({args.epochs} epochs)\n")
    print("| case | model | Dice after one box: bundled / retrained | corrections: bundled / retrained |")
    print("|---|---|---|---|")
    for b, r in zip(bundled, retrained):
        print(f"| {b.case_id} | {r.model} | {b.first_dice:.3f} / {r.first_dice:.3f} | {b.corrections} / {r.corrections} |")
    total_b, total_r = sum(e.corrections for e in bundled), sum(e.corrections for e in retrained)
    later = len(bundled) // 2
    print(f"\ncorrections: {total_b} with the bundled weights, {total_r} retrained "
          f"({100 * (total_b - total_r) / max(total_b, 1):.0f}% saved); second half of the cases: "
          f"{sum(e.corrections for e in bundled[later:])} against {sum(e.corrections for e in retrained[later:])}")
    print(f"mean Dice after one box, second half: {np.mean([e.first_dice for e in bundled[later:]]):.3f} bundled, "
          f"{np.mean([e.first_dice for e in retrained[later:]]):.3f} retrained")
    print(f"compute seconds: {sum(e.seconds for e in bundled):.0f} bundled, {sum(e.seconds for e in retrained):.0f} retrained "
          "(annotating; training not included)")
    plot(args.plot, bundled, retrained, root.name if not args.hc18 else "hc18")
    print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
