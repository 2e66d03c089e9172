"""One box on the small structures (and the CT organs) under variants of the LiteMedSAM engine's
settings, side by side with the measured defaults and the oracle (issue 20): what a change of the
stop rule or the box margin gains or loses per structure before it is proposed as a default.

Each variant is ``name=field:value[,field:value...]`` over :class:`PropagationSettings` fields, e.g.

    python benchmarks/engine_variants.py "p3=patience:3" "pres0.6=stop_presence:0.6" "m2=box_margin:2"
    python benchmarks/engine_variants.py --only small-ct,ct "iou0.5=stop_iou:0.5"
    python benchmarks/engine_variants.py "sharp=bank.temperature:0.003" "cap16=bank.capacity:16"

Each set's slices are encoded once for all the variants (one feature cache per case). The
``held-*`` sets (``--only held-ct,held-ct-b,held-mr,held-brain,held-brain-b``) hold 30 structures
that no candidate was tuned on: a change is weighed there before it becomes a default.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from dataclasses import fields, replace
from pathlib import Path

from accuracy import build_sets  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from common import machine_line  # noqa: E402

DEFAULT_SETS = "small-lesions,small-mr,small-ct,small-brain,ct"


def parse_variant(text: str, base):
    """``name=field:value,...`` -> (name, settings); raises SystemExit on an unknown field."""
    name, _, spec = text.partition("=")
    known = [f.name for f in fields(base) if f.name != "bank"] + [f"bank.{f.name}" for f in fields(base.bank)]
    changes, bank = {}, {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition(":")
        if key not in known:
            raise SystemExit(f"unknown setting '{key}'; choose from {', '.join(known)}")
        target, owner, field = (bank, base.bank, key.removeprefix("bank.")) if key.startswith("bank.") else (changes, base, key)
        target[field] = type(getattr(owner, field))(value)  # int fields stay int (patience, bank.capacity)
    return name, replace(base, **changes, bank=replace(base.bank, **bank))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help="name=field:value[,field:value...]")
    parser.add_argument("--only", default=DEFAULT_SETS, help=f"comma-separated sets of benchmarks/accuracy.py (default {DEFAULT_SETS})")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from medsam2.backbones import build_backbone
    from medsam2.engine.feature_cache import CachedBackbone
    from medsam2.engine.litemedsam_settings import PropagationSettings
    from medsam2.engine.segmenter import Segmenter
    from medsam2.evaluation.datasets import discover_dataset
    from medsam2.evaluation.harness import run_evaluation
    from medsam2.evaluation.protocols import EvaluationConfig

    base = PropagationSettings()
    variants = [("defaults", base)] + [parse_variant(v, base) for v in args.variants]
    backbone = CachedBackbone(build_backbone("litemedsam"))
    dice: dict[tuple[str, str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = build_sets(Path(tmp))
        for set_name in args.only.split(","):
            folder, _, _, labels = sets[set_name]
            dataset = discover_dataset(folder)
            for case in dataset.cases:  # one case at a time, so that its features serve every variant
                single = replace(dataset, cases=[case])
                for index, (name, settings) in enumerate(variants):
                    segmenter = Segmenter(backbone=backbone, memory="confidence", settings=settings)
                    methods = ("confidence", "oracle") if index == 0 else ("confidence",)
                    config = EvaluationConfig(protocol="box-mid", methods=methods, labels=labels)
                    results = run_evaluation(single, Path(tmp) / "out" / set_name / case.case_id / name, config,
                                             lambda memory, s=segmenter: s, overwrite=True)
                    for row in results["per_case"]:
                        key = (set_name.removeprefix("small-"), row["case"], row["structure"])
                        dice.setdefault(key, {})[name if row["method"] == "confidence" else "oracle"] = float(row["dice"])
                backbone.clear()
                print(f"{set_name} {case.case_id} done", file=sys.stderr, flush=True)
    names = [name for name, _ in variants]
    print(f"# medsam2 engine variants, one box (box-mid) per structure: {machine_line()}; encoder {backbone.plan.runtime} "
          f"{backbone.plan.precision}")
    print()
    for name, settings in variants[1:]:
        changed = {f.name: getattr(settings, f.name) for f in fields(settings) if getattr(settings, f.name) != getattr(base, f.name)}
        print(f"- {name}: {changed}")
    print()
    print("| set | case | structure | oracle | " + " | ".join(f"{n} (/ oracle)" for n in names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for (set_name, case, structure), row in sorted(dice.items()):
        oracle = row["oracle"]
        cells = []
        for n in names:
            ratio = row[n] / oracle if oracle > 0 else float("nan")
            ratios[n].append(ratio)
            cells.append(f"{row[n]:.3f} ({ratio:.2f})")
        print(f"| {set_name} | {case} | {structure} | {oracle:.3f} | " + " | ".join(cells) + " |")
    finite = {n: [r for r in v if r == r] for n, v in ratios.items()}
    print("| **mean of one box / oracle** | | | | " + " | ".join(f"**{statistics.fmean(finite[n]):.3f}**" for n in names) + " |")
    counts = [f"{sum(r >= 0.9 for r in finite[n])} of {len(finite[n])}" for n in names]
    print("| structures at >= 0.90 of the oracle | | | | " + " | ".join(counts) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
