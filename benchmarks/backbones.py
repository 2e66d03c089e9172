"""Backbones side by side on one volume: seconds per slice and peak memory of the embedded
LiteMedSAM and of SAM 2.1 tiny (random weights, at 512 and at 1024 input), on this machine.

Each backbone runs in a fresh child process (so one's memory does not count for another), on the
same 30-slice CT (shared TotalSegmentator example) with the same box on the liver's middle slice.
SAM 2 runs with --memory fifo, which visits every slice as SAM 2 does; LiteMedSAM with its default.

    python benchmarks/backbones.py [--json benchmarks/results/backbones.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import SHARED, machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

RUNS = [
    ("litemedsam", "litemedsam (embedded)"),
    ("sam2-512", "SAM 2.1 tiny, 512 input (random weights)"),
    ("sam2-1024", "SAM 2.1 tiny, 1024 input (random weights)"),
]


def child(run: str, checkpoint: str | None) -> dict:
    """One backbone in this process: build, segment the liver, measure."""
    warnings.simplefilter("ignore")
    from medsam2 import Segmenter, load_volume
    from medsam2.evaluation.metrics import dice
    from medsam2.evaluation.protocols import middle_slice_box
    from medsam2.prompts.parse import ObjectPrompts
    from medsam2.reporting.peakmem import PeakMemory, current_rss_mb

    data = SHARED / "totalseg_example"
    ct = load_volume(data / "example_ct_sm.nii.gz")
    liver = load_volume(data / "example_seg.nii.gz").array == 5
    box = middle_slice_box(liver)

    before = current_rss_mb() or 0.0
    start = time.perf_counter()
    with PeakMemory() as peak:
        if run == "litemedsam":
            segmenter = Segmenter(device="cpu")
        else:
            config = "sam2.1_hiera_t512" if run == "sam2-512" else "sam2.1_hiera_t"
            segmenter = Segmenter(backbone="sam2", checkpoint=checkpoint, model_config=config, device="cpu", memory="fifo")
        load_seconds = time.perf_counter() - start
        start = time.perf_counter()
        result = segmenter.segment(ct, ObjectPrompts(1, boxes=[box]))
        seconds = time.perf_counter() - start
    report = result.report
    encoded = report.slices_encoded
    return {
        "run": run,
        "load_s": round(load_seconds, 2),
        "slices": encoded,
        "encode_s_per_slice": round(report.timings.encode_seconds / max(encoded, 1), 3),
        "total_s_per_slice": round(seconds / max(encoded, 1), 3),
        "segment_s": round(seconds, 1),
        "peak_rss_mb": round(peak.peak_mb, 0),
        "rss_before_mb": round(before, 0),
        "dice": round(float(dice(result.labels > 0, liver)), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the rows as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.checkpoint)))
        return 0
    warnings.simplefilter("ignore")
    import torch

    from medsam2.backbones.sam2_models import SAM2_CONFIGS, build_sam2_model

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "sam2.1_random_tiny.pt"
        torch.manual_seed(0)
        state = build_sam2_model(SAM2_CONFIGS["sam2.1_hiera_t"], None, torch.device("cpu")).state_dict()
        torch.save({"model": state}, checkpoint)
        for run, label in RUNS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", run, "--checkpoint", str(checkpoint)],
                capture_output=True, text=True, check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["backbone"] = label
            rows.append(row)
            print(f"done: {label}", file=sys.stderr)
    print(f"# Backbones on one CT volume ({machine_line()}, torch threads {torch.get_num_threads()})\n")
    print("| backbone | model load (s) | slices | encode s/slice | total s/slice | peak RSS (MB) | liver Dice |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        dice = f"{r['dice']:.3f}" if r["run"] == "litemedsam" else f"{r['dice']:.3f} (random weights)"
        print(f"| {r['backbone']} | {r['load_s']} | {r['slices']} | {r['encode_s_per_slice']} | {r['total_s_per_slice']} | "
              f"{r['peak_rss_mb']:.0f} | {dice} |")
    base = rows[0]["total_s_per_slice"]
    ratios = ", ".join(f"{r['run']} {r['total_s_per_slice'] / base:.1f}x" for r in rows)
    print(f"\nTotal seconds per slice relative to litemedsam: {ratios}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
