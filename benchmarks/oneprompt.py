"""One-prompt segmentation speed and accuracy on the shared data: seconds per query image (HC18,
chest X-ray, Kvasir polyps, SAM-Med2D CT slices) and per query volume (CT liver -> MR), with mean
Dice, in one run. HC18 is run from three supports (000, 013, 026), so that a change can be seen not
to hinge on one support, and the polyp and CT-slice sets show it is not fitted to HC18.

    python benchmarks/oneprompt.py [--precision fp32] [--json benchmarks/results/oneprompt.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from common import SHARED, machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from PIL import Image


def annotation(path: Path) -> np.ndarray:
    array = np.asarray(Image.open(path))
    return (array[..., 0] if array.ndim == 3 else array) > 127


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the rows as JSON here")
    parser.add_argument("--precision", default="auto", help="the encoder's precision: auto (bf16 where native), fp32, bf16")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from medsam2 import Segmenter, load_volume
    from medsam2.engine.oneprompt.run import support_from_arrays
    from medsam2.evaluation.metrics import dice
    from medsam2.evaluation.protocols import middle_slice_box

    segmenter = Segmenter(device="cpu", precision=args.precision)
    rows = []
    hc = SHARED / "hc18_fetal_head"
    cxr = SHARED / "cxr_lung_demo4"
    kvasir = SHARED / "kvasir_seg5"
    polyps = sorted((kvasir / "images").glob("*.jpg"))
    slices = SHARED / "sammed2d_demo"
    aorta = sorted(p.name.removesuffix("_aorta_000.png") for p in (slices / "masks").glob("*_aorta_000.png"))
    sets = [
        (f"HC18 fetal head (support {s:03d})", hc / f"{s:03d}_HC.png", annotation(hc / f"{s:03d}_HC_Annotation.png"),
         [(hc / f"{i:03d}_HC.png", annotation(hc / f"{i:03d}_HC_Annotation.png")) for i in range(40) if i != s])
        for s in (0, 13, 26)
    ] + [
        ("chest X-ray lungs", cxr / "1.jpg", annotation(cxr / "1-mask.png"),
         [(cxr / f"{i}.jpg", annotation(cxr / f"{i}-mask.png")) for i in (2, 3, 4)]),
        ("Kvasir polyps", polyps[0], annotation(kvasir / "masks" / polyps[0].name),
         [(p, annotation(kvasir / "masks" / p.name)) for p in polyps[1:]]),
        ("CT slices, aorta (SAM-Med2D)", slices / "images" / f"{aorta[0]}.png", annotation(slices / "masks" / f"{aorta[0]}_aorta_000.png"),
         [(slices / "images" / f"{a}.png", annotation(slices / "masks" / f"{a}_aorta_000.png")) for a in aorta[1:]]),
        ("CT slices, liver (SAM-Med2D)", slices / "images/amos_0006_90.png", annotation(slices / "masks/amos_0006_90_liver_000.png"),
         [(slices / "images/amos_0004_75.png", annotation(slices / "masks/amos_0004_75_liver_000.png"))]),
    ]
    for name, support, mask, queries in sets:
        start = time.perf_counter()
        result = segmenter.one_prompt(*support_from_arrays(load_volume(support), mask, support.name), [q for q, _ in queries])
        seconds = time.perf_counter() - start
        scores = [dice(q.labels[0] > 0, truth) for q, (_, truth) in zip(result.queries, queries)]
        rows.append({"set": name, "queries": len(queries), "kind": "image", "seconds_per_query": round(seconds / len(queries), 2),
                     "mean_dice": round(float(np.mean(scores)), 3), "worst_dice": round(float(np.min(scores)), 3)})
    data = SHARED / "totalseg_example"
    ct = load_volume(data / "example_ct_sm.nii.gz")
    liver = load_volume(data / "example_seg.nii.gz").array == 5
    one = np.zeros_like(liver)
    z = middle_slice_box(liver).frame
    one[z] = liver[z]
    start = time.perf_counter()
    result = segmenter.one_prompt(*support_from_arrays(ct, one, "ct liver"), [data / "example_mr_sm.nii.gz"])
    seconds = time.perf_counter() - start
    score = dice(result.queries[0].labels > 0, load_volume(data / "example_seg_mr.nii.gz").array == 5)
    rows.append({"set": "CT liver -> MR liver", "queries": 1, "kind": "volume (20 slices)", "seconds_per_query": round(seconds, 1),
                 "mean_dice": round(score, 3), "worst_dice": round(score, 3)})
    plan = segmenter.backbone.plan
    print(f"# medsam2 one-prompt benchmark: {machine_line()}; encoder {plan.runtime} {plan.precision}")
    print()
    print("| set | queries | kind | s per query | mean Dice | worst Dice |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['queries']} | {r['kind']} | {r['seconds_per_query']} | {r['mean_dice']} | {r['worst_dice']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
