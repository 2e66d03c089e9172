"""What an annotator feels while the project trains: a correction's latency with no training, with
the server's background training (lower priority, half the cores) and with a training process that
takes every core at the same priority.

A project of 10 MSD hippocampus cases with final labels trains (``medsam2 train --project``, the
command ``serve --project`` runs in the background) while a session on another case is corrected
with the reference box on a slice, then undone, again and again; per condition the median and the
worst seconds from ``correct()`` to its answer.

    python benchmarks/latency_while_training.py [--corrections 8] [--cases 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED, machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

HIPPOCAMPUS = SHARED / "msd_hippocampus"


def make_project(root: Path, cases: list[str]) -> Path:
    from medsam2.cli import main

    images = [str(HIPPOCAMPUS / "images" / f"{case}.nii.gz") for case in cases]
    labels = [str(HIPPOCAMPUS / "labels" / f"{case}.nii.gz") for case in cases]
    assert main(["project", "init", str(root), "--images", *images]) == 0
    assert main(["project", "import-labels", str(root), "--labels", *labels]) == 0
    return root


def corrected_session(case: str):
    """A session on ``case`` with its anterior hippocampus propagated from one box, and the reference."""
    from medsam2 import ObjectPrompts, Segmenter, load_volume
    from medsam2.evaluation.protocols import middle_slice_box

    volume = load_volume(HIPPOCAMPUS / "images" / f"{case}.nii.gz")
    reference = load_volume(HIPPOCAMPUS / "labels" / f"{case}.nii.gz").array == 1
    session = Segmenter().open(volume)
    session.add(ObjectPrompts(1, "anterior", boxes=[middle_slice_box(reference)]))
    list(session.propagate())
    return session, reference


def correction_seconds(session, reference, count: int) -> list[float]:
    """Seconds of ``count`` box corrections (each on a slice of the structure, undone after)."""
    import numpy as np

    from medsam2.evaluation.protocols import simulate_prompts

    slices = [int(s) for s in np.flatnonzero(reference.any(axis=(1, 2)))]
    picks = [slices[(i * 5 + 1) % len(slices)] for i in range(count)]
    seconds = []
    for frame in picks:
        one = np.zeros_like(reference)
        one[frame] = reference[frame]
        box = simulate_prompts(one, "box-mid", np.random.default_rng(0)).boxes[0]
        began = time.perf_counter()
        session.correct(1, frame, box=(box.x0, box.y0, box.x1, box.y1))
        seconds.append(time.perf_counter() - began)
        session.undo()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corrections", type=int, default=8)
    parser.add_argument("--cases", type=int, default=10)
    args = parser.parse_args()
    from medsam2.serve.project_training import TRAINING_NICENESS, ProjectTraining, training_threads

    names = sorted(p.name.removesuffix(".nii.gz") for p in (HIPPOCAMPUS / "labels").glob("*.nii.gz"))
    session, reference = corrected_session(names[-1])
    correction_seconds(session, reference, 2)  # warm: the features of every slice are cached
    cores = os.cpu_count() or 1
    bounded = training_threads()
    conditions = [("no training", None),
                  (f"background training (nice {TRAINING_NICENESS}, {bounded} threads)", (bounded, TRAINING_NICENESS)),
                  (f"training on every core (nice 0, {cores} threads)", (cores, 0))]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        project = make_project(Path(scratch) / "project", names[: args.cases])
        for name, bounds in conditions:
            training = None
            if bounds is not None:
                training = ProjectTraining(project, *bounds)
                training.start(("--epochs", "20", "--labels", "1", "--patience", "20"))
                time.sleep(15.0)  # past the interpreter's start: encoding and training
            seconds = correction_seconds(session, reference, args.corrections)
            if training is not None:
                still = training.running
                training.cancel()
                if not still:
                    print(f"warning: the training ended before the corrections did ({name})", file=sys.stderr)
            rows.append((name, statistics.median(seconds), max(seconds)))
    print(machine_line())
    print(f"{cores} cores; {args.corrections} box corrections on {names[-1]} (cached features); "
          f"the project: {args.cases} cases, label 1\n")
    print(f"| {'while':<52} | median s | worst s | x no training |")
    print(f"|{'-' * 54}|----------|---------|---------------|")
    for name, median, worst in rows:
        print(f"| {name:<52} | {median:8.2f} | {worst:7.2f} | {median / rows[0][1]:13.2f} |")


if __name__ == "__main__":
    main()
