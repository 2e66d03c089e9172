"""Accuracy of every method on the labelled data in ../shared/data, through `medsam2 evaluate`'s
harness: TotalSegmentator CT organs and MR organs, the pyradiomics lesions, four voxelmorph brain
structures, and the HC18 and chest X-ray 2D sets (box and one-prompt protocols). Writes each
set's results under benchmarks/results/accuracy/<set>/ and prints one Markdown table.

    python benchmarks/accuracy.py [--only ct,mr,...] [--out benchmarks/results/accuracy]
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
#: the voxelmorph scan's direction (row-major, LPS): x towards anterior, y inferior, z left
BRAIN_DIRECTION = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def build_sets(tmp: Path) -> dict[str, tuple[Path, str, str, tuple[int, ...] | None]]:
    """name -> (dataset folder, protocol, methods, labels)."""
    import SimpleITK as sitk

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
    data = np.load(SHARED / "voxelmorph_brain_aseg" / "test_scan.npz")
    (tmp / "brain" / "images").mkdir(parents=True)
    (tmp / "brain" / "labels").mkdir()
    seg = np.where(np.isin(data["seg"], list(BRAIN_LABELS)), data["seg"], 0).astype(np.uint8)
    # the file has no affine; its array axes are (L-R, S-I, A-P) at about 1 mm (DESIGN.md), so the
    # image's x runs A-P, y S-I and z L-R: without this direction, "axial" would slice sagittally
    for array, path in ((data["vol"].astype(np.float32), "images"), (seg, "labels")):
        image = sitk.GetImageFromArray(array)
        image.SetDirection(BRAIN_DIRECTION)
        sitk.WriteImage(image, str(tmp / "brain" / path / "brain.nii.gz"))
    (tmp / "brain" / "dataset.json").write_text(json.dumps({"labels": {v: k for k, v in BRAIN_LABELS.items()}}))
    sets["brain"] = (tmp / "brain", "box-mid", "confidence,none,oracle", None)
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
    return sets


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

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = build_sets(Path(tmp))
        wanted = args.only.split(",") if args.only else list(sets)
        for name in wanted:
            folder, protocol, methods, labels = sets[name]
            config = EvaluationConfig(protocol=protocol, methods=tuple(methods.split(",")), labels=labels)
            start = time.perf_counter()
            results = run_evaluation(discover_dataset(folder), Path(args.out) / name, config, segmenters, overwrite=True,
                                     after_case=segmenters.clear)
            seconds = time.perf_counter() - start
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
