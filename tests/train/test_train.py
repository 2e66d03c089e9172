"""``medsam2 train``: a short fine-tuning on real shared data helps, its checkpoint works in
``segment``, a run resumes, two processes train as one, and bad input gives one line."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medsam2 import load_volume
from medsam2.cli import main
from tests.cli.test_cli import assert_one_line_error, run_cli, save_python_objects
from tests.shared_data import hc18_plain, shared

HC18_TRAIN = range(0, 10)
HC18_VAL = range(30, 33)


@pytest.fixture(scope="module")
def hc18_dataset(tmp_path_factory):
    """HC18 000-009 (training) and 030-032 (validation) in the plain layout; heads are 255."""
    return hc18_plain(tmp_path_factory.mktemp("hc18_train") / "set", [*HC18_TRAIN, *HC18_VAL])


def _log(run_dir: Path) -> list[dict]:
    with (run_dir / "train_log.csv").open() as handle:
        return list(csv.DictReader(handle))


VAL = ",".join(f"{i:03d}" for i in HC18_VAL)
COMMON = ["--val-cases", VAL, "--batch-size", "5", "--lr", "1e-4", "--jitter", "10", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def trained(hc18_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "hc18"
    assert main(["train", str(hc18_dataset), "-o", str(run_dir), "--epochs", "3", *COMMON]) == 0
    return run_dir


def test_a_short_training_lowers_the_validation_loss_and_raises_dice(trained):
    rows = _log(trained)
    assert [int(r["epoch"]) for r in rows][:2] == [0, 1]
    start, best = rows[0], max(rows, key=lambda r: float(r["val_dice"]))
    assert float(best["val_dice"]) > float(start["val_dice"]) + 0.005, rows
    assert min(float(r["val_loss"]) for r in rows[1:]) < float(start["val_loss"]), rows
    for name in ("best.pth", "last.pth", "training_curves.png"):
        assert (trained / name).is_file()
    meta = torch.load(trained / "best.pth", map_location="cpu", weights_only=True)["medsam2"]
    assert meta["backbone"] == "litemedsam" and len(meta["base_sha256"]) == 64
    assert meta["val_cases"] == VAL.split(",") and meta["settings"]["batch_size"] == 5
    assert meta["val_dice"] == pytest.approx(float(best["val_dice"]), abs=1e-5)


def test_the_checkpoint_loads_in_segment_and_changes_its_masks(trained, tmp_path):
    image = shared("hc18_fetal_head", "031_HC.png")
    reference = load_volume(shared("hc18_fetal_head", "031_HC_Annotation.png")).array[0] > 0
    rows, cols = np.nonzero(reference)
    box = f"{cols.min()},{rows.min()},{cols.max()},{rows.max()}"
    assert main(["segment", str(image), "--box", box, "-o", str(tmp_path / "base.png"), "--quiet"]) == 0
    assert main(["segment", str(image), "--box", box, "-o", str(tmp_path / "tuned.png"), "--quiet",
                 "--checkpoint", str(trained / "best.pth")]) == 0
    base, tuned = (load_volume(tmp_path / n).array[0] > 0 for n in ("base.png", "tuned.png"))
    assert (base != tuned).sum() > 100  # the fine-tuned decoder answers differently

    def dice(mask):
        return 2 * (mask & reference).sum() / (mask.sum() + reference.sum())

    assert dice(tuned) >= dice(base) - 0.01


def test_resume_continues_the_log_and_refuses_other_settings(hc18_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", str(hc18_dataset), "-o", str(run_dir), "--epochs", "1", *COMMON]) == 0
    first = _log(run_dir)
    assert [int(r["epoch"]) for r in first] == [0, 1]
    assert main(["train", str(hc18_dataset), "-o", str(run_dir), "--epochs", "2", "--resume", *COMMON]) == 0
    resumed = _log(run_dir)
    assert [int(r["epoch"]) for r in resumed] == [0, 1, 2]
    assert resumed[:2] == first
    code, err = run_cli(["train", hc18_dataset, "-o", run_dir, "--epochs", "3", "--resume", *COMMON, "--lr", "1e-3"], capsys)
    assert_one_line_error(code, err, 2, "lr 0.0001 -> 0.001")
    code, err = run_cli(["train", hc18_dataset, "-o", run_dir, "--epochs", "1", *COMMON], capsys)
    assert_one_line_error(code, err, 1, "pass --resume to continue it or --overwrite")


@pytest.mark.parametrize("kind", ["namespace", "zip"])
def test_resume_refuses_a_last_checkpoint_of_python_objects_in_one_line(tmp_path, capsys, kind):
    """Checked before the dataset is read: a planted last.pth is refused, never unpickled."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marker = tmp_path / "unpickled"
    save_python_objects(run_dir / "last.pth", kind, marker)
    code, err = run_cli(["train", tmp_path / "dataset", "-o", run_dir, "--resume", "--quiet"], capsys)
    assert_one_line_error(code, err, 1, "last.pth: not a medsam2 checkpoint (it holds Python objects that are never unpickled)")
    assert "Traceback" not in err[0] and not marker.exists()
    assert sorted(p.name for p in run_dir.iterdir()) == ["last.pth"]


def test_two_processes_train_as_one(hc18_dataset, tmp_path):
    """2 CPU processes (gloo, torchrun) with the same global batch follow one process's losses."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = [str(hc18_dataset), "--epochs", "2", "--patience", "5", *COMMON]
    assert main(["train", args[0], "-o", str(one), *args[1:]]) == 0
    assert main(["train", args[0], "-o", str(two), "--nproc", "2", *args[1:]]) == 0
    a, b = _log(one), _log(two)
    assert len(a) == len(b) == 3
    for row_a, row_b in zip(a, b):
        for key in ("val_loss", "val_dice") + (("train_loss",) if row_a["train_loss"] else ()):
            assert float(row_a[key]) == pytest.approx(float(row_b[key]), rel=1e-4, abs=1e-5), (key, a, b)  # measured: equal to 6 digits


def test_bad_inputs_give_one_line_and_write_nothing(hc18_dataset, tmp_path, capsys):
    empty = tmp_path / "nolabels"
    (empty / "images").mkdir(parents=True)
    (empty / "images" / "a.png").write_bytes(shared("hc18_fetal_head", "000_HC.png").read_bytes())
    code, err = run_cli(["train", empty, "-o", tmp_path / "r1"], capsys)
    assert_one_line_error(code, err, 1, "no case with a label map")
    shapes = tmp_path / "shapes"
    (shapes / "images").mkdir(parents=True)
    (shapes / "labels").mkdir()
    for i in range(3):
        (shapes / "images" / f"{i}.png").write_bytes(shared("hc18_fetal_head", f"{i:03d}_HC.png").read_bytes())
        (shapes / "labels" / f"{i}.png").write_bytes(shared("hc18_fetal_head", f"{i:03d}_HC_Annotation.png").read_bytes())
    from PIL import Image

    Image.fromarray(np.zeros((20, 30), np.uint8)).save(shapes / "labels" / "2.png")
    code, err = run_cli(["train", shapes, "-o", tmp_path / "r2"], capsys)
    assert_one_line_error(code, err, 1, "2: its label map has another shape")
    code, err = run_cli(["train", hc18_dataset, "-o", tmp_path / "r3", "--labels", "7"], capsys)
    assert_one_line_error(code, err, 2, "label 7 is in no case")
    code, err = run_cli(["train", hc18_dataset, "-o", tmp_path / "missing" / "run"], capsys)
    assert_one_line_error(code, err, 1, "does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: the check cannot fail there
            code, err = run_cli(["train", hc18_dataset, "-o", locked / "run"], capsys)
            assert_one_line_error(code, err, 1, "not writable")
    finally:
        locked.chmod(0o700)
    wrong = tmp_path / "sam2_like.pt"
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(1)}}, wrong)
    code, err = run_cli(["train", hc18_dataset, "-o", tmp_path / "r4", "--checkpoint", wrong], capsys)
    assert_one_line_error(code, err, 1, "is not a LiteMedSAM checkpoint")
    assert not any((tmp_path / name).exists() for name in ("r1", "r2", "r3", "r4"))


def test_train_encoder_changes_the_encoder_weights(tmp_path):
    root = hc18_plain(tmp_path / "tiny", (0, 1, 30))
    run_dir = tmp_path / "run"
    assert main(["train", str(root), "-o", str(run_dir), "--epochs", "1", "--train-encoder", "--val-cases", "030",
                 "--batch-size", "2", "--quiet"]) == 0
    from medsam2.backbones.litemedsam import bundled_checkpoint_path, load_state_dict

    base, tuned = load_state_dict(bundled_checkpoint_path()), load_state_dict(run_dir / "last.pth")
    encoder = [k for k in base if k.startswith("image_encoder.") and base[k].is_floating_point()]
    assert any(not torch.equal(base[k], tuned[k]) for k in encoder)
    assert tuple(torch.load(run_dir / "features" / "000.pt", weights_only=True)["embeddings"].shape[1:]) == (3, 256, 256)


def test_tune_masks_trains_only_the_mask_heads(hc18_dataset, tmp_path, capsys):
    """--tune masks: the predicted IoU that the stop rule and the bank read stays the bundled model's."""
    run_dir = tmp_path / "masks"
    assert main(["train", str(hc18_dataset), "-o", str(run_dir), "--epochs", "1", "--tune", "masks", *COMMON]) == 0
    from medsam2.backbones.litemedsam import bundled_checkpoint_path, load_state_dict

    base, tuned = load_state_dict(bundled_checkpoint_path()), load_state_dict(run_dir / "last.pth")
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.startswith(("mask_decoder.output_upscaling.", "mask_decoder.output_hypernetworks_mlps.")) for k in changed)
    assert any(k.startswith("mask_decoder.output_hypernetworks_mlps.") for k in changed)
    rows = _log(run_dir)
    assert float(rows[1]["val_dice"]) > float(rows[0]["val_dice"]), rows
    code, err = run_cli(["train", hc18_dataset, "-o", tmp_path / "r", "--tune", "masks", "--backbone", "sam2", "--checkpoint",
                         bundled_checkpoint_path()], capsys)
    assert_one_line_error(code, err, 2, "--tune is for --backbone litemedsam")
