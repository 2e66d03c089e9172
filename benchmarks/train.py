"""Fine-tuning on a CPU (`medsam2 train`), measured on data the run never saw:

* HC18 fetal head ultrasound: train on 000-023 (early stopping on 024-029), then `evaluate`
  box-mid (the reference box) on 030-039 with the bundled weights and with best.pth;
* the shared abdominal MR: train on half of its structures (early stopping on the other half of
  the slices of the same structures), evaluate box-mid on the other half of the structures: it
  adapts to a modality, not to a structure.

Each set is trained twice, side by side: ``--tune masks`` (the default: the mask heads only) and
``--tune decoder`` (the prompt encoder and the whole mask decoder, its IoU head on the true IoU).

Prints a Markdown table (Dice before and after, minutes of training) with the machine's cores and
CPU flags, and writes benchmarks/results/train.md.

    python benchmarks/train.py [--epochs 10] [--tune masks,decoder]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from common import REPO, SHARED, machine_line, plain_dataset  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

MR_STRUCTURES = (1, 2, 3, 4, 5, 6, 7, 13, 14, 15, 19, 20, 21, 23, 24, 25, 46, 47)  # >= 400 voxels each
MR_TRAIN = MR_STRUCTURES[1::2]
MR_TEST = MR_STRUCTURES[0::2]


def hc18(tmp: Path) -> tuple[Path, Path, str, tuple[int, ...] | None]:
    hc = SHARED / "hc18_fetal_head"
    pairs = [(hc / f"{i:03d}_HC.png", hc / f"{i:03d}_HC_Annotation.png", f"{i:03d}.png") for i in range(40)]
    train = plain_dataset(tmp / "hc18_train", pairs[:30], link=True)
    test = plain_dataset(tmp / "hc18_test", pairs[30:], link=True)
    return train, test, ",".join(f"{i:03d}" for i in range(24, 30)), None


def mr(tmp: Path) -> tuple[Path, Path, str, tuple[int, ...]]:
    ts = SHARED / "totalseg_example"
    image = sitk.ReadImage(str(ts / "example_mr_sm.nii.gz"))
    labels = sitk.ReadImage(str(ts / "example_seg_mr.nii.gz"))
    train = tmp / "mr_train"
    (train / "images").mkdir(parents=True)
    (train / "labels").mkdir()
    kept = sitk.GetArrayFromImage(labels)
    kept = np.where(np.isin(kept, MR_TRAIN), kept, 0).astype(np.uint8)
    only_train = sitk.GetImageFromArray(kept)
    only_train.CopyInformation(labels)
    half = image.GetSize()[2] // 2
    for name, part in (("upper", slice(0, half)), ("lower", slice(half, None))):  # two halves: one validates
        sitk.WriteImage(image[:, :, part], str(train / "images" / f"mr_{name}.nii.gz"))
        sitk.WriteImage(only_train[:, :, part], str(train / "labels" / f"mr_{name}.nii.gz"))
    test = plain_dataset(tmp / "mr_test", [(ts / "example_mr_sm.nii.gz", ts / "example_seg_mr.nii.gz", "mr.nii.gz")], link=True)
    return train, test, "mr_lower", MR_TEST


def evaluate(dataset: Path, out: Path, labels, checkpoint: Path | None) -> dict[tuple[str, str], float]:
    """Mean Dice per (structure, method): box-mid propagated by the confidence bank, and the oracle
    (the reference box on every slice: the decoder alone), with the bundled weights or ``checkpoint``."""
    from medsam2.backbones import build_backbone
    from medsam2.evaluation.datasets import discover_dataset
    from medsam2.evaluation.harness import MethodSegmenters, run_evaluation
    from medsam2.evaluation.protocols import EvaluationConfig

    segmenters = MethodSegmenters(lambda: build_backbone("litemedsam", checkpoint=checkpoint))
    config = EvaluationConfig(protocol="box-mid", methods=("confidence", "oracle"), labels=labels)
    results = run_evaluation(discover_dataset(dataset), out, config, segmenters, overwrite=True, after_case=segmenters.clear)
    return {(s["structure"], s["method"]): s["dice_mean"] for s in results["summary"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", default="1e-4")
    parser.add_argument("--tune", default="masks,decoder", help="what of LiteMedSAM trains: masks, decoder or both (default)")
    parser.add_argument("--only", choices=("hc18", "mr"), help="one of the two sets")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train.md"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from medsam2.cli import main as medsam2

    rows = []
    tunes = [t for t in args.tune.split(",") if t]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for name, build in (("HC18 030-039 (trained on 000-029)", hc18), ("MR, other half of the structures", mr)):
            if args.only and build.__name__ != args.only:
                continue
            train, test, val_cases, labels = build(tmp)
            before = evaluate(test, tmp / f"before_{build.__name__}", labels, None)
            for tune in tunes:
                run_dir = tmp / f"run_{build.__name__}_{tune}"
                started = time.perf_counter()
                code = medsam2(["train", str(train), "-o", str(run_dir), "--epochs", str(args.epochs), "--val-cases", val_cases,
                                "--batch-size", "8", "--jitter", "5", "--lr", args.lr, "--tune", tune, "--quiet"])
                minutes = (time.perf_counter() - started) / 60
                assert code == 0, f"medsam2 train failed on {name}"
                after = evaluate(test, tmp / f"after_{build.__name__}_{tune}", labels, run_dir / "best.pth")
                cells = []
                for method in ("confidence", "oracle"):
                    keys = [k for k in before if k[1] == method]
                    mean_before = float(np.mean([before[k] for k in keys]))
                    mean_after = float(np.mean([after[k] for k in keys]))
                    gained = sum(after[k] > before[k] for k in keys)
                    cells.append(f"{mean_before:.3f} -> {mean_after:.3f} ({mean_after - mean_before:+.3f}; {gained} of {len(keys)} up)")
                rows.append(f"| {name} | `--tune {tune}` | {len(before) // 2} | {cells[0]} | {cells[1]} | {minutes:.1f} |")
                for key in before:
                    print(f"{name} --tune {tune}: {key[0]} {key[1]} {before[key]:.3f} -> {after[key]:.3f}", flush=True)
    table = "\n".join([
        f"# medsam2 fine-tuning benchmark: {machine_line()}; {args.epochs} epochs at most, lr {args.lr}, box prompts (jitter 5), batch 8",
        "",
        "| test set | trains | structures | one box (box-mid, confidence bank): bundled -> fine-tuned | a box on every slice (oracle): "
        "bundled -> fine-tuned | training minutes (encoding included) |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print(table)
    Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
