"""Propagation speed and memory: seconds per decoded slice, slices encoded versus slices in the
scan, and peak memory, for the real CT (five organs, one box each) and for synthetic 512x512
volumes of 100 and 200 slices holding one 20-slice structure.

Each case runs in its own process so that its peak resident memory is its own.

    python benchmarks/propagate.py            # prints a Markdown table
    python benchmarks/propagate.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import SHARED, cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def run_case(case: str, slices: int) -> dict:
    import torch

    from medsam2 import Box, ObjectPrompts, Segmenter, Volume, load_volume
    from medsam2.evaluation.protocols import middle_slice_box

    if case == "ct":
        volume = load_volume(SHARED / "totalseg_example" / "example_ct.nii.gz")
        reference = load_volume(SHARED / "totalseg_example" / "example_seg_fast_force_split.nii.gz").array
        organs = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach"}
        prompts = [ObjectPrompts(label, name, boxes=[middle_slice_box(reference == label)]) for label, name in organs.items()]
    else:
        rng = np.random.default_rng(0)
        array = rng.normal(100, 10, size=(slices, 512, 512)).astype(np.float32)
        centre = slices // 2
        k, j, i = np.ogrid[centre - 10 : centre + 10, 0:512, 0:512]
        blob = ((k - centre) / 10.0) ** 2 + ((j - 256) / 80.0) ** 2 + ((i - 240) / 100.0) ** 2 <= 1
        array[centre - 10 : centre + 10][blob] += 300
        volume = Volume(array=array, spacing=(0.8, 0.8, 2.0))
        rows, cols = np.nonzero(blob[10])
        prompts = [ObjectPrompts(1, "blob", boxes=[Box(centre, cols.min(), rows.min(), cols.max(), rows.max())])]
    segmenter = Segmenter(device="cpu")
    start = time.perf_counter()
    result = segmenter.segment(volume, prompts)
    seconds = time.perf_counter() - start
    report = result.report
    decoded = sum(len(o.confidence_per_slice) for o in report.objects)
    return {
        "case": case if case == "ct" else f"synthetic 512x512x{slices}",
        "threads": torch.get_num_threads(),
        "slices_total": report.slices_total,
        "slices_encoded": report.slices_encoded,
        "object_slices_decoded": decoded,
        "decode_calls": report.decode_calls,
        "seconds": round(seconds, 2),
        "encode_s_per_slice": report.timings.seconds_per_encoded_slice,
        "s_per_decoded_slice": round(seconds / max(decoded, 1), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def batching() -> list[dict]:
    """Seconds per slice when the encoder gets 8 real CT slices one by one, 2 x 4 or 1 x 8."""
    from medsam2 import load_volume
    from medsam2.backbones.litemedsam import LiteMedSAMBackbone
    from medsam2.io.windows import normalize_intensities

    frames = normalize_intensities(load_volume(SHARED / "totalseg_example" / "example_ct.nii.gz").array[90:98]).array
    backbone = LiteMedSAMBackbone()
    backbone.encode([frames[0]])  # warm-up
    rows = []
    for batch in (1, 4, 8):
        start = time.perf_counter()
        for i in range(0, 8, batch):
            backbone.encode(list(frames[i : i + batch]))
        rows.append({"batch": batch, "s_per_slice": round((time.perf_counter() - start) / 8, 3)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["ct", "synthetic", "batching"], help="run one case in this process (internal)")
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.case == "batching":
        print(json.dumps(batching()))
        return 0
    if args.case:
        print(json.dumps(run_case(args.case, args.slices)))
        return 0
    rows = []
    for case, slices in (("ct", 0), ("synthetic", 100), ("synthetic", 200)):
        out = subprocess.run(
            [sys.executable, __file__, "--case", case, "--slices", str(slices)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"# medsam2 propagation benchmark: {os.cpu_count()} cores ({cpu_model()}), torch threads {rows[0]['threads']}, fp32 CPU")
    print()
    print("| case | slices encoded / in scan | object-slices decoded | decode calls | total s | encode s/slice "
          "| s per decoded slice | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['slices_encoded']} / {r['slices_total']} | {r['object_slices_decoded']} | {r['decode_calls']} | "
              f"{r['seconds']} | {r['encode_s_per_slice']} | {r['s_per_decoded_slice']} | {r['peak_rss_mb']} |")
    out = subprocess.run([sys.executable, __file__, "--case", "batching"], capture_output=True, text=True, check=True)
    batch_rows = json.loads(out.stdout.strip().splitlines()[-1])
    print()
    print("| encoder batch size | s per slice |")
    print("|---|---|")
    for r in batch_rows:
        print(f"| {r['batch']} | {r['s_per_slice']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"propagation": rows, "batching": batch_rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
