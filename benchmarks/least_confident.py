"""Does ``least-confident`` put first the cases the model does worst on? A project of MSD
hippocampus crops with the first few final (their structures are the supports), every other case
scored by ``medsam2 project score``'s function, and each scored case's Dice after one box on each
structure's middle slice (what an annotator starts from). Prints the rank correlation between the
score and that Dice, and the mean Dice of the least- and most-confident fifths.

    python benchmarks/least_confident.py [--finals 3] [--cases 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SHARED, machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def one_box_dice(segmenter, image: Path, labels: Path) -> float:
    """Mean Dice over the structures after one box on each one's middle slice."""
    from medsam2 import ObjectPrompts, load_volume
    from medsam2.evaluation.metrics import dice
    from medsam2.evaluation.protocols import middle_slice_box

    volume, reference = load_volume(image), load_volume(labels).array
    values = [int(v) for v in np.unique(reference) if v != 0]
    result = segmenter.segment(volume, [ObjectPrompts(v, boxes=[middle_slice_box(reference == v)]) for v in values])
    return float(np.mean([dice(result.labels == v, reference == v) for v in values]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finals", type=int, default=3, help="cases with a final label (the supports)")
    parser.add_argument("--cases", type=int, default=20, help="open cases scored")
    args = parser.parse_args()
    from scipy.stats import spearmanr

    from medsam2 import Segmenter
    from medsam2.engine.options import ModelOptions
    from medsam2.project.importing import import_labels
    from medsam2.project.scoring import score_open_cases
    from medsam2.project.sources import case_sources
    from medsam2.project.store import create_project

    folder = SHARED / "msd_hippocampus"
    images = sorted((folder / "images").glob("*.nii.gz"))[: args.finals + args.cases]
    segmenter = Segmenter()
    with tempfile.TemporaryDirectory() as scratch, create_project(Path(scratch) / "p", case_sources([str(p) for p in images])) as store:
        import_labels(store, [str(folder / "labels" / p.name) for p in images[: args.finals]], "final")
        began = time.perf_counter()
        scores = score_open_cases(store, ModelOptions())
        seconds = time.perf_counter() - began
    rows = [(s.case_id, s.confidence, one_box_dice(segmenter, folder / "images" / f"{s.case_id}.nii.gz",
                                                   folder / "labels" / f"{s.case_id}.nii.gz")) for s in scores]
    confidence = np.array([0.0 if c is None else c for _, c, _ in rows])
    dices = np.array([d for _, _, d in rows])
    order = np.argsort(confidence)
    fifth = max(1, len(rows) // 5)
    rho, p_value = spearmanr(confidence, dices)
    print(machine_line())
    print(f"{os.cpu_count()} cores; {args.finals} final cases as supports, {len(rows)} open cases scored in {seconds:.0f} s "
          f"({seconds / max(len(rows), 1):.1f} s a case, features cached on the way)\n")
    print("| case | score | Dice after one box |")
    print("|---|---|---|")
    for index in order:
        case, score, value = rows[index]
        print(f"| {case} | {'-' if score is None else f'{score:.4f}'} | {value:.4f} |")
    print(f"\nSpearman rank correlation score vs Dice: {rho:.3f} (p = {p_value:.3f})")
    print(f"mean Dice of the {fifth} least-confident cases: {dices[order[:fifth]].mean():.4f}; "
          f"of the {fifth} most-confident: {dices[order[-fifth:]].mean():.4f}; all: {dices.mean():.4f}")


if __name__ == "__main__":
    main()
