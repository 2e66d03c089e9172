"""What a command costs before and around the model: `--help`, `info`, `import medsam2`, and the
gap between a `segment` run's wall time and the engine's own total.

Each row is a fresh process (the median of ``--repeats`` runs) with its peak resident memory
(``ru_maxrss`` of the child). The `segment` row runs the liver of the bundled CT from one box and
sets the wall time beside the report's ``timings.total_seconds`` (encode + decode + preprocess),
``read_seconds`` and ``write_seconds``: what is left is start-up, imports and building the model.

    python benchmarks/startup.py [--repeats 5] [--segment-repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]
BUNDLED_CT = REPO / "src" / "medsam2" / "data" / "example_ct_sm.nii.gz"
LIVER_BOX = "14:45,27,104,85"  # the demo's liver box (slice 14 of the bundled CT)


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one fresh process running ``argv`` (which must succeed)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own resource use
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {child.stderr.read().decode()[-400:]}")
    return seconds, usage.ru_maxrss / 1024


def median_row(name: str, argv: list[str], repeats: int) -> tuple[str, float, float]:
    runs = [timed(argv) for _ in range(repeats)]
    return name, statistics.median(s for s, _ in runs), max(mb for _, mb in runs)


def segment_gap(repeats: int) -> list[dict]:
    """One `segment` run per repeat: wall seconds and the report's own seconds."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(repeats):
            out, report = Path(tmp) / f"liver{index}.nii.gz", Path(tmp) / f"liver{index}.json"
            argv = [sys.executable, "-m", "medsam2.cli", "segment", str(BUNDLED_CT), "-o", str(out), "--box", LIVER_BOX,
                    "--report", str(report), "--quiet"]
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            wall = time.perf_counter() - started
            timings = json.loads(report.read_text())["timings"]
            rows.append({"wall": wall, "engine": timings["total_seconds"], "read": timings["read_seconds"] or 0.0,
                         "write": timings["write_seconds"] or 0.0})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--segment-repeats", type=int, default=3)
    args = parser.parse_args()
    python = sys.executable
    rows = [
        median_row("python -c pass (the interpreter alone)", [python, "-c", "pass"], args.repeats),
        median_row("import medsam2", [python, "-c", "import medsam2"], args.repeats),
        median_row("medsam2 --help", [python, "-m", "medsam2.cli", "--help"], args.repeats),
        median_row("medsam2 segment --help", [python, "-m", "medsam2.cli", "segment", "--help"], args.repeats),
        median_row("medsam2 info (bundled CT)", [python, "-m", "medsam2.cli", "info", str(BUNDLED_CT)], args.repeats),
    ]
    print(machine_line())
    print(f"{os.cpu_count()} cores; each row a fresh process, median of {args.repeats}\n")
    print(f"| {'command':<40} | seconds | peak MB |")
    print(f"|{'-' * 42}|---------|---------|")
    for name, seconds, mb in rows:
        print(f"| {name:<40} | {seconds:7.2f} | {mb:7.0f} |")
    gaps = segment_gap(args.segment_repeats)
    print(f"\n`segment` of the bundled CT's liver from one box ({args.segment_repeats} runs):\n")
    print("| wall s | engine total s | read s | write s | wall - engine - read - write s |")
    print("|--------|----------------|--------|---------|--------------------------------|")
    for g in gaps:
        rest = g["wall"] - g["engine"] - g["read"] - g["write"]
        print(f"| {g['wall']:6.2f} | {g['engine']:14.2f} | {g['read']:6.2f} | {g['write']:7.2f} | {rest:30.2f} |")


if __name__ == "__main__":
    main()
