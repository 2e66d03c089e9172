"""Sanity warnings: silent on correct prompts, heard on the plausible mistakes.

Correct prompts: the bounding box of the reference on the middle slice of each structure's extent
(``box-mid``), for every structure of at least MIN_VOXELS voxels in the shared CT (full and 30-slice
crop), MR, pyradiomics lesions, and HC18 heads (2D). Mistakes made from each correct box: x and y
swapped (where the swapped box fits the frame), the box on a slice 8 or more slices away from the
structure, the box moved into the image's corner, and one click on the middle slice instead of a box
(on the five organs of the accuracy tests in the CT, and on every structure of the other cases).

    .venv/bin/python benchmarks/sanity.py            # about 25 minutes on 2 cores
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, machine_line  # noqa: E402

from medsam2 import Box, ObjectPrompts, Point, load_volume  # noqa: E402
from medsam2.backbones import build_backbone  # noqa: E402
from medsam2.backbones.devices import resolve_device  # noqa: E402
from medsam2.engine.engine import Engine  # noqa: E402
from medsam2.engine.feature_cache import CachedBackbone  # noqa: E402
from medsam2.engine.sanity import end_evidence, sanity_warnings  # noqa: E402
from medsam2.evaluation.protocols import middle_slice_box  # noqa: E402

MIN_VOXELS = 300
#: the organs of the accuracy tests and the demo
ORGANS = ("spleen", "kidney_right", "kidney_left", "liver", "stomach")
def ct_names() -> dict[int, str]:
    return {int(k): v for k, v in json.loads((SHARED / "totalseg_example" / "labels.json").read_text())["total"].items()}


def mr_names() -> dict[int, str]:
    return {int(k): v for k, v in json.loads((SHARED / "totalseg_example" / "labels.json").read_text())["total_mr"].items()}


def cases():
    """(case name, volume, reference label map, {label: name})."""
    ts = SHARED / "totalseg_example"
    yield "ct", load_volume(ts / "example_ct.nii.gz"), load_volume(ts / "example_seg_fast_force_split.nii.gz").array, ct_names()
    yield "ct_crop", load_volume(ts / "example_ct_sm.nii.gz"), load_volume(ts / "example_seg.nii.gz").array, ct_names()
    yield "mr", load_volume(ts / "example_mr_sm.nii.gz"), load_volume(ts / "example_seg_mr.nii.gz").array, mr_names()
    for name in ("brain1", "brain2", "breast1"):
        folder = SHARED / "pyradiomics_tumor"
        yield name, load_volume(folder / f"{name}_image.nrrd"), load_volume(folder / f"{name}_label.nrrd").array, {1: "lesion"}
    for index in range(0, 40, 4):
        folder = SHARED / "hc18_fetal_head"
        reference = load_volume(folder / f"{index:03d}_HC_Annotation.png").array
        reference = (reference[..., 0] if reference.ndim == 4 else reference) > 0
        yield f"hc18_{index:03d}", load_volume(folder / f"{index:03d}_HC.png"), reference.astype(np.uint8), {1: "head"}


def mistakes(box: Box, truth: np.ndarray) -> dict[str, ObjectPrompts | None]:
    """The mistaken prompts made from a correct box on ``truth`` (frames, rows, cols)."""
    n, rows, cols = truth.shape
    out: dict[str, ObjectPrompts | None] = {}
    if box.y1 <= cols - 1 and box.x1 <= rows - 1 and abs((box.x1 - box.x0) - (box.y1 - box.y0)) + abs(box.x0 - box.y0) > 4:
        out["swapped"] = ObjectPrompts(1, boxes=[Box(box.frame, box.y0, box.x0, box.y1, box.x1)])
    extent = np.flatnonzero(truth.reshape(n, -1).any(axis=1))
    away = [f for f in (extent[0] - 8, extent[-1] + 8) if 0 <= f < n]
    if away:
        out["wrong_slice"] = ObjectPrompts(1, boxes=[Box(int(away[0]), box.x0, box.y0, box.x1, box.y1)])
    w, h = box.x1 - box.x0, box.y1 - box.y0
    if w < cols / 3 and h < rows / 3:
        out["corner"] = ObjectPrompts(1, boxes=[Box(box.frame, 1, 1, 1 + w, 1 + h)])
    if n > 1:
        from scipy import ndimage

        depth = ndimage.distance_transform_edt(truth[box.frame])
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        out["one_click"] = ObjectPrompts(1, points=[Point(box.frame, float(x), float(y))])
    return out


def evidence_text(evidence) -> str:
    """The figures the rules read, for tuning them: per box conf/fill/outside/background/swapped,
    slices found, and per reached end its growth and confidence."""
    parts = [f"n={len(evidence.present)}"]
    for box in evidence.boxes:
        swapped = f" sw={box.swapped[0]:.2f}/{box.swapped[1]:.2f}" if box.swapped else ""
        parts.append(f"c={box.confidence or 0:.2f} f={box.fill:.2f} o={box.outside:.2f} bg={box.background:.2f}{swapped}")
    for item in end_evidence(evidence):
        parts.append(f"end{item.end}:g={item.growth:.1f},c={item.confidence:.2f}")
    if evidence.volume_ml is not None:
        parts.append(f"{evidence.volume_ml:.0f}mL")
    return " ".join(parts)


def main() -> None:
    print(machine_line())
    began = time.perf_counter()
    backbone = CachedBackbone(build_backbone("litemedsam", resolve_device("cpu")), 4096)
    engine = Engine(backbone)
    rows_out = []
    for case, volume, reference, names in cases():
        frames_reference = reference  # axial: frames are (z, y, x)
        labels = [int(v) for v in np.unique(reference) if v > 0 and (reference == v).sum() >= MIN_VOXELS]
        if case != "ct":  # the full CT checks every structure for false alarms; the others the five organs
            labels = [label for label in labels if names.get(label) in ORGANS or len(names) == 1]
        for label in labels:
            truth = frames_reference == label
            box = middle_slice_box(truth)
            name = names.get(label, f"label{label}")
            trials = {"correct": ObjectPrompts(1, name, boxes=[box])}
            if case != "ct" or name in ORGANS:
                trials.update(mistakes(box, truth))
            for kind, prompts in trials.items():
                if prompts is None:
                    continue
                prompts.name = name
                session = engine.open(volume)
                session.add(prompts)
                result = session.result()
                evidence = session.evidence()[0]
                notes = sanity_warnings(evidence)
                obj = result.report.objects[0]
                dice = 2 * ((result.labels == 1) & truth).sum() / max((result.labels == 1).sum() + truth.sum(), 1)
                rows_out.append((case, name, kind, len(notes), float(dice), obj.mean_confidence, notes[:1]))
                flag = "WARN" if notes else "    "
                print(f"{case:<9} {name[:22]:<22} {kind:<11} {flag} dice {dice:.3f} {evidence_text(evidence)} "
                      f"{(notes[0][:110] if notes else '')}", flush=True)
    print("\n| prompts | results | warned | cases |")
    print("|---|---|---|---|")
    groups = {
        ("correct", "Dice >= 0.70"): [r for r in rows_out if r[2] == "correct" and r[4] >= 0.7],
        ("correct", "Dice < 0.70"): [r for r in rows_out if r[2] == "correct" and r[4] < 0.7],
    }
    for kind in ("swapped", "wrong_slice", "corner", "one_click"):
        groups[(kind, "Dice < 0.50")] = [r for r in rows_out if r[2] == kind and r[4] < 0.5]
        groups[(kind, "Dice >= 0.50 (harmless)")] = [r for r in rows_out if r[2] == kind and r[4] >= 0.5]
    for (kind, results), members in groups.items():
        if members:
            print(f"| {kind} | {results} | {sum(r[3] > 0 for r in members)} | {len(members)} |")
    print(f"{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
