"""Bad input on the command line: one line on stderr, a non-zero exit, nothing written."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from medsam2.cli import main


@pytest.fixture()
def scan(tmp_path):
    """A small CT-like scan (5 slices of 32x40, Hounsfield-like values) with a bright blob."""
    array = np.full((5, 32, 40), -1000, np.int16)
    array[:, 4:28, 4:36] = 40
    array[1:4, 10:20, 12:24] = 200
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 3.0))
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


class PlantedObject:
    """A Python object whose unpickling would create ``marker`` (what a hostile pickle could do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def save_python_objects(path, kind, marker):
    """A file of Python objects that ``torch.load(weights_only=True)`` refuses: torch.save's zip
    format, its legacy format, or a plain pickle.dump."""
    import argparse
    import pickle

    import torch

    if kind == "zip":
        torch.save({"model": {"w": torch.zeros(2)}, "x": PlantedObject(marker)}, path)
    elif kind == "legacy":
        torch.save(PlantedObject(marker), path, _use_new_zipfile_serialization=False)
    elif kind == "namespace":
        torch.save(argparse.Namespace(a=1, planted=PlantedObject(marker)), path)
    else:
        path.write_bytes(pickle.dumps({"x": PlantedObject(marker)}, protocol=pickle.HIGHEST_PROTOCOL))


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def assert_one_line_error(code, err, expected_code, pattern):
    assert code == expected_code
    assert len(err) == 1, err
    assert err[0].startswith("medsam2: error: ")
    assert pattern in err[0], err[0]


def test_missing_input(tmp_path, capsys):
    code, err = run_cli(["segment", tmp_path / "nope.nii.gz", "-o", tmp_path / "o.nii.gz", "--box", "1:1,1,5,5"], capsys)
    assert_one_line_error(code, err, 1, "no such file")
    assert not (tmp_path / "o.nii.gz").exists()


def test_not_an_image_and_truncated(tmp_path, capsys, scan):
    fake = tmp_path / "fake.nii.gz"
    fake.write_text("hello")
    code, err = run_cli(["segment", fake, "-o", tmp_path / "o.nii.gz", "--box", "1:1,1,5,5"], capsys)
    assert_one_line_error(code, err, 1, "cannot read")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(scan.read_bytes()[:200])
    code, err = run_cli(["segment", cut, "-o", tmp_path / "o.nii.gz", "--box", "1:1,1,5,5"], capsys)
    assert_one_line_error(code, err, 1, "truncated")
    assert not (tmp_path / "o.nii.gz").exists()


def test_unsupported_suffix(tmp_path, capsys):
    weird = tmp_path / "scan.xyz"
    weird.write_text("1")
    code, err = run_cli(["segment", weird, "-o", tmp_path / "o.nii.gz", "--box", "1:1,1,5,5"], capsys)
    assert_one_line_error(code, err, 2, "cannot tell what kind of image")


def test_4d_input(tmp_path, capsys):
    image = sitk.JoinSeries([sitk.Image(8, 8, 3, sitk.sitkInt16) for _ in range(2)])
    path = tmp_path / "dyn.nii.gz"
    sitk.WriteImage(image, str(path))
    code, err = run_cli(["segment", path, "-o", tmp_path / "o.nii.gz", "--box", "1:1,1,5,5"], capsys)
    assert_one_line_error(code, err, 1, "--time-index N (0..1)")


@pytest.mark.parametrize(
    "prompt, expected",
    [
        (["--box", "2:30,5,45,20"], "outside the image"),
        (["--box", "2:10,5,10,20"], "zero or negative width"),
        (["--box", "9:10,5,20,20"], "slice 9 is out of range"),
        (["--point", "2:10,10,2"], "point label"),
        (["--point", "2:10,10,0"], "no foreground point"),
        (["--box", "2:10,5"], "SLICE:x0,y0,x1,y1"),
        ([], "no prompt given"),
    ],
)
def test_bad_prompts(tmp_path, capsys, scan, prompt, expected):
    out = tmp_path / "o.nii.gz"
    code, err = run_cli(["segment", scan, "-o", out, *prompt], capsys)
    assert_one_line_error(code, err, 2, expected)
    assert not out.exists()


def test_empty_mask_prompt(tmp_path, capsys, scan):
    mask = sitk.Image(40, 32, 5, sitk.sitkUInt8)
    sitk.WriteImage(mask, str(tmp_path / "empty.nii.gz"))
    code, err = run_cli(["segment", scan, "-o", tmp_path / "o.nii.gz", "--mask", tmp_path / "empty.nii.gz"], capsys)
    assert_one_line_error(code, err, 2, "is empty")


@pytest.mark.parametrize(
    "content, expected",
    [("{broken", "not valid JSON"), ('{"objects": [{"label": 1, "boxes": ["2:5,5,20,20"], "bogus": 1}]}', "unknown keys")],
)
def test_bad_prompts_json(tmp_path, capsys, scan, content, expected):
    path = tmp_path / "prompts.json"
    path.write_text(content)
    code, err = run_cli(["segment", scan, "-o", tmp_path / "o.nii.gz", "--prompts", path], capsys)
    assert_one_line_error(code, err, 2, expected)


def test_outputs_refused(tmp_path, capsys, scan):
    existing = tmp_path / "exists.nii.gz"
    existing.write_bytes(b"keep me")
    code, err = run_cli(["segment", scan, "-o", existing, "--box", "2:5,5,20,20"], capsys)
    assert_one_line_error(code, err, 1, "pass --overwrite")
    assert existing.read_bytes() == b"keep me"
    code, err = run_cli(["segment", scan, "-o", scan, "--box", "2:5,5,20,20", "--overwrite"], capsys)
    assert_one_line_error(code, err, 1, "is an input")
    code, err = run_cli(["segment", scan, "-o", "/proc/medsam2/o.nii.gz", "--box", "2:5,5,20,20"], capsys)
    assert_one_line_error(code, err, 1, "does not exist")
    code, err = run_cli(["segment", scan, "-o", tmp_path / "o.nii.gz", "--box", "2:5,5,20,20", "--report", existing], capsys)
    assert_one_line_error(code, err, 2, ".json")


def test_unwritable_output_folder(tmp_path, capsys, scan):
    # root may write anywhere on disk, but not into /proc: the write itself must fail cleanly
    code, err = run_cli(["segment", scan, "-o", "/proc/o.nii.gz", "--box", "2:5,5,20,20", "--quiet"], capsys)
    assert code == 1 and len(err) == 1 and ("not writable" in err[0] or "cannot write" in err[0])


def test_unknown_option_is_one_line(tmp_path, capsys, scan):
    code, err = run_cli(["segment", scan, "-o", tmp_path / "o.nii.gz", "--frobnicate"], capsys)
    assert_one_line_error(code, err, 2, "unrecognized arguments")


def test_partly_nan_volume_warns_and_writes(tmp_path, capsys):
    # a constant or all-NaN volume is refused (tests/test_reliability.py); NaN voxels among finite ones are filled, with a warning
    array = np.full((3, 24, 24), np.nan, np.float32)
    array[1, 6:18, 6:18] = 100.0
    array[1, 0, :] = 5.0
    image = sitk.GetImageFromArray(array)
    path = tmp_path / "odd.mha"  # MetaImage keeps NaN (the NIfTI writer turns it into 0)
    sitk.WriteImage(image, str(path))
    out = tmp_path / "o.nii.gz"
    report = tmp_path / "r.json"
    code = main(["segment", str(path), "-o", str(out), "--box", "1:4,4,19,19", "--quiet", "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning" in err and "NaN" in err
    assert sitk.ReadImage(str(out)).GetSize() == (24, 24, 3)
    assert json.loads(report.read_text())["warnings"]


def test_bad_checkpoint_is_one_line(tmp_path, capsys, scan):
    broken = tmp_path / "weights.pth"
    broken.write_bytes(b"\x80\x02not really a checkpoint")
    code, err = run_cli(["segment", scan, "-o", tmp_path / "o.nii.gz", "--box", "2:5,5,20,20", "--checkpoint", broken], capsys)
    assert_one_line_error(code, err, 1, "cannot read checkpoint")
    code, err = run_cli(["segment", scan, "-o", tmp_path / "o.nii.gz", "--box", "2:5,5,20,20", "--checkpoint", tmp_path / "no.pth"], capsys)
    assert_one_line_error(code, err, 1, "pass --checkpoint PATH")
    import torch

    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    other = tmp_path / "other.pth"
    code, err = run_cli(["segment", scan, "-o", tmp_path / "o.nii.gz", "--box", "2:5,5,20,20", "--checkpoint", other], capsys)
    assert_one_line_error(code, err, 1, "is not a LiteMedSAM checkpoint")
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("kind", ["zip", "legacy", "namespace", "pickle"])
def test_a_checkpoint_of_python_objects_is_never_unpickled(tmp_path, capsys, recwarn, scan, kind):
    planted = tmp_path / "weights.pth"
    marker = tmp_path / "unpickled"
    save_python_objects(planted, kind, marker)
    code, err = run_cli(["segment", scan, "-o", tmp_path / "o.nii.gz", "--box", "2:5,5,20,20", "--checkpoint", planted], capsys)
    assert_one_line_error(code, err, 1, f"{planted}: not a medsam2 checkpoint (it holds Python objects that are never unpickled)")
    assert "Traceback" not in err[0]
    assert not marker.exists() and not (tmp_path / "o.nii.gz").exists()
    assert not [w for w in recwarn if "pickle" in str(w.message)]  # torch's warning would be more lines on stderr
