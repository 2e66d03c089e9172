"""Opening a case that was encoded before: the seconds from reading the scan to the first mask
(one box, propagated through the structure) with no disk cache, with an empty project feature
folder (cold: every slice encoded and written) and with the folder filled (cached), and the disk
the features take.

    python benchmarks/project_cache.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import SHARED, machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def cases():
    """(name, image, label mask) of the scans timed: the bundled CT's liver and a hippocampus crop."""
    from medsam2 import load_volume
    from medsam2.cli.demo import sample_paths

    ct, seg = sample_paths()
    hippocampus = SHARED / "msd_hippocampus"
    return [("bundled CT, liver", ct, load_volume(seg).array == 5),
            ("MSD hippocampus_003, anterior", hippocampus / "images" / "hippocampus_003.nii.gz",
             load_volume(hippocampus / "labels" / "hippocampus_003.nii.gz").array == 1)]


def first_mask_seconds(segmenter, image: Path, reference, folder) -> float:
    from medsam2 import ObjectPrompts, load_volume
    from medsam2.evaluation.protocols import middle_slice_box

    began = time.perf_counter()
    session = segmenter.open(load_volume(image), feature_folder=folder)
    session.add(ObjectPrompts(1, "structure", boxes=[middle_slice_box(reference)]))
    session.result(sanity=False)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from medsam2 import Segmenter
    from medsam2.engine.feature_disk import FeatureFolder, model_key

    segmenter = Segmenter()
    key = model_key(segmenter.backbone)
    rows = []
    for name, image, reference in cases():
        first_mask_seconds(segmenter, image, reference, None)  # warm the runtime
        memory, cold, cached, megabytes = [], [], [], 0.0
        for _ in range(args.repeats):
            memory.append(first_mask_seconds(segmenter, image, reference, None))
            with tempfile.TemporaryDirectory() as scratch:
                cold.append(first_mask_seconds(segmenter, image, reference, FeatureFolder(Path(scratch), key)))
                cached.append(first_mask_seconds(segmenter, image, reference, FeatureFolder(Path(scratch), key)))
                megabytes = sum(p.stat().st_size for p in Path(scratch).glob("*/*.pt")) / 2**20
        rows.append((name, *(statistics.median(v) for v in (memory, cold, cached)), megabytes))
    print(machine_line())
    print(f"{os.cpu_count()} cores; seconds from reading the scan to the first mask, median of {args.repeats}; model {key}\n")
    print("| case | memory only s | cold (encode + write) s | cached (read) s | cached / memory | disk MB |")
    print("|---|---|---|---|---|---|")
    for name, memory, cold, cached, megabytes in rows:
        print(f"| {name} | {memory:.2f} | {cold:.2f} | {cached:.2f} | {cached / memory:.2f} | {megabytes:.0f} |")


if __name__ == "__main__":
    main()
