"""How long the page's edits take on the server (the engine's calls behind them), on the bundled
CT (30 x 101 x 122 voxels, 3 mm): the 3D brush, smoothing, islands, fill between slices and
multi-view, beside one propagation of the same object for scale.

Each edit is timed ``--repeats`` times on a fresh session holding the spleen propagated from one
box (undo between repeats), median reported. Run alone: the numbers are the machine's.

    python benchmarks/edits.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

SPLEEN_BOX = (14, 11, 23, 27, 54)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from medsam2 import Box, Segmenter, load_volume
    from medsam2.cli.demo import sample_paths

    volume = load_volume(sample_paths()[0])
    segmenter = Segmenter()
    session = segmenter.open(volume)
    session.add_prompts(1, boxes=[Box(*SPLEEN_BOX)])
    began = time.perf_counter()
    session.result(sanity=False)  # propagates; the features stay cached for the edits
    propagate = time.perf_counter() - began
    z, y, x = 14, 38, 27  # on the spleen's edge: the dab paints and erases voxels
    dab = np.zeros(session.shape[1:], bool)
    dab[y - 2 : y + 3, x - 2 : x + 3] = True
    gap = session.prompted_slices(1)[0] + 2

    def hole() -> None:  # a slice emptied, for fill between slices
        session.paint_sphere(1, gap, np.ones(session.shape[1:], bool), 0.0, erase=True)

    edits = {
        "3D brush, paint (radius 7.5 mm)": lambda: session.paint_sphere(1, z, dab, 7.5),
        "3D brush, erase (radius 7.5 mm)": lambda: session.paint_sphere(1, z, dab, 7.5, erase=True),
        "smooth, median (3 voxels)": lambda: session.smooth(1, "median"),
        "smooth, closing (3 voxels)": lambda: session.smooth(1, "closing"),
        "fill between slices (one emptied slice)": None,
        "multi-view (two more axes)": lambda: session.fuse_views(1),
    }
    rows = []
    for name, edit in edits.items():
        seconds = []
        for _ in range(args.repeats if "multi-view" not in name else 1):
            if edit is None:
                hole()
                began = time.perf_counter()
                session.fill_between(1)
                seconds.append(time.perf_counter() - began)
                session.undo()
                session.undo()
                continue
            began = time.perf_counter()
            edit()
            seconds.append(time.perf_counter() - began)
            session.undo()
        rows.append((name, statistics.median(seconds), len(seconds)))
    print(machine_line())
    print(f"bundled CT {volume.array.shape} (z, y, x) at {volume.spacing[0]:g} mm; the spleen propagated from one box "
          f"in {propagate:.2f} s (encoding included)")
    print()
    print("| edit | median seconds | runs |")
    print("|---|---|---|")
    for name, seconds, runs in rows:
        print(f"| {name} | {seconds:.3f} | {runs} |")


if __name__ == "__main__":
    main()
