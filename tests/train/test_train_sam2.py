"""``medsam2 train --backbone sam2``: SAM 2's memory attention, memory encoder and mask decoder
trained on slice sequences of real CT, on a tiny config at low resolution. The weights are random
(no SAM 2 weights are reachable here), so what is checked is that the sequence path learns (its
loss goes down), trains the modules it says and no others, and writes a checkpoint that the sam2
backbone reads back with its config."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medsam2.cli import main
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.shared_data import shared

if os.environ.get("CI") is None:
    pytest.importorskip("sam2", reason="Meta's sam2 is not installed (make test installs it)")

from tests.backbones.test_sam2 import write_checkpoint  # noqa: E402

SPLEEN, LIVER = 1, 5


@pytest.fixture(scope="module")
def ct_dataset(tmp_path_factory):
    """Three cases of 10 slices each, cut from the shared abdominal CT where the spleen is; labels
    spleen and liver (a case the model never trains on validates)."""
    root = tmp_path_factory.mktemp("sam2_train") / "set"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    ct = sitk.ReadImage(str(shared("totalseg_example", "example_ct.nii.gz")))
    seg = sitk.ReadImage(str(shared("totalseg_example", "example_seg.nii.gz")))
    spleen = [z for z in range(seg.GetSize()[2]) if (sitk.GetArrayViewFromImage(seg[:, :, z]) == SPLEEN).any()]
    for k in range(3):
        z0 = spleen[0] + 10 * k
        sitk.WriteImage(ct[:, :, z0 : z0 + 10], str(root / "images" / f"c{k}.nii.gz"))
        labels = seg[:, :, z0 : z0 + 10]
        array = sitk.GetArrayFromImage(labels)
        kept = sitk.GetImageFromArray(np.where(np.isin(array, [SPLEEN, LIVER]), array, 0).astype(np.uint8))
        kept.CopyInformation(labels)
        sitk.WriteImage(kept, str(root / "labels" / f"c{k}.nii.gz"))
    return root


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """Random SAM 2.1 tiny weights, named as a MedSAM2 (Toronto) release (its config runs at 512)."""
    return write_checkpoint(tmp_path_factory.mktemp("sam2_base") / "MedSAM2_random.pt", "sam2.1_hiera_t", seed=0)


COMMON = ["--backbone", "sam2", "--image-size", "256", "--val-cases", "c2", "--labels", str(SPLEEN), "--sequence-length", "3",
          "--batch-size", "4", "--lr", "1e-3", "--patience", "5", "--quiet"]


@pytest.fixture(scope="module")
def sam2_run(ct_dataset, base_checkpoint, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sam2_runs") / "run"
    assert main(["train", str(ct_dataset), "-o", str(run_dir), "--checkpoint", str(base_checkpoint), "--epochs", "2", *COMMON]) == 0
    return run_dir


def _log(run_dir):
    with (run_dir / "train_log.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_sequence_training_lowers_the_loss(sam2_run):
    rows = _log(sam2_run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert float(rows[2]["train_loss"]) < float(rows[1]["train_loss"]), rows
    assert min(float(r["val_loss"]) for r in rows[1:]) < float(rows[0]["val_loss"]), rows


def test_it_trains_memory_attention_memory_encoder_and_decoder_and_not_the_encoder(sam2_run, base_checkpoint):
    base = torch.load(base_checkpoint, weights_only=True)["model"]
    last = torch.load(sam2_run / "last.pth", weights_only=True)
    tuned = last["model"]
    assert set(tuned) == set(base)

    def changed(prefix):
        keys = [k for k in base if k.startswith(prefix)]
        return sum(not torch.equal(base[k], tuned[k]) for k in keys) / len(keys)

    for module in ("memory_attention.", "memory_encoder.", "sam_mask_decoder.", "obj_ptr_proj.", "maskmem_tpos_enc"):
        assert changed(module) > 0.9, module
    assert changed("image_encoder.") == 0
    meta = last["medsam2"]
    assert meta["backbone"] == "sam2" and meta["model_config"] == "sam2.1_hiera_t512" and meta["image_size"] == 256
    assert meta["settings"]["sequence_length"] == 3 and len(meta["base_sha256"]) == 64
    cached = torch.load(sam2_run / "features" / "c0.pt", weights_only=True)
    assert [tuple(level.shape[1:]) for level in cached["high_res"]] == [(32, 64, 64), (64, 32, 32)]


def test_the_checkpoint_runs_in_segment_with_its_config(sam2_run, base_checkpoint, ct_dataset, tmp_path):
    from medsam2.backbones.sam2 import Sam2Backbone

    tuned = sam2_run / "last.pth"
    assert Sam2Backbone(tuned, torch.device("cpu")).config.name == "sam2.1_hiera_t512"  # not read from the file name
    scan = ct_dataset / "images" / "c1.nii.gz"
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(ct_dataset / "labels" / "c1.nii.gz"))) == SPLEEN
    rows, cols = np.nonzero(reference[5])
    box = f"5:{cols.min()},{rows.min()},{cols.max()},{rows.max()}"
    outputs = {}
    for name, checkpoint in (("base", base_checkpoint), ("tuned", tuned)):
        out = tmp_path / f"{name}.nii.gz"
        assert main(["segment", str(scan), "--box", box, "-o", str(out), "--backbone", "sam2", "--checkpoint", str(checkpoint),
                     "--quiet"]) == 0
        outputs[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    assert (outputs["base"] != outputs["tuned"]).sum() > 100


def test_sam2_bad_inputs_give_one_line(ct_dataset, base_checkpoint, tmp_path, capsys):
    code, err = run_cli(["train", ct_dataset, "-o", tmp_path / "r1", "--backbone", "sam2"], capsys)
    assert_one_line_error(code, err, 2, "pass --checkpoint PATH")
    from medsam2.backbones.litemedsam import bundled_checkpoint_path

    code, err = run_cli(["train", ct_dataset, "-o", tmp_path / "r2", "--backbone", "sam2", "--checkpoint", bundled_checkpoint_path()],
                        capsys)
    assert_one_line_error(code, err, 1, "is not a SAM 2 model")
    code, err = run_cli(["train", ct_dataset, "-o", tmp_path / "r3", "--checkpoint", base_checkpoint], capsys)
    assert_one_line_error(code, err, 1, "is not a LiteMedSAM checkpoint")
    code, err = run_cli(["train", ct_dataset, "-o", tmp_path / "r4", "--image-size", "256"], capsys)
    assert_one_line_error(code, err, 2, "--image-size is for --backbone sam2")
    code, err = run_cli(["train", ct_dataset, "-o", tmp_path / "r5", "--backbone", "sam2", "--checkpoint", base_checkpoint,
                         "--image-size", "200"], capsys)
    assert_one_line_error(code, err, 2, "multiple of 32")
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 6))
