"""Encoder speed of the default backbone per runtime and precision, side by side in one run.

For every option: seconds per 256x256 slice (median, min, max over real CT slices), achieved
GFLOP/s and its fraction of this machine's fp32 peak, the relative error of its features against
fp32 PyTorch eager, the Dice change on the demo organs (bundled 30-slice CT, one box each), and the
end-to-end seconds of `medsam2 segment` on a 43-slice organ (the liver of the shared CT: read,
encode, propagate, write; a fresh process each time, the converted model already cached).

The peak is measured, not quoted: the median GFLOP/s of a 4096x4096 fp32 matrix product in PyTorch
on all threads ("GEMM peak"), beside the nominal AVX2/AVX-512 FMA peak from the clock that
/proc/cpuinfo reports (cores x MHz x FLOP per cycle).

    python benchmarks/speed.py [--repeats 8] [--e2e-repeats 3] [--json benchmarks/results/speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from common import SHARED, machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ENCODER_GFLOP = 74.95  # counted with torch.utils.flop_counter on one 256x256 slice


def gemm_peak_gflops(repeats: int = 5) -> float:
    import torch

    a, b = torch.rand(4096, 4096), torch.rand(4096, 4096)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * 4096**3 / float(np.median(times)) / 1e9


def nominal_peak_gflops() -> float | None:
    """cores x clock x FLOP/cycle (2 FMA units x vector lanes x 2); None where the clock is unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    lanes = 16 if "avx512f" in flags.split() else 8
    if not mhz:
        return None
    return os.cpu_count() * float(np.median(mhz)) / 1000 * 2 * lanes * 2


def demo_frames(count: int) -> list[np.ndarray]:
    from medsam2 import load_volume
    from medsam2.cli.demo import sample_paths
    from medsam2.io.windows import choose_window

    volume = load_volume(sample_paths()[0])
    window = choose_window(volume.array, "auto", volume.modality)
    picks = np.linspace(0, volume.shape[0] - 1, count).round().astype(int)
    return [window.apply(volume.array[z]) for z in picks]


def time_encoder(backbone, frames: list[np.ndarray], repeats: int) -> tuple[list[float], list]:
    backbone.encode([frames[0]])  # warm-up (first-call allocations, OpenVINO compile caches)
    times, features = [], []
    for i in range(repeats):
        frame = frames[i % len(frames)]
        start = time.perf_counter()
        features.append(backbone.encode([frame])[0].embedding)
        times.append(time.perf_counter() - start)
    return times, features


def demo_dice(runtime: str, precision: str) -> dict[str, float]:
    from medsam2 import ObjectPrompts, Segmenter, load_volume
    from medsam2.cli.demo import DEMO_ORGANS, sample_paths
    from medsam2.evaluation.metrics import dice
    from medsam2.evaluation.protocols import middle_slice_box

    ct, seg = sample_paths()
    volume, reference = load_volume(ct), load_volume(seg).array
    objects = [ObjectPrompts(label, name, boxes=[middle_slice_box(reference == label)]) for label, name in DEMO_ORGANS.items()]
    result = Segmenter(device="cpu", runtime=runtime, precision=precision).segment(volume, objects)
    return {name: dice(result.labels == label, reference == label) for label, name in DEMO_ORGANS.items()}


def end_to_end(runtime: str, precision: str, repeats: int) -> list[float]:
    from medsam2 import load_volume
    from medsam2.evaluation.protocols import middle_slice_box

    reference = load_volume(SHARED / "totalseg_example" / "example_seg_fast_force_split.nii.gz").array
    box = middle_slice_box(reference == 5)  # liver: 43 slices
    medsam2 = Path(sys.executable).with_name("medsam2")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            command = [
                str(medsam2), "segment", str(SHARED / "totalseg_example" / "example_ct.nii.gz"), "-o", f"{tmp}/liver{i}.nii.gz",
                "--box", f"{box.frame}:{box.x0:g},{box.y0:g},{box.x1:g},{box.y1:g}", "--device", "cpu",
                "--runtime", runtime, "--precision", precision, "--quiet",
            ]
            start = time.perf_counter()
            subprocess.run(command, check=True)
            times.append(time.perf_counter() - start)
    return times


def time_decoder(backbone, frames, calls: int = 20) -> float:
    """Median milliseconds of one box decode (what the engine sends) on the first frame's features."""
    features = backbone.encode([frames[0]])[0]
    box = np.array([40.0, 50.0, 160.0, 170.0], dtype=np.float32)
    for _ in range(3):
        backbone.decode(features, box=box)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        backbone.decode(features, box=box)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8, help="encoder calls per option")
    parser.add_argument("--e2e-repeats", type=int, default=3, help="end-to-end runs per runtime")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from medsam2.backbones.litemedsam import LiteMedSAMBackbone
    from medsam2.backbones.runtime import cpu_has_native_bf16, openvino_available

    native_bf16 = cpu_has_native_bf16()
    frames = demo_frames(8)
    gemm = gemm_peak_gflops()
    nominal = nominal_peak_gflops()
    options = [("torch", "fp32"), ("torch-channels-last", "fp32"), ("torch", "bf16")]
    if openvino_available():
        options += [("openvino", "fp32"), ("openvino", "bf16")]
    rows, reference = [], None
    for runtime, precision in options:
        backbone = LiteMedSAMBackbone(device=torch.device("cpu"), runtime=runtime.split("-")[0], precision=precision)
        if runtime == "torch-channels-last":
            backbone.net.image_encoder.to(memory_format=torch.channels_last)
        emulated = backbone.plan.precision == "bf16" and not native_bf16
        repeats = 2 if emulated and runtime.startswith("torch") else args.repeats  # emulated bf16 takes about a minute a slice
        times, features = time_encoder(backbone, frames, repeats)
        decode_ms = time_decoder(backbone, frames)
        if reference is None:
            reference = features
        errors = [float((f.float() - r).norm() / r.norm()) for f, r in zip(features, reference)]
        median = float(np.median(times))
        rows.append({
            "runtime": runtime, "precision": backbone.plan.precision + (" (emulated)" if emulated else "")
            + (f" (asked {precision})" if backbone.plan.precision != precision else ""),
            "s_per_slice_median": round(median, 3), "s_per_slice_min": round(min(times), 3), "s_per_slice_max": round(max(times), 3),
            "gflops": round(ENCODER_GFLOP / median, 1), "fraction_of_gemm_peak": round(ENCODER_GFLOP / median / gemm, 2),
            "speedup_vs_torch_fp32": None, "feature_rel_error_max": round(max(errors), 5), "decode_ms_per_call": decode_ms,
        })
        print(f"measured {runtime} {precision}: {median:.3f} s/slice", file=sys.stderr, flush=True)
    base = rows[0]["s_per_slice_median"]
    for row in rows:
        row["speedup_vs_torch_fp32"] = round(base / row["s_per_slice_median"], 2)
    default = LiteMedSAMBackbone(device=torch.device("cpu")).plan
    dice_runs = {"torch fp32": demo_dice("torch", "fp32"), f"{default.runtime} {default.precision} (default)": demo_dice("auto", "auto")}
    fp32 = dice_runs["torch fp32"]
    e2e = {"torch fp32": end_to_end("torch", "fp32", max(1, args.e2e_repeats - 1)),
           f"{default.runtime} {default.precision} (default)": end_to_end("auto", "auto", args.e2e_repeats)}

    print(f"# medsam2 encoder speed: {machine_line()}; native bf16: {'yes' if native_bf16 else 'no'}")
    print()
    print(f"Peak fp32: GEMM {gemm:.0f} GFLOP/s measured" + (f", nominal FMA peak {nominal:.0f} GFLOP/s" if nominal else "")
          + f". Encoder work: {ENCODER_GFLOP} GFLOP per 256x256 slice.")
    print()
    print("| runtime | precision | s/slice median | min | max | GFLOP/s | of GEMM peak | speed-up vs torch fp32 | feature rel. error "
          "| decode ms/call |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['runtime']} | {r['precision']} | {r['s_per_slice_median']} | {r['s_per_slice_min']} | {r['s_per_slice_max']} | "
              f"{r['gflops']} | {r['fraction_of_gemm_peak']:.0%} | {r['speedup_vs_torch_fp32']}x | {r['feature_rel_error_max']} "
              f"| {r['decode_ms_per_call']} |")
    print()
    print("| demo organ | " + " | ".join(dice_runs) + " | Dice change |")
    print("|---|" + "---|" * (len(dice_runs) + 1))
    other = list(dice_runs)[1]
    for organ in fp32:
        print(f"| {organ} | {fp32[organ]:.4f} | {dice_runs[other][organ]:.4f} | {dice_runs[other][organ] - fp32[organ]:+.4f} |")
    print()
    print("| end to end, liver of the shared CT (43 slices, one box) | median s | runs |")
    print("|---|---|---|")
    for name, times in e2e.items():
        print(f"| {name} | {np.median(times):.1f} | {', '.join(f'{t:.1f}' for t in times)} |")
    if args.json:
        summary = {"machine": machine_line(), "gemm_peak_gflops": round(gemm, 1), "nominal_peak_gflops": nominal,
                   "encoder": rows, "demo_dice": dice_runs, "end_to_end_seconds": e2e}
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
