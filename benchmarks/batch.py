"""Studies per hour of ``medsam2 batch``: 1 and 2 local workers and Ray, on this machine's cores.

Each study is the bundled TotalSegmentator CT crop (30 slices, 122x101) with one organ boxed on its
middle slice (spleen, kidneys, liver, stomach, in turn). Each configuration runs the same studies
in a fresh pool, model loading included (it is part of what a batch costs). Prints a table with
studies per hour and the throughput against one worker that has all the cores.

    python benchmarks/batch.py [--studies 6]     # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_line  # noqa: E402

BOXES = ["14:11,23,27,54", "9:70,29,90,46", "11:26,28,44,45", "14:45,27,104,85", "14:39,63,52,79"]


def _manifest(folder: Path, studies: int) -> Path:
    import shutil

    ct = REPO / "src" / "medsam2" / "data" / "example_ct_sm.nii.gz"
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "image", "box"])
        for index in range(studies):
            shutil.copy(ct, folder / f"ct{index}.nii.gz")
            writer.writerow([f"ct{index}", f"ct{index}.nii.gz", BOXES[index % len(BOXES)]])
    return manifest


def _run(manifest: Path, outdir: Path, pool) -> tuple[float, int]:
    from medsam2.batch.manifest import read_manifest
    from medsam2.batch.run import run_batch

    cases = read_manifest(manifest, outdir)
    started = time.perf_counter()
    summary = run_batch(cases, pool, outdir)
    seconds = time.perf_counter() - started
    return seconds, summary.counts()["ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()

    from medsam2.batch.pool import LocalPool, RayPool, available_cores
    from medsam2.batch.run import SegmentWorker
    from medsam2.engine.options import ModelOptions

    spec = SegmentWorker(ModelOptions())
    cores = available_cores()
    configs = [("local", 1, cores), ("local", 2, max(1, cores // 2))]
    if not args.no_ray:
        configs.append(("ray", 2, max(1, cores // 2)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = _manifest(folder, args.studies)
        for kind, workers, threads in configs:
            outdir = folder / f"out-{kind}-{workers}"
            if kind == "local":
                seconds, ok = _run(manifest, outdir, LocalPool(spec, workers, threads))
            else:
                started = time.perf_counter()
                pool = RayPool(spec, workers=workers, threads=threads)
                startup = time.perf_counter() - started
                try:
                    seconds, ok = _run(manifest, outdir, pool)
                finally:
                    pool.close()
                seconds += startup
            rows.append((f"{kind} {workers} x {threads} threads", ok, seconds, ok / seconds * 3600))
            print(f"  {rows[-1][0]}: {ok} studies in {seconds:.1f} s", file=sys.stderr)
    base = rows[0][3]
    print(f"# medsam2 batch throughput: {machine_line()}")
    print(f"# {args.studies} studies of 30 slices (bundled CT, one organ boxed each), model loading included")
    print("# every pool uses all the cores: 'vs 1 worker' is its throughput over one worker with all the threads")
    print(f"{'pool':28s} {'studies':>7s} {'seconds':>8s} {'studies/h':>10s} {'vs 1 worker':>11s}")
    for name, ok, seconds, rate in rows:
        print(f"{name:28s} {ok:7d} {seconds:8.1f} {rate:10.1f} {rate / base:11.2f}")


if __name__ == "__main__":
    main()
