"""``medsam2 demo``: five organs of the bundled CT sample, each from one box on one slice."""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from medsam2.errors import OutputError
from medsam2.evaluation.metrics import dice
from medsam2.evaluation.protocols import middle_slice_box
from medsam2.io.readers import load_volume
from medsam2.io.volume import Volume
from medsam2.io.windows import normalize_intensities
from medsam2.io.writers import check_output_path, save_mask
from medsam2.prompts.parse import ObjectPrompts
from medsam2.reporting.montage import pick_slices, write_montage

#: TotalSegmentator labels of the demo organs
DEMO_ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach"}


def sample_paths() -> tuple[Path, Path]:
    """(CT, reference label map) of the bundled TotalSegmentator crop (see data/NOTICE)."""
    data = resources.files("medsam2") / "data"
    return Path(str(data / "example_ct_sm.nii.gz")), Path(str(data / "example_seg.nii.gz"))


def run_demo(output_dir: Path, device: str = "auto", overwrite: bool = False, quiet: bool = False) -> int:
    """Segment the demo organs, print Dice per organ, write labels, montage and report."""
    from medsam2.engine.segmenter import Segmenter
    from medsam2.io.atomic import write_json_atomic

    began = time.perf_counter()
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"{output_dir} exists and is not a folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    labels_path = output_dir / "demo_labels.nii.gz"
    montage_path = output_dir / "demo_montage.png"
    report_path = output_dir / "demo_report.json"
    for path in (labels_path, montage_path, report_path):
        if path.exists() and not overwrite:
            raise OutputError(f"{path} exists; pass --overwrite to replace it")
    check_output_path(labels_path, [], overwrite)  # also checks that the folder is writable

    ct_path, seg_path = sample_paths()
    volume = load_volume(ct_path)
    reference = load_volume(seg_path).array
    objects = []
    for label, name in DEMO_ORGANS.items():
        objects.append(ObjectPrompts(label=label, name=name, boxes=[middle_slice_box(reference == label)]))
    loading = time.perf_counter()
    segmenter = Segmenter(device=device)
    load_seconds = time.perf_counter() - loading
    if not quiet:
        print(f"medsam2 demo: {len(objects)} organs of the bundled CT ({ct_path.name}, {volume.shape[0]} slices), one box each")
    result = segmenter.segment(volume, objects, progress=not quiet and sys.stderr.isatty())

    rows = []
    for obj, report in zip(objects, result.report.objects):
        score = dice(result.labels == obj.label, reference == obj.label)
        box = obj.boxes[0]
        rows.append(
            {
                "organ": obj.name,
                "label": obj.label,
                "prompt": f"{box.frame}:{box.x0:g},{box.y0:g},{box.x1:g},{box.y1:g}",
                "slices": f"{report.first_slice}-{report.last_slice}" if report.slices else "-",
                "volume_ml": report.volume_ml,
                "dice": round(score, 4),
            }
        )
    save_mask(result.labels, volume, labels_path, overwrite=overwrite)
    _write_demo_montage(montage_path, volume, result.labels, reference)
    report = result.report.to_dict()
    report["demo"] = {"dice": {r["organ"]: r["dice"] for r in rows}, "mean_dice": round(float(np.mean([r["dice"] for r in rows])), 4)}
    write_json_atomic(report, report_path, overwrite=True)
    print(_table(rows))
    timings = result.report.timings
    print(
        f"mean Dice {report['demo']['mean_dice']:.3f}; {result.report.slices_encoded} slices encoded in {timings.encode_seconds:.1f} s "
        f"and decoded in {timings.decode_seconds:.1f} s on {result.report.device} ({result.report.runtime} {result.report.precision}); "
        f"wall time {time.perf_counter() - began:.1f} s with {load_seconds:.1f} s to load the model"
    )
    print(f"wrote {labels_path}, {montage_path}, {report_path}")
    return 0


def _table(rows: list[dict]) -> str:
    header = f"{'organ':<14} {'prompt (slice:box)':<22} {'slices':<8} {'mL':>8} {'Dice':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['organ']:<14} {r['prompt']:<22} {r['slices']:<8} {r['volume_ml']:>8.1f} {r['dice']:>7.3f}")
    return "\n".join(lines)


def _write_demo_montage(path: Path, volume: Volume, labels: np.ndarray, reference: np.ndarray) -> None:
    gray = normalize_intensities(volume.array, "abdomen").array
    shown = np.isin(reference, list(DEMO_ORGANS)) | (labels > 0)
    picks = pick_slices(shown.reshape(shown.shape[0], -1).any(axis=1))
    ref = np.where(np.isin(reference, list(DEMO_ORGANS)), reference, 0)
    write_montage(path, volume, gray, labels, picks, reference=ref, names=DEMO_ORGANS)
