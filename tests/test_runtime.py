"""The encoder runtimes: choice of runtime and precision, the converted-model cache, and the fast
default path against fp32 PyTorch eager on real CT slices (features and masks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsam2.backbones.litemedsam import LiteMedSAMBackbone
from medsam2.backbones.runtime import ExecutionPlan, cpu_has_native_bf16, openvino_available, plan_execution
from medsam2.cli import main
from medsam2.errors import UsageError
from medsam2.evaluate import middle_slice_box
from medsam2.io.volume import load_volume
from medsam2.metrics import dice
from medsam2.preprocess import normalize_intensities

from .shared_data import shared

CPU = torch.device("cpu")
#: measured: OpenVINO fp32 features differ from PyTorch eager by 2.5e-6 (relative L2) on CT slices
FEATURE_TOLERANCE = 1e-4


def test_auto_plan_on_this_cpu():
    plan = plan_execution("auto", "auto", CPU)
    assert plan.runtime == ("openvino" if openvino_available() else "torch")
    assert plan.precision == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_explicit_plans_and_bad_names():
    assert plan_execution("torch", "fp32", CPU) == ExecutionPlan("torch", "fp32")
    with pytest.raises(UsageError, match="unknown runtime"):
        plan_execution("tensorrt", "auto", CPU)
    with pytest.raises(UsageError, match="unknown precision"):
        plan_execution("auto", "int4", CPU)
    with pytest.raises(UsageError, match="fp16 is for GPUs"):
        plan_execution("torch", "fp16", CPU)


@pytest.mark.skipif(cpu_has_native_bf16(), reason="this CPU has native bf16")
def test_bf16_without_hardware_support_is_reported():
    plan = plan_execution("torch", "bf16", CPU)
    assert plan.precision == "bf16" and "emulated" in plan.notes[0]
    if openvino_available():
        plan = plan_execution("openvino", "bf16", CPU)
        assert plan.precision == "fp32" and "OpenVINO runs fp32" in plan.notes[0]


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")
def test_converted_model_is_cached_outside_the_working_folder(lite_backbone, tmp_path, monkeypatch):
    import os

    assert lite_backbone.plan.runtime == "openvino"
    model_path = lite_backbone.encoder.model_path
    assert model_path.is_file()
    assert os.environ["MEDSAM2_CACHE_DIR"] in str(model_path)
    stamp = model_path.stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    again = LiteMedSAMBackbone(runtime="openvino")
    assert again.encoder.model_path == model_path and model_path.stat().st_mtime_ns == stamp  # loaded, not converted again
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")
def test_fast_path_matches_fp32_eager_on_real_slices(lite_backbone):
    volume = load_volume(shared("totalseg_example", "example_ct.nii.gz"))
    reference = load_volume(shared("totalseg_example", "example_seg_fast_force_split.nii.gz")).array
    frames = normalize_intensities(volume.array, "auto").array
    eager = LiteMedSAMBackbone(runtime="torch", precision="fp32")
    for label in (1, 5):  # spleen and liver, on their middle slices
        box = middle_slice_box(reference == label)
        fast = lite_backbone.encode([frames[box.frame]])[0]
        slow = eager.encode([frames[box.frame]])[0]
        error = float((fast.embedding - slow.embedding).norm() / slow.embedding.norm())
        assert error < FEATURE_TOLERANCE
        model_box = fast.geometry.box_to_model(np.array([box.x0, box.y0, box.x1 + 1, box.y1 + 1], dtype=np.float32))
        masks = [(lite_backbone.decode(f, box=model_box).logits > 0).numpy() for f in (fast, slow)]
        assert dice(masks[0], masks[1]) >= 0.99


def test_cli_records_runtime_and_rejects_fp16_on_cpu(tmp_path, capsys):
    import SimpleITK as sitk

    from medsam2.demo import sample_paths

    ct = tmp_path / "five_slices.nii.gz"  # a short scan: PyTorch eager costs 2.3 s a slice
    sitk.WriteImage(sitk.ReadImage(str(sample_paths()[0]))[:, :, 12:17], str(ct))
    report = tmp_path / "report.json"
    code = main(["segment", str(ct), "-o", str(tmp_path / "out.nii.gz"), "--box", "2:45,27,104,85", "--runtime", "torch",
                 "--precision", "fp32", "--device", "cpu", "--quiet", "--report", str(report)])
    assert code == 0
    data = json.loads(report.read_text())
    assert (data["runtime"], data["precision"]) == ("torch", "fp32")
    assert data["timings"]["seconds_per_encoded_slice"] > 0
    capsys.readouterr()
    bad = tmp_path / "bad.nii.gz"
    code = main(["segment", str(ct), "-o", str(bad), "--box", "2:45,27,104,85", "--precision", "fp16", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "fp16 is for GPUs" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.nii.gz").exists()
