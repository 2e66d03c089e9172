"""The interactive session: what a correction costs with cached features, and what corrections gain.

Part 1, the bundled CT (30 slices, five organs from one box each): for each organ, three
corrections on its worst slice with the reference box; per correction the seconds from
``correct()`` to the updated label map (``result()``), the slices decoded again, and the cache.
Part 2, ``evaluate --protocol interactive-3`` on every labelled 3D set in ../shared/data (CT and MR
organs, pyradiomics lesions, voxelmorph brain structures): Dice after each round, against the
oracle (the reference box on every slice).

    python benchmarks/session.py [--only ct,mr,...] [--correction box|click]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from accuracy import build_sets  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from common import machine_line  # noqa: E402

SETS_3D = ("ct", "mr", "lesions", "brain")


def corrections_on_bundled_ct(backbone) -> list[str]:
    """Three box corrections per organ (the interactive-3 protocol's rule) on the bundled CT."""
    from medsam2 import ObjectPrompts, Segmenter, load_volume
    from medsam2.cli.demo import DEMO_ORGANS, sample_paths
    from medsam2.evaluation.interactive import run_interactive
    from medsam2.evaluation.protocols import middle_slice_box

    ct_path, seg_path = sample_paths()
    volume, reference = load_volume(ct_path), load_volume(seg_path).array
    session = Segmenter(backbone=backbone).open(volume)
    for label, name in DEMO_ORGANS.items():
        session.add(ObjectPrompts(label, name, boxes=[middle_slice_box(reference == label)]))
    began = time.perf_counter()
    list(session.propagate())
    first = time.perf_counter() - began
    encoded = session.cache_stats().misses
    traces = run_interactive(session, reference, list(DEMO_ORGANS), 3, "box")
    lines = [
        f"First propagation of 5 organs: {first:.1f} s, {encoded} slices encoded.",
        "",
        "| organ | round | slice | Dice before | Dice after | slices re-decoded | s to updated result | slices encoded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seconds, decoded = [], []
    for label, trace in traces.items():
        made = 0  # corrections made so far (a round with nothing left to correct makes none)
        for round_index, target in enumerate(trace.corrected_slices):
            if target is None:
                continue
            seconds.append(trace.seconds[made])
            decoded.append(trace.redecoded[made])
            lines.append(
                f"| {DEMO_ORGANS[label]} | {round_index + 1} | {target} | {trace.dice_per_round[round_index]:.4f} | "
                f"{trace.dice_per_round[round_index + 1]:.4f} | {trace.redecoded[made]} | {trace.seconds[made]:.3f} | "
                f"{trace.encoded[made]} |"
            )
            made += 1
    lines += [
        "",
        f"Per correction: median {statistics.median(seconds):.3f} s to the updated result (max {max(seconds):.3f} s), "
        f"median {statistics.median(decoded)} slices re-decoded; cache {session.cache_stats()}.",
    ]
    return lines


def interactive_table(backbone, only: list[str], correction: str, out: Path) -> list[str]:
    from medsam2.evaluation.datasets import discover_dataset
    from medsam2.evaluation.harness import MethodSegmenters, run_evaluation
    from medsam2.evaluation.protocols import EvaluationConfig

    segmenters = MethodSegmenters(lambda: backbone)

    lines = [
        "| set | structure | cases | round 0 | round 1 | round 2 | round 3 | AUC (0..3) | oracle | round 3 / oracle | s per correction |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    means: dict[str, list[float]] = {"round 3": [], "oracle": []}
    with tempfile.TemporaryDirectory() as tmp:
        sets = build_sets(Path(tmp))
        for name in only:
            folder, _, _, labels = sets[name]
            config = EvaluationConfig(protocol="interactive-3", methods=("confidence", "oracle"), labels=labels, correction=correction)
            started = time.perf_counter()
            results = run_evaluation(discover_dataset(folder), out / name, config, segmenters, overwrite=True, after_case=segmenters.clear)
            print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            summary = {(s["method"], s["structure"]): s for s in results["summary"]}
            for (method, structure), row in sorted(summary.items()):
                if method != "confidence":
                    continue
                oracle = summary[("oracle", structure)]["dice_mean"]
                rounds = [row[f"dice_round_{i}_mean"] for i in range(4)]
                means["round 3"].append(rounds[3])
                means["oracle"].append(oracle)
                lines.append(
                    f"| {name} | {structure} | {row['cases']} | " + " | ".join(f"{v:.3f}" for v in rounds)
                    + f" | {row['dice_auc_mean']:.3f} | {oracle:.3f} | {rounds[3] / oracle:.3f} | {row['correction_seconds_mean']} |"
                )
    lines += ["", f"Mean over structures: after 3 corrections {statistics.fmean(means['round 3']):.3f}, "
              f"oracle {statistics.fmean(means['oracle']):.3f}."]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SETS_3D), help="comma-separated 3D sets for part 2 (default: all)")
    parser.add_argument("--correction", default="box", choices=("box", "click"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "session"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from medsam2.backbones import build_backbone

    backbone = build_backbone("litemedsam")
    part1 = corrections_on_bundled_ct(backbone)
    sets = [s for s in args.only.split(",") if s]
    part2 = interactive_table(backbone, sets, args.correction, Path(args.out)) if sets else []
    print(f"# medsam2 session benchmark: {machine_line()}; encoder {backbone.plan.runtime} {backbone.plan.precision}")
    print()
    print("## Corrections on the bundled CT (features cached)")
    print()
    print("\n".join(part1))
    print()
    if part2:
        print(f"## evaluate --protocol interactive-3 --correction {args.correction} (method confidence)")
        print()
        print("\n".join(part2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
