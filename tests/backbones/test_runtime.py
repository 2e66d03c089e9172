"""The encoder runtimes: choice of runtime and precision, the converted-model cache, the OpenVINO
fp32 path against fp32 PyTorch eager on real CT slices (features and masks), and the bf16 path
where the CPU has native bf16 (features, masks and whole organs within the measured tolerance).

Equality with an fp32 reference is an fp32 promise: those tests pin ``precision="fp32"``, because
``auto`` picks bf16 on CPUs with avx512_bf16/AMX (and the ``lite_backbone`` fixture runs ``auto``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsam2 import ObjectPrompts, Segmenter
from medsam2.backbones.litemedsam import LiteMedSAMBackbone
from medsam2.backbones.runtime import ExecutionPlan, cpu_has_native_bf16, openvino_available, plan_execution
from medsam2.cli import main
from medsam2.errors import UsageError
from medsam2.evaluation.metrics import dice
from medsam2.evaluation.protocols import middle_slice_box
from medsam2.io.readers import load_volume
from medsam2.io.windows import normalize_intensities
from tests.shared_data import shared

CPU = torch.device("cpu")
#: measured: OpenVINO fp32 features differ from PyTorch eager by 2.5e-6 (relative L2) on CT slices
FEATURE_TOLERANCE = 1e-4
#: measured on an avx512_bf16 CPU, 15 CT slices (3 around the middle slice of each of 5 organs):
#: OpenVINO bf16 embeddings differ from fp32 eager by 0.0425 on average, 0.0456 at most (relative L2)
BF16_FEATURE_TOLERANCE = 0.06
#: measured there: the mask decoded from the reference box, bf16 against fp32 features: Dice 0.988 at least
BF16_SLICE_MASK_DICE = 0.97
#: measured there: whole organs propagated from one box, bf16 against fp32: Dice 0.993 at least (5 organs)
BF16_ORGAN_DICE = 0.98
needs_bf16 = pytest.mark.skipif(
    not (cpu_has_native_bf16() and openvino_available()), reason="this CPU has no native bf16 (avx512_bf16/AMX) or OpenVINO is missing"
)


@pytest.fixture(scope="module")
def ct_slices():
    """The shared TotalSegmentator CT windowed to [0, 1], and its reference labels."""
    volume = load_volume(shared("totalseg_example", "example_ct.nii.gz"))
    reference = load_volume(shared("totalseg_example", "example_seg_fast_force_split.nii.gz")).array
    return volume, normalize_intensities(volume.array, "auto").array, reference


@pytest.fixture(scope="module")
def eager_fp32():
    return LiteMedSAMBackbone(runtime="torch", precision="fp32")


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


def _compare_with_eager(backbone, eager, frames, reference, labels, feature_tolerance, mask_dice):
    """Features of ``backbone`` against fp32 eager on the middle slice of each label's extent
    (relative L2 error), and the mask each decodes from the reference box (Dice)."""
    for label in labels:
        box = middle_slice_box(reference == label)
        tested = backbone.encode([frames[box.frame]])[0]
        slow = eager.encode([frames[box.frame]])[0]
        error = float((tested.embedding - slow.embedding).norm() / slow.embedding.norm())
        assert error < feature_tolerance, f"label {label}: relative feature error {error:.2e}"
        model_box = tested.geometry.box_to_model(np.array([box.x0, box.y0, box.x1 + 1, box.y1 + 1], dtype=np.float32))
        masks = [(eager.decode(f, box=model_box).logits > 0).numpy() for f in (tested, slow)]
        assert dice(masks[0], masks[1]) >= mask_dice


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")
def test_openvino_fp32_matches_fp32_eager_on_real_slices(ct_slices, eager_fp32):
    # pinned to fp32: this is the equality promise, whatever ``auto`` picks on this CPU
    _, frames, reference = ct_slices
    openvino_fp32 = LiteMedSAMBackbone(runtime="openvino", precision="fp32")
    assert openvino_fp32.plan == ExecutionPlan("openvino", "fp32")
    _compare_with_eager(openvino_fp32, eager_fp32, frames, reference, (1, 5), FEATURE_TOLERANCE, 0.99)


@needs_bf16
def test_bf16_features_and_slice_masks_within_measured_tolerance(ct_slices, eager_fp32):
    _, frames, reference = ct_slices
    openvino_bf16 = LiteMedSAMBackbone(runtime="openvino", precision="bf16")
    assert openvino_bf16.plan == ExecutionPlan("openvino", "bf16")
    _compare_with_eager(openvino_bf16, eager_fp32, frames, reference, (1, 2, 3, 5, 6), BF16_FEATURE_TOLERANCE, BF16_SLICE_MASK_DICE)


@needs_bf16
def test_bf16_organs_agree_with_fp32_on_the_shared_ct(ct_slices, backbone):
    """Two organs propagated from one box each: bf16 (``auto`` here, the suite's cached backbone)
    against OpenVINO fp32, and both against the reference."""
    volume, _, reference = ct_slices
    assert backbone.plan.precision == "bf16"
    prompts = [ObjectPrompts(label, boxes=[middle_slice_box(reference == label)]) for label in (1, 3)]
    bf16 = Segmenter(backbone=backbone).segment(volume, prompts)
    fp32 = Segmenter(backbone=LiteMedSAMBackbone(runtime="openvino", precision="fp32")).segment(volume, prompts)
    assert (bf16.report.precision, fp32.report.precision) == ("bf16", "fp32")
    for label in (1, 3):
        assert dice(bf16.labels == label, fp32.labels == label) >= BF16_ORGAN_DICE
        assert dice(bf16.labels == label, reference == label) >= dice(fp32.labels == label, reference == label) - 0.01


def test_cli_records_runtime_and_rejects_fp16_on_cpu(tmp_path, capsys):
    import SimpleITK as sitk

    from medsam2.cli.demo import sample_paths

    ct = tmp_path / "five_slices.nii.gz"  # a short scan: PyTorch eager costs 2.3 s a slice
    sitk.WriteImage(sitk.ReadImage(str(sample_paths()[0]))[:, :, 12:17], str(ct))
    report = tmp_path / "report.json"
    code = main(["segment", str(ct), "-o", str(tmp_path / "out.nii.gz"), "--box", "2:45,27,104,85", "--runtime", "torch",
                 "--precision", "fp32", "--device", "cpu", "--quiet", "--report", str(report)])
    assert code == 0
    data = json.loads(report.read_text())
    assert (data["runtime"], data["precision"]) == ("torch", "fp32")
    assert data["timings"]["seconds_per_encoded_slice"] > 0
    auto_report = tmp_path / "auto.json"
    code = main(["segment", str(ct), "-o", str(tmp_path / "auto.nii.gz"), "--box", "2:45,27,104,85", "--device", "cpu", "--quiet",
                 "--report", str(auto_report)])
    assert code == 0
    data = json.loads(auto_report.read_text())
    assert data["precision"] == plan_execution("auto", "auto", CPU).precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    capsys.readouterr()
    bad = tmp_path / "bad.nii.gz"
    code = main(["segment", str(ct), "-o", str(bad), "--box", "2:45,27,104,85", "--precision", "fp16", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "fp16 is for GPUs" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.nii.gz").exists()


def test_cached_openvino_models_need_no_pytorch_network(lite_backbone):
    """Where OpenVINO's converted models are cached, the bundled backbone is built without
    PyTorch's network and without importing timm or torchvision (about 1.5 s and 250 MB of a
    run); a click, which decodes in PyTorch, builds it then, and answers as the eager network."""
    import subprocess
    import sys

    if lite_backbone.plan.runtime != "openvino":
        pytest.skip("the encoder runs in PyTorch here")
    script = (
        "import sys, numpy as np\n"
        "from medsam2.backbones.litemedsam import LiteMedSAMBackbone\n"
        "b = LiteMedSAMBackbone(precision='fp32')\n"
        "print(b._net is None, 'timm' in sys.modules, 'torchvision' in sys.modules)\n"
        "f = b.encode([np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)])[0]\n"
        "p = b.decode(f, points=np.array([[100.0, 100.0]]), point_labels=np.array([1]))\n"
        "print(b._net is not None, round(float(p.iou), 6))\n"
    )
    LiteMedSAMBackbone(precision="fp32")  # the fp32 models converted and cached
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    lazy, built = run.stdout.split("\n")[:2]
    assert lazy == "True False False"
    eager = LiteMedSAMBackbone(runtime="torch", precision="fp32")
    frame = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    iou = eager.decode(eager.encode([frame])[0], points=np.array([[100.0, 100.0]]), point_labels=np.array([1])).iou
    assert built.split()[0] == "True" and float(built.split()[1]) == pytest.approx(iou, abs=1e-3)
