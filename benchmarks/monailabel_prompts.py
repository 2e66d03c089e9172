"""What a 3D Slicer or OHIF user gets from medsam2 through MONAI Label's protocol: a project of MSD
hippocampus cases served by ``medsam2 serve --project``, and MONAI Label's own client asking
``/infer/medsam2`` for each structure of each case with an ROI (the structure's bounding box), one
click (its middle slice) and three clicks (its middle slice and a quarter in from each end). Prints
the mean Dice per prompt and the seconds per call (a case's first call encodes its slices; later
calls on the case reuse them).

    python benchmarks/monailabel_prompts.py [--cases 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from common import SHARED, machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def roi_of(reference: np.ndarray) -> list[int]:
    k, j, i = np.nonzero(reference)
    return [int(i.min()), int(i.max()), int(j.min()), int(j.max()), int(k.min()), int(k.max())]


def clicks_of(reference: np.ndarray, count: int) -> list[list[int]]:
    """``count`` foreground clicks [i, j, k]: the voxel nearest the structure's centroid on its
    middle slice (and, for three, on the slices a quarter in from each end)."""
    k, j, i = np.nonzero(reference)
    first, last = int(k.min()), int(k.max())
    slices = [(first + last) // 2] if count == 1 else [first + (last - first) // 4, (first + last) // 2, last - (last - first) // 4]
    clicks = []
    for slice_k in slices:
        on = k == slice_k
        near = np.argmin((j[on] - j[on].mean()) ** 2 + (i[on] - i[on].mean()) ** 2)
        clicks.append([int(i[on][near]), int(j[on][near]), slice_k])
    return clicks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from monailabel.client.client import MONAILabelClient

    from medsam2 import Segmenter, load_volume
    from medsam2.evaluation.metrics import dice
    from medsam2.project.sources import case_sources
    from medsam2.project.store import create_project
    from medsam2.serve.runner import start_in_thread
    from medsam2.serve.settings import ServeSettings

    folder = SHARED / "msd_hippocampus"
    images = sorted((folder / "images").glob("*.nii.gz"))[: args.cases]
    prompts = {"roi": lambda ref: {"roi": roi_of(ref)}, "1 click": lambda ref: {"foreground": clicks_of(ref, 1)},
               "3 clicks": lambda ref: {"foreground": clicks_of(ref, 3)}}
    scores: dict[str, list[float]] = {name: [] for name in prompts}
    first_calls, later_calls, seen = [], [], set()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        create_project(root, case_sources([str(p) for p in images]), copy=False).close()
        server = start_in_thread(ServeSettings(port=0, project=root, score_cases=False), Segmenter())
        try:
            client = MONAILabelClient(server.url.rstrip("/") + "/monailabel", tmpdir=tmp)
            for image in images:
                case = image.name.removesuffix(".nii.gz")
                reference = load_volume(folder / "labels" / image.name).array
                for value in (int(v) for v in np.unique(reference) if v != 0):
                    for name, make in prompts.items():
                        began = time.perf_counter()
                        out, _ = client.infer("medsam2", case, make(reference == value))
                        (later_calls if case in seen else first_calls).append(time.perf_counter() - began)
                        seen.add(case)
                        scores[name].append(dice(load_volume(out).array > 0, reference == value))
                    print(case, value, json.dumps({n: round(v[-1], 3) for n, v in scores.items()}), flush=True)
        finally:
            server.stop()
    print(f"\n{machine_line()}")
    print(f"MSD hippocampus, {len(images)} cases, {len(scores['roi'])} structures, bundled weights, through monailabel.client")
    print(f"{'prompt':<10} {'mean Dice':>10} {'min':>7} {'max':>7}")
    for name, values in scores.items():
        print(f"{name:<10} {np.mean(values):>10.3f} {np.min(values):>7.3f} {np.max(values):>7.3f}")
    print(f"seconds per /infer: a case's first {np.median(first_calls):.2f} (median), later {np.median(later_calls):.2f}")


if __name__ == "__main__":
    main()
