"""The sam2 backbone: checkpoint loading, parity with Meta's SAM2VideoPredictor, memory selection,
bad checkpoints, and the commands end to end. Weights are random (no SAM 2 weights are reachable
here); the parity test is what shows the model is driven exactly as SAM 2 drives it."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from medsam2.backbones.runtime import cpu_has_native_bf16
from medsam2.cli import main
from medsam2.cli.demo import sample_paths
from medsam2.engine.feature_cache import frame_digest
from medsam2.engine.memory import BankSettings
from medsam2.evaluation.metrics import dice
from medsam2.io.volume import Volume
from medsam2.prompts.parse import Box, ObjectPrompts
from tests.counting import CountingBackbone
from tests.shared_data import shared

if os.environ.get("CI") is None:
    pytest.importorskip("sam2", reason="Meta's sam2 is not installed (make test installs it)")

from medsam2.backbones.sam2 import Sam2Backbone  # noqa: E402
from medsam2.backbones.sam2_models import SAM2_CONFIGS, build_sam2_model  # noqa: E402
from medsam2.engine.sam2_step import Sam2Tracker, Sam2TrackingSettings  # noqa: E402
from medsam2.engine.segmenter import Segmenter  # noqa: E402

CPU = torch.device("cpu")
SMALL = 256  # input size of the CPU tests (the weights do not depend on it)


def write_checkpoint(path, config_name: str, seed: int = 0, light: bool = False):
    """A checkpoint in Meta's layout ({"model": state_dict}) with random weights of ``config_name``.

    ``light`` stores each tensor as one random row broadcast to its shape (a few kB for the
    large model): the keys and shapes are exact, which is what loading checks."""
    torch.manual_seed(seed)
    state = build_sam2_model(SAM2_CONFIGS[config_name], None, CPU).state_dict()
    if light:
        state = {k: torch.randn(v.shape[-1:]).expand(v.shape) for k, v in state.items()}
    torch.save({"model": state}, path)
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """Random SAM 2.1 tiny weights, named as a MedSAM2 (Toronto) release (so the CLI runs it at 512)."""
    return write_checkpoint(tmp_path_factory.mktemp("sam2") / "MedSAM2_random.pt", "sam2.1_hiera_t", seed=0)


@pytest.fixture(scope="module")
def ct_frames():
    """Eight real CT slices (liver level of the shared TotalSegmentator CT), abdomen window, 8-bit."""
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(shared("totalseg_example", "example_ct_sm.nii.gz"))))
    z = ct.shape[0] // 2
    return np.clip((ct[z - 4 : z + 4, :96, :] + 160.0) / 400.0 * 255.0, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", [n for n in SAM2_CONFIGS if n != "sam2.1_hiera_t512"])
def test_each_config_is_read_from_its_checkpoint(tmp_path, name):
    path = write_checkpoint(tmp_path / f"{name}.pt", name, light=True)
    backbone = Sam2Backbone(path, CPU)
    assert backbone.config.name == name
    assert backbone.input_size == 1024
    stored = torch.load(path, weights_only=True)["model"]
    key = "image_encoder.trunk.blocks.0.attn.qkv.weight"
    assert torch.equal(backbone.model.state_dict()[key], stored[key].contiguous())


def test_medsam2_toronto_release_runs_at_512(tmp_path, tiny_checkpoint):
    assert Sam2Backbone(tiny_checkpoint, CPU).config.name == "sam2.1_hiera_t512"
    assert Sam2Backbone(tiny_checkpoint, CPU).input_size == 512
    other_name = tmp_path / "tiny.pt"
    other_name.write_bytes(tiny_checkpoint.read_bytes())
    assert Sam2Backbone(other_name, CPU).input_size == 1024
    assert Sam2Backbone(other_name, CPU, model_config="sam2.1_hiera_t512").input_size == 512


def _predictor_masks(checkpoint, jpg_dir, frame, box_edges, size: int = SMALL) -> np.ndarray:
    """SAM2VideoPredictor run the way MedSAM2 (Toronto) runs volumes: forward, reset, reverse, union."""
    from sam2.build_sam import build_sam2_video_predictor

    config = SAM2_CONFIGS["sam2.1_hiera_t"]
    predictor = build_sam2_video_predictor(
        config.yaml, ckpt_path=str(checkpoint), device="cpu", hydra_overrides_extra=config.hydra_overrides(size)
    )
    masks: dict[int, np.ndarray] = {}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = predictor.init_state(str(jpg_dir))
        for reverse in (False, True):
            predictor.reset_state(state)
            predictor.add_new_points_or_box(state, frame_idx=frame, obj_id=1, box=box_edges)
            for index, _, logits in predictor.propagate_in_video(state, reverse=reverse):
                mask = (logits[0, 0] > 0).numpy()
                masks[index] = masks.get(index, np.zeros_like(mask)) | mask
    return np.stack([masks[i] for i in range(len(masks))])


@pytest.fixture(scope="module")
def parity_cases(tmp_path_factory, tiny_checkpoint, ct_frames):
    """size -> (volume, prompt, masks of SAM2VideoPredictor at that input size): the CT frames
    stored as JPEG (as SAM 2 reads a video), a box on frame 3, SAM 2 in fp32 (as it runs on a CPU)."""
    jpg = tmp_path_factory.mktemp("frames")
    for i, frame in enumerate(ct_frames):
        Image.fromarray(frame).save(jpg / f"{i:05d}.jpg", quality=95)
    decoded = np.stack([np.asarray(Image.open(jpg / f"{i:05d}.jpg")) for i in range(len(ct_frames))])
    box = (30, 20, 90, 70)  # inclusive voxel box: edges 30..91, 20..71
    volume, prompt = Volume(array=decoded, source="frames"), ObjectPrompts(1, boxes=[Box(3, *box)])
    cases: dict[int, tuple] = {}

    def case(size: int):
        if size not in cases:
            expected = _predictor_masks(tiny_checkpoint, jpg, 3, np.array([30, 20, 91, 71], dtype=np.float32), size)
            cases[size] = (volume, prompt, expected)
        return cases[size]

    return case


@pytest.mark.parametrize("size", [SMALL, 1024])
def test_fifo_equals_sam2_video_predictor(tiny_checkpoint, parity_cases, size):
    """Every frame, the prompted one included, at the test size and at SAM 2's own input size."""
    volume, prompt, expected = parity_cases(size)
    # parity is an fp32 promise: ``auto`` would pick bf16 autocast on a CPU with avx512_bf16/AMX
    backbone = Sam2Backbone(tiny_checkpoint, CPU, image_size=size, precision="fp32")
    fifo = Segmenter(backbone=backbone, memory="fifo").segment(volume, prompt, window="none").labels > 0
    # the masks are not trivial (neither empty nor full, and not the same on every frame)...
    areas = fifo.reshape(len(fifo), -1).mean(axis=1)
    assert 0.05 < areas.min() and areas.max() < 0.95 and len(set(areas.round(4))) > 3
    # ...and equal to SAM 2's, pixel for pixel, in both directions from the prompt
    assert np.array_equal(fifo, expected), int((fifo != expected).sum())
    if size != SMALL:
        return
    offloaded = Sam2Backbone(tiny_checkpoint, CPU, image_size=SMALL, offload=True, precision="fp32")
    assert offloaded.storage_device == CPU
    assert np.array_equal(Segmenter(backbone=offloaded, memory="fifo").segment(volume, prompt, window="none").labels > 0, expected)
    # what memory attention reads matters: the previous frame alone does not give SAM 2's masks
    previous_only = Segmenter(backbone=backbone, memory="none").segment(volume, prompt, window="none").labels > 0
    assert not np.array_equal(previous_only, expected)


def test_confidence_bank_reads_other_frames_than_fifo(tiny_checkpoint, ct_frames):
    """Frames 0-5 and 11 show one image (with noise), 6-10 another: at frame 11, fifo reads the
    six frames before it (mostly the other image); the bank reads the similar frames further back."""
    rng = np.random.default_rng(0)
    a, b = ct_frames[4].astype(np.float32), np.flipud(np.fliplr(ct_frames[0])).astype(np.float32)
    order = [a] * 6 + [b] * 5 + [a]
    frames = np.stack([np.clip(f + rng.normal(0, 6, f.shape), 0, 255) / 255.0 for f in order]).astype(np.float32)
    prompt = ObjectPrompts(1, boxes=[Box(0, 30, 20, 90, 70)])
    backbone = Sam2Backbone(tiny_checkpoint, CPU, image_size=SMALL)
    reads = {}
    for memory in ("fifo", "confidence"):
        tracker = Sam2Tracker(frames, backbone, memory, Sam2TrackingSettings(BankSettings(capacity=8, admit=0.0), patience=None))
        tracker.run([prompt])
        reads[memory] = {log.frame: set(log.spatial_frames) for log in tracker.reads if log.direction == 1}
    assert reads["fifo"][11] == {0, 5, 6, 7, 8, 9, 10}
    bank = reads["confidence"][11]
    assert 0 in bank and len(bank) <= 7
    assert bank & {1, 2, 3, 4}, bank  # similar frames beyond fifo's reach
    assert len(bank & {6, 7, 8, 9, 10}) < 5


def test_several_objects_with_box_click_and_mask_prompts(tiny_checkpoint, ct_frames):
    """Three objects in one run, each prompted differently; a mask prompt is its frame's answer (SAM 2
    takes an input mask as the output on that frame)."""
    from medsam2.prompts.parse import MaskPrompt, Point

    mask = np.zeros(ct_frames.shape[1:], bool)
    mask[50:80, 10:40] = True
    objects = [
        ObjectPrompts(1, boxes=[Box(2, 30, 20, 90, 70)]),
        ObjectPrompts(2, points=[Point(5, 100, 60), Point(5, 20, 20, positive=False)]),
        ObjectPrompts(3, masks=[MaskPrompt(4, mask)]),
    ]
    backbone = CountingBackbone(Sam2Backbone(tiny_checkpoint, CPU, image_size=SMALL))
    result = Segmenter(backbone=backbone, memory="confidence").segment(Volume(array=ct_frames, source="ct"), objects, window="none")
    # frames between the prompts are visited by both passes but encoded once
    assert sorted(backbone.calls.values()) == [1] * len(ct_frames), backbone.calls.values()
    assert [o.label for o in result.report.objects] == [1, 2, 3]
    assert all(o.prompted_slices for o in result.report.objects)
    on_mask_frame = result.labels[4]
    # the mask prompt's own pixels are labelled 3 unless a more confident object claims them
    assert (on_mask_frame[mask] == 3).mean() > 0.5
    assert result.report.slices_encoded == len(ct_frames)


def test_segment_command_with_sam2(tmp_path, tiny_checkpoint, capsys):
    ct_path, _ = sample_paths()
    image = sitk.ReadImage(str(ct_path))[:, :, 20:25]
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(image, str(scan))
    out, report = tmp_path / "out.nii.gz", tmp_path / "report.json"
    code = main(["segment", str(scan), "-o", str(out), "--box", "2:40,40,90,90", "--backbone", "sam2", "--checkpoint",
                 str(tiny_checkpoint), "--report", str(report), "--quiet"])
    capsys.readouterr()
    assert code == 0
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == image.GetSize() and written.GetSpacing() == image.GetSpacing()
    data = json.loads(report.read_text())
    assert data["backbone"] == "sam2" and data["memory"] == "confidence" and data["runtime"] == "torch"
    assert data["slices_encoded"] >= 1


def test_oneprompt_command_with_sam2(tmp_path, tiny_checkpoint, capsys):
    folder = shared("hc18_fetal_head")
    out = tmp_path / "out"
    code = main(["oneprompt", "--support", str(folder / "000_HC.png"), "--support-mask", str(folder / "000_HC_Annotation.png"),
                 str(folder / "001_HC.png"), "-o", str(out), "--backbone", "sam2", "--checkpoint", str(tiny_checkpoint), "--quiet"])
    capsys.readouterr()
    assert code == 0
    mask = np.asarray(Image.open(out / "001_HC.png"))
    assert mask.shape == np.asarray(Image.open(folder / "001_HC.png")).shape[:2]
    assert json.loads((out / "report.json").read_text())["queries"][0]["name"] == "001_HC.png"


def test_oneprompt_volume_with_sam2_encodes_each_query_slice_once(tiny_checkpoint, ct_frames):
    """A 3D query: the slices searched for the structure are reused when SAM 2 propagates it."""
    from medsam2.engine.oneprompt.run import _windowed, support_from_arrays

    support = Volume(array=ct_frames, source="support")
    mask = np.zeros(ct_frames.shape, dtype=bool)
    mask[4, 20:70, 30:90] = True
    query = Volume(array=np.ascontiguousarray(ct_frames[:, :, ::-1]), source="query")
    counting = CountingBackbone(Sam2Backbone(tiny_checkpoint, CPU, image_size=SMALL))
    result = Segmenter(backbone=counting).one_prompt(*support_from_arrays(support, mask, "support"), [query], window="none")
    outcome = result.queries[0]
    assert outcome.error is None and outcome.labels.shape == query.shape and outcome.located_slice is not None
    calls = [counting.calls[frame_digest(frame)] for frame in _windowed(query, "none")]
    assert calls == [1] * len(ct_frames), calls


def test_models_lists_every_config(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name in SAM2_CONFIGS:
        assert name in text
    assert "litemedsam" in text


def _one_line_error(args, capsys, pattern, tmp_path, exit_code=1):
    out = tmp_path / "never.nii.gz"
    code = main([*args, "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == exit_code, err
    assert len(err) == 1 and err[0].startswith("medsam2: error: "), err
    assert pattern in err[0], err[0]
    assert not out.exists()


def test_bad_checkpoints_give_one_line_errors(tmp_path, tiny_checkpoint, capsys):
    ct_path, _ = sample_paths()
    base = ["segment", str(ct_path), "--box", "20:40,40,90,90", "--backbone", "sam2"]
    _one_line_error(base, capsys, "pass --checkpoint PATH", tmp_path, exit_code=2)
    _one_line_error(base + ["--checkpoint", str(tmp_path / "missing.pt")], capsys, "no checkpoint file at", tmp_path)
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights")
    _one_line_error(base + ["--checkpoint", str(text)], capsys, "not a PyTorch weights file or truncated", tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[: 5_000_000])
    _one_line_error(base + ["--checkpoint", str(truncated)], capsys, "not a PyTorch weights file or truncated", tmp_path)
    from medsam2.backbones.litemedsam import bundled_checkpoint_path  # another model's weights

    _one_line_error(base + ["--checkpoint", str(bundled_checkpoint_path())], capsys, "is not a SAM 2 model", tmp_path)
    _one_line_error(base + ["--checkpoint", str(tiny_checkpoint), "--model-config", "sam2.1_hiera_s"], capsys,
                    "does not fit sam2.1_hiera_s", tmp_path)
    _one_line_error(base + ["--checkpoint", str(tiny_checkpoint), "--model-config", "sam3_hiera_t"], capsys,
                    "unknown --model-config 'sam3_hiera_t'", tmp_path, exit_code=2)
    _one_line_error(["segment", str(ct_path), "--box", "20:40,40,90,90", "--model-config", "sam2.1_hiera_t"], capsys,
                    "--model-config is for --backbone sam2", tmp_path, exit_code=2)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (avx512_bf16/AMX): auto runs fp32")
def test_bf16_autocast_stays_close_to_sam2_video_predictor(tiny_checkpoint, parity_cases):
    """Where ``auto`` picks bf16 autocast, masks are close to SAM 2's fp32 ones, not equal
    (measured on an avx512_bf16 CPU: 522 of 8x96x122 pixels differ, per-frame Dice 0.993 at least)."""
    volume, prompt, expected = parity_cases(SMALL)
    backbone = Sam2Backbone(tiny_checkpoint, CPU, image_size=SMALL)
    result = Segmenter(backbone=backbone, memory="fifo").segment(volume, prompt, window="none")
    assert result.report.precision == "bf16"
    masks = result.labels > 0
    assert min(dice(masks[i], expected[i]) for i in range(len(masks))) >= 0.98


def test_session_correction_on_sam2_tracks_again_from_cached_features(tiny_checkpoint, ct_frames):
    """On SAM 2 a correction tracks the object again from all its prompts: every slice is decoded
    again, none is encoded again; undo gives the previous labels back exactly."""
    counting = CountingBackbone(Sam2Backbone(tiny_checkpoint, CPU, image_size=SMALL))
    session = Segmenter(backbone=counting, memory="fifo").open(Volume(array=ct_frames, source="ct"), window="none")
    session.add(ObjectPrompts(1, boxes=[Box(2, 30, 20, 90, 70)]))
    list(session.propagate())
    before = session.result().labels
    encodes = sum(counting.calls.values())
    summary = session.correct(1, 6, box=(10, 10, 40, 40))
    after = session.result()
    assert sum(counting.calls.values()) == encodes == len(ct_frames) and summary.encoded_slices == 0
    assert set(summary.decoded_slices) == set(range(len(ct_frames)))  # fifo visits every slice
    assert not np.array_equal(after.labels[6], before[6]) and 6 in after.report.objects[0].prompted_slices
    session.undo()
    assert np.array_equal(session.result().labels, before)
