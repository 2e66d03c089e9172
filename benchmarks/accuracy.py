"""Accuracy of every method on the labelled data in ../shared/data, through `medsam2 evaluate`'s
harness: TotalSegmentator CT organs and MR organs, the pyradiomics lesions, four voxelmorph brain
structures, and the HC18 and chest X-ray 2D sets (box and one-prompt protocols); then the small
structures (issue 20): each lesion, the small MR organs, the CT pancreas and adrenals, and ten
voxelmorph brain structures, with one box, the previous-slice baseline and the oracle side by side
and where one box loses its Dice (the prompted slice, the slices both have, slices missed or extra).
Writes each set's results under benchmarks/results/accuracy/<set>/ and prints Markdown tables.
The ``held-*`` sets (30 structures no engine change was tuned on) run only when ``--only`` names
them; ``engine_variants.py`` weighs a settings change on them.

    python benchmarks/accuracy.py [--only ct,mr,...,small-ct,...] [--out benchmarks/results/accuracy]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from common import REPO, SHARED, machine_line, plain_dataset  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

#: FreeSurfer labels: left/right lateral ventricle, left/right hippocampus
BRAIN_LABELS = {4: "left_lateral_ventricle", 43: "right_lateral_ventricle", 17: "left_hippocampus", 53: "right_hippocampus"}
#: the small-structure table's brain structures (FreeSurfer aseg labels)
BRAIN_DEEP = {17: "left_hippocampus", 53: "right_hippocampus", 11: "left_caudate", 50: "right_caudate",
              12: "left_putamen", 51: "right_putamen", 10: "left_thalamus", 49: "right_thalamus"}
#: the ventricles go in a set of their own: their failed masks would overwrite the caudate's voxels
BRAIN_VENTRICLES = {4: "left_lateral_ventricle", 43: "right_lateral_ventricle"}
#: the voxelmorph scan's direction (row-major, LPS): x towards anterior, y inferior, z left
BRAIN_DIRECTION = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
#: TotalSegmentator labels of the small-structure table (CT "total" and MR "total_mr" label maps)
CT_SMALL = (7, 8, 9)
MR_SMALL = (1, 2, 3, 4, 7, 8, 9, 23, 24)
#: structures no engine candidate was tuned on (issue 20's held-out check inside ../shared): set name
#: -> labels. Neighbours that touch (an iliac artery and its vein) go in different sets, so that one
#: object's failed mask does not overwrite the other's voxels.
HELD_CT = {"held-ct": (4, 22, 52, 64, 65, 66, 79), "held-ct-b": (19, 21, 29, 63, 67, 68)}
HELD_MR = (6, 14, 21, 25, 46, 47)
HELD_BRAIN = {"held-brain": {13: "left_pallidum", 52: "right_pallidum", 18: "left_amygdala", 54: "right_amygdala",
                             26: "left_accumbens", 58: "right_accumbens"},
              "held-brain-b": {28: "left_ventral_dc", 60: "right_ventral_dc", 16: "brainstem", 14: "third_ventricle",
                               15: "fourth_ventricle"}}
#: methods of the small-structure table: one box, the previous-slice baseline, the oracle
SMALL_METHODS = "confidence,none,oracle"


def brain_dataset(root: Path, labels: dict[int, str]) -> Path:
    """The voxelmorph scan as a plain dataset holding only ``labels`` (FreeSurfer value -> name)."""
    import SimpleITK as sitk

    data = np.load(SHARED / "voxelmorph_brain_aseg" / "test_scan.npz")
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    seg = np.where(np.isin(data["seg"], list(labels)), data["seg"], 0).astype(np.uint8)
    # the file has no affine; its array axes are (L-R, S-I, A-P) at about 1 mm (DESIGN.md), so the
    # image's x runs A-P, y S-I and z L-R: without this direction, "axial" would slice sagittally
    for array, path in ((data["vol"].astype(np.float32), "images"), (seg, "labels")):
        image = sitk.GetImageFromArray(array)
        image.SetDirection(BRAIN_DIRECTION)
        sitk.WriteImage(image, str(root / path / "brain.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"labels": {v: k for k, v in labels.items()}}))
    return root


def totalseg_dataset(root: Path, image: Path, label: Path, names: dict[str, str]) -> Path:
    """One TotalSegmentator example as a plain dataset whose structures carry their names."""
    plain_dataset(root, [(image, label, "case.nii.gz")])
    (root / "dataset.json").write_text(json.dumps({"labels": {v: int(k) for k, v in names.items()}}))
    return root


def build_sets(tmp: Path) -> dict[str, tuple[Path, str, str, tuple[int, ...] | None]]:
    """name -> (dataset folder, protocol, methods, labels)."""
    ts = SHARED / "totalseg_example"
    sets = {}
    ct = plain_dataset(tmp / "ct", [(ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz", "ct.nii.gz")])
    sets["ct"] = (ct, "box-mid", "confidence,fifo,none,oracle", (1, 2, 3, 5, 6))
    mr = plain_dataset(tmp / "mr", [(ts / "example_mr_sm.nii.gz", ts / "example_seg_mr.nii.gz", "mr.nii.gz")])
    sets["mr"] = (mr, "box-mid", "confidence,fifo,none,oracle", (1, 2, 3, 5))
    lesions = SHARED / "pyradiomics_tumor"
    names = ("brain1", "brain2", "breast1")
    lesion_pairs = [(lesions / f"{n}_image.nrrd", lesions / f"{n}_label.nrrd", f"{n}.nrrd") for n in names]
    sets["lesions"] = (plain_dataset(tmp / "lesions", lesion_pairs),
                       "box-mid", "confidence,none,oracle", None)
    sets["brain"] = (brain_dataset(tmp / "brain", BRAIN_LABELS), "box-mid", "confidence,none,oracle", None)
    hc = SHARED / "hc18_fetal_head"
    hc_pairs = [(hc / f"{i:03d}_HC.png", hc / f"{i:03d}_HC_Annotation.png", f"{i:03d}.png") for i in range(40)]
    sets["hc18-oneprompt"] = (plain_dataset(tmp / "hc18", hc_pairs), "oneprompt", "confidence,none,oracle", None)
    cxr = SHARED / "cxr_lung_demo4"
    cxr_pairs = [(cxr / f"{i}.jpg", cxr / f"{i}-mask.png", f"{i}.png") for i in range(1, 5)]
    cxr_root = tmp / "cxr"
    (cxr_root / "images").mkdir(parents=True)
    (cxr_root / "labels").mkdir()
    from PIL import Image

    for image, label, name in cxr_pairs:  # JPEG images become PNG so that images and labels share names
        Image.open(image).save(cxr_root / "images" / name)
        shutil.copy(label, cxr_root / "labels" / name)
    sets["cxr-oneprompt"] = (cxr_root, "oneprompt", "confidence,none,oracle", None)
    names = json.loads((ts / "labels.json").read_text())
    sets["small-lesions"] = (plain_dataset(tmp / "small-lesions", lesion_pairs), "box-mid", SMALL_METHODS, None)
    sets["small-mr"] = (totalseg_dataset(tmp / "small-mr", ts / "example_mr_sm.nii.gz", ts / "example_seg_mr.nii.gz", names["total_mr"]),
                        "box-mid", SMALL_METHODS, MR_SMALL)
    sets["small-ct"] = (totalseg_dataset(tmp / "small-ct", ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz",
                                         names["total"]), "box-mid", SMALL_METHODS, CT_SMALL)
    sets["small-brain"] = (brain_dataset(tmp / "small-brain", BRAIN_DEEP), "box-mid", SMALL_METHODS, None)
    sets["small-ventricles"] = (brain_dataset(tmp / "small-ventricles", BRAIN_VENTRICLES), "box-mid", SMALL_METHODS, None)
    for name, labels in HELD_CT.items():
        sets[name] = (totalseg_dataset(tmp / name, ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz",
                                       names["total"]), "box-mid", SMALL_METHODS, labels)
    sets["held-mr"] = (totalseg_dataset(tmp / "held-mr", ts / "example_mr_sm.nii.gz", ts / "example_seg_mr.nii.gz", names["total_mr"]),
                       "box-mid", SMALL_METHODS, HELD_MR)
    for name, labels in HELD_BRAIN.items():
        sets[name] = (brain_dataset(tmp / name, labels), "box-mid", SMALL_METHODS, None)
    return sets


def small_rows(name: str, per_case: list[dict]) -> list[str]:
    """The small-structure table's rows of one set: per case and structure, the three methods' Dice
    side by side and, for one box, where the Dice goes (see :class:`medsam2.evaluation.report.SliceExtent`)."""
    by_key: dict[tuple[str, str], dict[str, dict]] = {}
    for row in per_case:
        by_key.setdefault((row["case"], row["structure"]), {})[row["method"]] = row
    lines = []
    for (case, structure), methods in sorted(by_key.items()):
        box, previous, oracle = (methods[m] for m in SMALL_METHODS.split(","))
        ratio = float(box["dice"]) / float(oracle["dice"]) if float(oracle["dice"]) > 0 else float("nan")
        reference_slices = int(oracle["prompts"])  # the oracle boxes every reference slice

        def cell(value) -> str:
            return "" if value in ("", None) else f"{float(value):.3f}"

        lines.append(
            f"| {name.removeprefix('small-')} | {case} | {structure} | {reference_slices} | {float(box['dice']):.3f} | "
            f"{float(previous['dice']):.3f} | {float(oracle['dice']):.3f} | {ratio:.2f} | {cell(box['dice_prompted'])} | "
            f"{cell(box['dice_shared'])} | {box['slices_missed']} | {box['slices_extra']} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated set names")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "accuracy"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from medsam2.backbones import build_backbone
    from medsam2.evaluation.datasets import discover_dataset
    from medsam2.evaluation.harness import MethodSegmenters, run_evaluation
    from medsam2.evaluation.protocols import EvaluationConfig

    segmenters = MethodSegmenters(lambda: build_backbone("litemedsam"))
    cache = segmenters.backbone

    lines, small = [], []
    with tempfile.TemporaryDirectory() as tmp:
        sets = build_sets(Path(tmp))
        # the held-out sets serve engine_variants.py (a settings change weighed where it was not tuned)
        wanted = args.only.split(",") if args.only else [n for n in sets if not n.startswith("held-")]
        for name in wanted:
            folder, protocol, methods, labels = sets[name]
            config = EvaluationConfig(protocol=protocol, methods=tuple(methods.split(",")), labels=labels)
            start = time.perf_counter()
            results = run_evaluation(discover_dataset(folder), Path(args.out) / name, config, segmenters, overwrite=True,
                                     after_case=segmenters.clear)
            seconds = time.perf_counter() - start
            if name.startswith("small-"):
                small.extend(small_rows(name, results["per_case"]))
                print(f"{name}: {seconds:.0f} s", flush=True, file=sys.stderr)
                continue
            for s in results["summary"]:
                ratio = "" if s["ratio_to_oracle"] is None else f"{s['ratio_to_oracle']:.3f}"
                lines.append(f"| {name} | {protocol} | {s['structure']} | {s['method']} | {s['cases']} | {s['dice_mean']:.3f} | "
                             f"{s['nsd_mean']:.3f} | {s['hd95_median_mm']} | {ratio} |")
            print(f"{name}: {seconds:.0f} s", flush=True, file=sys.stderr)
    print(f"# medsam2 accuracy benchmark: {machine_line()}; encoder {cache.plan.runtime} {cache.plan.precision}")
    print()
    print("| set | protocol | structure | method | cases | Dice mean | NSD mean (2 mm) | HD95 median mm | / oracle |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    if small:
        print()
        print("## Small structures: one box (box-mid, confidence bank), previous slice only, oracle (a box on every slice)")
        print()
        print("| set | case | structure | slices | one box | previous slice | oracle | one box / oracle | "
              "one box: prompted-slice Dice | Dice on slices both have | slices missed | slices extra |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(small))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
