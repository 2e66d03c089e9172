"""Read exactly or refuse; bounded cost for any input; safe writes (issue 14).

Every case here was reproduced on the release before this one: it was read wrong without a word,
hung, allocated gigabytes, left a temporary behind, or let two writers both win.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medsam2.cli import main
from medsam2.errors import InputError, MedSAM2Error, OutputError, PromptError, UsageError
from medsam2.io.atomic import lock_path, remove_stale_temporaries
from medsam2.io.limits import ReadLimits
from medsam2.io.readers import load_volume
from medsam2.io.volume import Volume
from medsam2.io.windows import choose_window
from medsam2.io.writers import save_mask
from tests.shared_data import REPO  # noqa: E402

BUNDLED_CT = REPO / "src" / "medsam2" / "data" / "example_ct_sm.nii.gz"


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def one_line(code, err, expected_code, pattern):
    assert code == expected_code, err
    assert len(err) == 1, err
    assert err[0].startswith("medsam2: error: ") and pattern in err[0], err[0]


@pytest.fixture()
def crop5(tmp_path):
    """The bundled CT's slices 12-16, as the issue's reproductions use it."""
    image = sitk.ReadImage(str(BUNDLED_CT))[:, :, 12:17]
    path = tmp_path / "crop5.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if a command builds the model: what it refuses must be refused before."""
    import medsam2.engine.segmenter

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the bad input was refused")

    monkeypatch.setattr(medsam2.engine.segmenter.Segmenter, "__init__", refuse)


# -- read exactly, or refuse ------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_nan_and_inf_are_read_as_stored(tmp_path, suffix):
    array = np.arange(3 * 8 * 9, dtype=np.float32).reshape(3, 8, 9)
    array[0, 1, 2] = np.nan
    array[2, 3, :4] = np.inf
    array[1, 5, 5] = -np.inf
    path = tmp_path / f"odd{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # what SimpleITK alone gives
    volume = load_volume(path)
    assert np.array_equal(~np.isfinite(volume.array), ~np.isfinite(array))
    finite = np.isfinite(array)
    assert np.array_equal(volume.array[finite], array[finite])
    notes = choose_window(volume.array).warnings
    assert any("6 NaN or infinite voxels" in note for note in notes), notes


def test_all_nan_nifti_is_an_error_not_a_mask(tmp_path, capsys):
    path = tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 8, 8), np.nan, np.float32)), str(path))
    with pytest.raises(InputError, match="no finite voxel"):
        load_volume(path)
    out = tmp_path / "o.nii.gz"
    code, err = run_cli(["segment", path, "-o", out, "--box", "1:1,1,5,5", "--quiet"], capsys)
    one_line(code, err, 1, "no finite voxel")
    assert not out.exists()


def test_constant_volume_writes_no_mask(tmp_path, capsys):
    path = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 24, 24), 7, np.int16)), str(path))
    out = tmp_path / "o.nii.gz"
    code, err = run_cli(["segment", path, "-o", out, "--box", "1:4,4,19,19", "--quiet"], capsys)
    one_line(code, err, 1, "the volume is constant")
    assert not out.exists()


def test_complex_input_is_refused(tmp_path):
    path = tmp_path / "complex.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 8, 8), np.complex64)), str(path))
    with pytest.raises(InputError, match="complex-valued"):
        load_volume(path)
    with pytest.raises(InputError, match="complex-valued"):
        Volume(np.ones((3, 8, 8), np.complex64))


def _dicom_series(folder: Path, n_slices: int = 5) -> list[Path]:
    image = sitk.Cast(sitk.ReadImage(str(BUNDLED_CT))[:, :, 12 : 12 + n_slices], sitk.sitkInt16)
    folder.mkdir()
    d = image.GetDirection()
    paths = []
    for z in range(n_slices):
        s = image[:, :, z]
        for key, value in (
            ("0008|0060", "CT"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.99"), ("0020|0013", str(z + 1)),
            ("0020|0032", "\\".join(f"{v:f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z)))),
            ("0020|0037", "\\".join(f"{v:f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
        ):
            s.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        writer.Execute(s)
        paths.append(folder / f"{z:03d}.dcm")
    return paths


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate-header", "cannot be read (truncated or corrupt): 002.dcm"),
        ("truncate-pixels", "cannot be read (truncated or corrupt): 002.dcm"),
        ("garbage", "cannot be read (truncated or corrupt): 002.dcm"),
        ("missing", "unevenly spaced: 6.000 mm between 001.dcm and 003.dcm, 3.000 mm elsewhere"),
        ("duplicate", "lie at the same position"),
    ],
)
def test_dicom_series_with_a_bad_or_missing_slice_is_refused(tmp_path, capfd, damage, message):
    paths = _dicom_series(tmp_path / "series")
    assert load_volume(tmp_path / "series").shape[0] == 5  # the intact series
    blob = paths[2].read_bytes()
    if damage == "truncate-header":
        paths[2].write_bytes(blob[:3000])
    elif damage == "truncate-pixels":
        paths[2].write_bytes(blob[:20000])
    elif damage == "garbage":
        paths[2].write_bytes(b"garbage\n")
    elif damage == "missing":
        paths[2].unlink()
    else:
        (tmp_path / "series" / "002b.dcm").write_bytes(blob)
    capfd.readouterr()
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_volume(tmp_path / "series")
    assert "WARNING" not in capfd.readouterr().err  # ITK's raw warning no longer reaches stderr


def test_dicom_series_reads_the_right_spacing(tmp_path):
    _dicom_series(tmp_path / "series")
    volume = load_volume(tmp_path / "series")
    assert volume.shape == (5, 101, 122) and volume.spacing == pytest.approx((3.0, 3.0, 3.0))


# -- prompts ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "objects, message",
    [
        ([{"label": 1, "boxes": [{"slice": 2, "box": [11, 23, float("nan"), 54]}]}], "NaN is not a number"),
        ([{"label": 1, "points": [{"slice": 2, "point": [[12], 30]}]}], "each point is"),
        ([{"label": 1, "points": [{"slice": "2", "point": [12, 30]}]}], "each point is"),
        ([{"label": 1, "boxes": [{"slice": 2, "box": [11, {"x": 1}, 27, 54]}]}], "each box is"),
        ([{"label": 1, "points": [{"slice": 2, "point": [12, 30], "label": [1]}]}], "a point label is 1"),
        ([{"label": 1, "boxes": ["2:11,23,27,54"]}, {"label": 1, "boxes": ["3:11,23,27,54"]}], "label 1 appears twice"),
        ([{"label": 1.5, "boxes": ["2:11,23,27,54"]}], "'label' must be an integer"),
    ],
)
def test_bad_prompts_json_values_are_one_line_prompt_errors(tmp_path, capsys, crop5, no_model, objects, message):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"objects": objects}))  # json writes NaN as the bare word NaN
    code, err = run_cli(["segment", crop5, "-o", tmp_path / "o.nii.gz", "--prompts", prompts, "--quiet"], capsys)
    one_line(code, err, 2, message)


@pytest.mark.parametrize("label, message", [("0", "outside 1..65535"), ("-3", "outside 1..65535"), ("70000", "outside 1..65535"),
                                            ("1.5", "not an integer label"), ("liver", "not an integer label")])
def test_bad_cli_labels_are_refused_when_parsed(tmp_path, capsys, crop5, no_model, label, message):
    code, err = run_cli(["segment", crop5, "-o", tmp_path / "o.nii.gz", f"--label={label}", "--box", "2:11,23,27,54"], capsys)
    one_line(code, err, 2, "argument --label: ")
    assert message in err[0]


@pytest.mark.parametrize("labels, message", [(-1, "labels must be 0..65535"), (70000, "labels must be 0..65535"), (1.5, "whole numbers")])
def test_save_mask_never_wraps_labels(tmp_path, labels, message):
    volume = Volume(np.zeros((2, 4, 4), np.int16))
    array = np.zeros((2, 4, 4), np.float64 if isinstance(labels, float) else np.int64)
    array[0, 0, 0] = labels
    with pytest.raises(UsageError, match=message):
        save_mask(array, volume, tmp_path / "o.nii.gz")
    assert not list(tmp_path.iterdir())


# -- bounded cost -------------------------------------------------------------------------------------
def _nifti_header_claiming(shape_xyz) -> bytes:
    raw = bytearray(gzip.open(BUNDLED_CT).read()[:352])
    struct.pack_into("<8h", raw, 40, 3, *shape_xyz, 1, 1, 1, 1)
    return bytes(raw)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_a_tiny_file_claiming_a_huge_volume_is_refused_before_reading(tmp_path, suffix):
    path = tmp_path / f"bomb{suffix}"
    if suffix == ".nii":
        path.write_bytes(_nifti_header_claiming((1024, 1024, 1024)) + bytes(1000))
    elif suffix == ".nii.gz":
        path.write_bytes(gzip.compress(_nifti_header_claiming((1024, 1024, 1024)) + bytes(1000)))
    elif suffix == ".nrrd":
        header = "NRRD0004\ntype: int16\ndimension: 3\nsizes: 1024 1024 1024\nendian: little\nencoding: gzip\n\n"
        path.write_bytes(header.encode() + gzip.compress(bytes(1000)))
    else:
        header = (
            "ObjectType = Image\nNDims = 3\nDimSize = 1024 1024 1024\nElementType = MET_SHORT\n"
            "CompressedData = True\nElementDataFile = LOCAL\n"
        )
        path.write_bytes(header.encode() + zlib.compress(bytes(1000)))
    assert path.stat().st_size < 1500
    with pytest.raises(InputError, match=r"declares 1024x1024x1024 voxels \(2.0 GB\).*cannot decode to that much"):
        load_volume(path)


def test_the_size_cap_is_an_option(tmp_path, capsys, crop5, no_model):
    with pytest.raises(InputError, match="over the input limit"):
        load_volume(crop5, limits=ReadLimits(50_000))
    code, err = run_cli(["segment", crop5, "-o", tmp_path / "o.nii.gz", "--box", "2:11,23,27,54", "--max-input-gb", "0.0001"], capsys)
    one_line(code, err, 1, "over the input limit of 104.9 kB; raise it with --max-input-gb")


def _png(width, height, data=b"\0" * 100):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side, message", [(100_000, "decompression bomb"), (10_000, "more than its")])
def test_png_bombs_are_one_line_input_errors(tmp_path, side, message):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(side, side))
    with pytest.raises(InputError, match=message):
        load_volume(path)


@pytest.mark.parametrize("where", ["input", "mask", "prompts"])
def test_a_fifo_is_refused_instead_of_blocking(tmp_path, crop5, where):
    fifo = tmp_path / ("pipe.json" if where == "prompts" else "pipe.nii.gz")
    os.mkfifo(fifo)
    args = {
        "input": [fifo, "--box", "2:11,23,27,54"],
        "mask": [crop5, "--mask", fifo],
        "prompts": [crop5, "--prompts", fifo],
    }[where]
    done = subprocess.run(
        [sys.executable, "-m", "medsam2.cli", "segment", *map(str, args), "-o", str(tmp_path / "o.nii.gz"), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "is a FIFO, not a regular file or folder" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("target", ["input", "output"])
def test_symlink_loops_are_one_line_errors(tmp_path, capsys, crop5, no_model, target):
    loop = tmp_path / "loop.nii.gz"
    os.symlink(loop, loop)
    args = [loop, "-o", tmp_path / "o.nii.gz"] if target == "input" else [crop5, "-o", loop]
    code, err = run_cli(["segment", *args, "--box", "2:11,23,27,54"], capsys)
    one_line(code, err, 1, "is a symbolic link loop")


def test_many_objects_warn_with_the_expected_time(backbone):
    from medsam2.engine.segmenter import Segmenter
    from medsam2.engine.session_state import MANY_OBJECTS, many_objects_note
    from medsam2.prompts.parse import Box, ObjectPrompts

    assert many_objects_note(MANY_OBJECTS, 5) is None
    note = many_objects_note(50, 5)
    assert note.startswith("50 objects") and "about 18 s" in note
    volume = Volume(np.tile(np.linspace(-1000, 400, 24 * 24, dtype=np.float32).reshape(1, 24, 24), (2, 1, 1)))
    objects = [ObjectPrompts(label, boxes=[Box(0, 2 + label % 10, 2, 12 + label % 10, 14)]) for label in range(1, MANY_OBJECTS + 2)]
    report = Segmenter(backbone=backbone).segment(volume, objects).report
    assert any(w.startswith(f"{MANY_OBJECTS + 1} objects: each is decoded") for w in report.warnings)


# -- outputs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "output, code, message",
    [
        ("o.jpg", 2, "JPEG is lossy"),
        ("o.png", 2, "a .png file holds one slice but the label map has 5"),
        ("o.xyz", 2, "cannot write 'o.xyz'"),
        ("folder", 1, "is a folder"),
    ],
)
def test_outputs_that_cannot_hold_the_result_are_refused_before_the_model(tmp_path, capsys, crop5, no_model, output, code, message):
    (tmp_path / "folder").mkdir()
    result, err = run_cli(["segment", crop5, "-o", tmp_path / output, "--box", "2:11,23,27,54"], capsys)
    one_line(result, err, code, message)
    assert not (tmp_path / "folder.nii.gz").exists()


def test_a_second_run_on_the_same_output_is_refused_before_its_work(tmp_path, capsys, crop5, no_model):
    out = tmp_path / "o.nii.gz"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(out).write_text(str(holder.pid))  # a live run holds the output
        code, err = run_cli(["segment", crop5, "-o", out, "--box", "2:11,23,27,54"], capsys)
        one_line(code, err, 1, f"another medsam2 run (process {holder.pid}) is writing")
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(out).exists()  # not ours to remove while that run lives


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path, capsys, crop5, monkeypatch):
    out = tmp_path / "o.nii.gz"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(out).write_text(str(dead.pid))
    import medsam2.engine.jobs

    def stop(*args, **kwargs):
        assert lock_path(out).read_text() == str(os.getpid())  # taken over by this run
        raise OutputError("stop here")

    monkeypatch.setattr(medsam2.engine.jobs, "run_segment_job", stop)
    code, err = run_cli(["segment", crop5, "-o", out, "--box", "2:11,23,27,54"], capsys)
    one_line(code, err, 1, "stop here")  # the lock was taken, the run went on, and it is gone again
    assert not lock_path(out).exists()


_SLOW_WRITER = """
import sys, time
import medsam2.io.writers as volume_io
write = volume_io._write_sitk
def slow(labels, reference, path):
    write(labels, reference, path)
    print("writing", flush=True)
    time.sleep(60)
volume_io._write_sitk = slow
from medsam2.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("suffix", [".nii.gz", ".mhd"])
def test_sigterm_during_a_write_leaves_nothing_behind(tmp_path, suffix):
    array = np.full((2, 24, 24), -1000, np.int16)
    array[:, 6:18, 6:18] = 60
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(scan))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / f"labels{suffix}"
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, "segment", str(scan), "-o", str(out), "--box", "0:5,5,18,18", "--quiet",
         "--report", str(out_dir / "r.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout.readline().strip() == "writing"
    assert [p for p in out_dir.iterdir() if ".tmp" in p.name]  # mid-write: the temporary exists
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert err.strip() == "medsam2: terminated; outputs not finished were removed"
    assert list(out_dir.iterdir()) == []  # no temporary, no lock, no partial output


def test_stale_temporaries_of_a_dead_process_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".o.nii.gz.{dead.pid}.abc123.tmp.nii.gz"
    stale_dir = tmp_path / f".o.mhd.{dead.pid}.xyz789.tmpdir"
    live = tmp_path / f".o.nii.gz.{os.getpid()}.def456.tmp.nii.gz"
    other = tmp_path / ".notes.txt"
    for path in (stale, live, other):
        path.write_text("x")
    stale_dir.mkdir()
    save_mask(np.ones((1, 3, 3), np.uint8), Volume(np.zeros((1, 3, 3), np.int16)), tmp_path / "o.nii.gz")
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path, "o.mhd") == [stale_dir]


def _save_when_released(args):
    path, barrier, value = args
    barrier.wait()
    try:
        save_mask(np.full((1, 8, 8), value, np.uint8), Volume(np.zeros((1, 8, 8), np.int16)), path)
        return "ok"
    except OutputError as exc:
        return str(exc)


def test_two_writers_without_overwrite_exactly_one_wins(tmp_path):
    # spawned, not forked: a child forked from a process whose OpenVINO and ITK threads are running
    # can die or hang on a lock it inherited held (seen once in a full run here: the pool then
    # waited forever for its dead worker)
    context = get_context("spawn")
    for round_ in range(4):
        path = tmp_path / f"o{round_}.nii.gz"
        with context.Manager() as manager:
            barrier = manager.Barrier(2)
            with context.Pool(2) as pool:
                pending = pool.map_async(_save_when_released, [(path, barrier, 1), (path, barrier, 2)])
                outcomes = pending.get(timeout=180)
        assert sorted(o == "ok" for o in outcomes) == [False, True], outcomes
        assert "exists" in next(o for o in outcomes if o != "ok")
        winner = 1 + outcomes.index("ok")
        assert np.all(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) == winner)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_a_file_that_appears_while_writing_is_never_replaced(tmp_path):
    import medsam2.io.writers as volume_io

    path = tmp_path / "o.nii.gz"
    write = volume_io._write_sitk

    def racing(labels, reference, tmp):
        write(labels, reference, tmp)
        path.write_text("the other writer's result")

    volume_io._write_sitk = racing
    try:
        with pytest.raises(OutputError, match="another run wrote it meanwhile"):
            save_mask(np.ones((1, 3, 3), np.uint8), Volume(np.zeros((1, 3, 3), np.int16)), path)
    finally:
        volume_io._write_sitk = write
    assert path.read_text() == "the other writer's result"
    assert [p.name for p in tmp_path.iterdir()] == ["o.nii.gz"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("suffix", [".nii.gz", ".mhd", ".png", ".nrrd"])
def test_written_files_honour_the_umask(tmp_path, umask, mode, suffix):
    previous = os.umask(umask)
    try:
        out = save_mask(np.ones((1, 3, 3), np.uint8), Volume(np.zeros((1, 3, 3), np.int16)), tmp_path / f"o{suffix}")
    finally:
        os.umask(previous)
    written = [p for p in tmp_path.iterdir()]
    assert written and out in written
    for path in written:
        assert path.stat().st_mode & 0o777 == mode, (path.name, oct(path.stat().st_mode))


# -- fuzz -----------------------------------------------------------------------------------------------
def test_fuzzed_nifti_and_png_files_are_read_or_refused_within_the_cap(tmp_path):
    cap_mb = 64
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fuzz_inputs.py"), str(tmp_path), "20261201", "300", str(cap_mb)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["cases"] == 400
    assert summary["unexpected"] == [], summary["unexpected"]
    assert summary["oversized"] == [], summary["oversized"]
    assert summary["refused"] > 100 and summary["loaded"] > 20  # both paths exercised
    assert summary["peak_mb"] - summary["baseline_mb"] < cap_mb + 64, summary
    assert done.stderr.strip() == "", done.stderr[-2000:]  # no ITK, GDCM or nibabel noise
    print(f"fuzz: {summary['cases']} files in {time.perf_counter() - started:.1f} s")


def test_every_refusal_is_a_package_error():
    assert issubclass(InputError, (MedSAM2Error, ValueError)) and issubclass(PromptError, ValueError)
