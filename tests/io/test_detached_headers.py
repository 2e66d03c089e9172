"""Detached headers (MetaImage .mhd/.mha, NRRD .nhdr/.nrrd) read only the data files they may:
with ``confine_to`` (the server), none outside that folder, whatever form the header names them in."""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from medsam2.cli import main
from medsam2.engine.jobs import SegmentJob, run_segment_job
from medsam2.errors import InputError
from medsam2.io.detached import MAX_DATA_FILES, check_data_files, detached_data_files
from medsam2.io.guard import stored_data
from medsam2.io.readers import load_volume
from medsam2.io.volume import data_files_note

ARRAY = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)  # (z, y, x): 4 slices of 6x5
META = "ObjectType = Image\nNDims = 3\nDimSize = 6 5 4\nElementType = MET_UCHAR\nElementDataFile = {}\n"
NRRD = "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 6 5 4\nencoding: raw\ndata file: {}\n"
OUTSIDE = "outside the folder it may read from; a detached header may only name data files next to it"


@pytest.fixture()
def folders(tmp_path):
    """upload/ (what may be read: one slice file per z) and outside/ (a whole volume and its slices)."""
    upload, outside = tmp_path / "upload", tmp_path / "outside"
    upload.mkdir()
    outside.mkdir()
    ARRAY.tofile(outside / "secret.raw")
    for z in range(4):
        ARRAY[z].tofile(upload / f"s{z:03d}.raw")
        ARRAY[z].tofile(outside / f"s{z:03d}.raw")
    return upload, outside


def _refused(header, folder):
    with pytest.raises(InputError) as caught:
        load_volume(header, confine_to=folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) not in message
    return message


def test_data_files_next_to_the_header_read_inside_the_folder(tmp_path, folders):
    image = sitk.GetImageFromArray(ARRAY.astype(np.int16))
    image.SetSpacing((0.5, 0.6, 2.0))
    sitk.WriteImage(image, str(tmp_path / "scan.mhd"))  # writes scan.raw beside it
    volume = load_volume(tmp_path / "scan.mhd", confine_to=tmp_path)
    np.testing.assert_array_equal(volume.array, ARRAY)
    assert volume.spacing == pytest.approx((0.5, 0.6, 2.0))
    assert volume.data_files == ((tmp_path / "scan.raw").resolve(),)
    assert data_files_note(volume) is None

    upload, _ = folders
    ARRAY.tofile(upload / "whole.raw")
    (upload / "scan.nhdr").write_text(NRRD.format("whole.raw"))
    volume = load_volume(upload / "scan.nhdr", confine_to=upload)
    np.testing.assert_array_equal(volume.array, ARRAY)
    assert volume.data_files == ((upload / "whole.raw").resolve(),)
    (upload / "list.mhd").write_text(META.format("LIST 2D") + "".join(f"s{z:03d}.raw\n" for z in range(4)))
    volume = load_volume(upload / "list.mhd", confine_to=upload)
    np.testing.assert_array_equal(volume.array, ARRAY)
    assert volume.data_files == tuple((upload / f"s{z:03d}.raw").resolve() for z in range(4))
    assert load_volume(tmp_path / "scan.mhd").data_files == ((tmp_path / "scan.raw").resolve(),)  # the same without a folder


@pytest.mark.parametrize("suffix", [".mhd", ".mha"])
def test_an_absolute_data_file_is_refused_before_it_is_read(folders, suffix):
    upload, outside = folders
    header = upload / f"upload{suffix}"
    header.write_text(META.format("/etc/passwd"))
    assert _refused(header, upload) == f"the header upload{suffix} names the data file '/etc/passwd' {OUTSIDE}"
    header.write_text(META.format(outside / "secret.raw"))
    assert _refused(header, upload) == f"the header upload{suffix} names the data file '{outside / 'secret.raw'}' {OUTSIDE}"


@pytest.mark.parametrize(
    "name, text",
    [
        ("upload.mhd", META.format("../outside/secret.raw")),
        ("upload.mhd", META.format("~/secret.raw")),  # MetaIO opens it from the working folder
        ("upload.mhd", META.format("LIST 2D") + "s000.raw\ns001.raw\ns002.raw\n{outside}/s003.raw\n"),
        ("upload.mhd", META.format("LIST") + "s000.raw\ns001.raw\ns002.raw\n/proc/self/environ\n"),
        ("upload.mhd", META.format("../outside/s%03d.raw 0 3 1")),
        ("upload.mhd", META.format("sub/../../outside/s%03d.raw")),
        ("upload.mha", META.replace("ElementDataFile = {}", "ElementDataFile\n= {outside}/secret.raw")),  # MetaIO reads on
        ("upload.nhdr", NRRD.format("../outside/secret.raw")),
        ("upload.nrrd", NRRD.format("{outside}/secret.raw") + "\n"),
        ("upload.nhdr", NRRD.format("LIST") + "s000.raw\ns001.raw\ns002.raw\n../outside/s003.raw\n"),
        ("upload.nhdr", NRRD.format("../outside/s%03d.raw 0 3 1")),
    ],
    ids=["dot-dot", "home", "list-2d-absolute", "list-proc", "pattern-dot-dot", "pattern-sub-dot-dot", "value-on-next-line",
         "nrrd-dot-dot", "nrrd-absolute", "nrrd-list", "nrrd-pattern"],
)
def test_lists_patterns_and_dot_dot_cannot_leave_the_folder(folders, name, text):
    upload, outside = folders
    (upload / name).write_text(text.replace("{outside}", str(outside)))
    message = _refused(upload / name, upload)
    assert message.startswith(f"the header {name} names the data file '") and message.endswith(OUTSIDE)


def test_links_out_of_the_folder_are_refused(folders):
    upload, outside = folders
    (upload / "data.raw").symlink_to(outside / "secret.raw")
    (upload / "link.mhd").write_text(META.format("data.raw"))
    assert _refused(upload / "link.mhd", upload) == f"the header link.mhd names the data file 'data.raw' {OUTSIDE}"
    (outside / "elsewhere.mhd").write_text(META.format("secret.raw"))
    (upload / "header.mhd").symlink_to(outside / "elsewhere.mhd")
    assert _refused(upload / "header.mhd", upload) == "the header header.mhd lies outside the folder it may read from"


def test_a_header_without_a_suffix_is_checked_before_it_is_linked(folders):
    upload, outside = folders
    (upload / "upload").write_text(META.format(outside / "secret.raw"))  # sniffed as MetaImage
    assert _refused(upload / "upload", upload) == f"the header upload names the data file '{outside / 'secret.raw'}' {OUTSIDE}"
    (upload / "nrrd").write_text(NRRD.format("../outside/secret.raw"))
    assert _refused(upload / "nrrd", upload).startswith("the header nrrd names the data file '../outside/secret.raw'")


def test_the_command_line_reads_where_the_header_says_and_says_so(folders, capsys):
    upload, outside = folders
    secret = (outside / "secret.raw").resolve()
    header = upload / "elsewhere.mhd"
    header.write_text(META.format(outside / "secret.raw"))
    volume = load_volume(header)
    np.testing.assert_array_equal(volume.array, ARRAY)
    assert volume.data_files == (secret,)
    assert data_files_note(volume) == f"the header elsewhere.mhd reads its voxels from: {secret}"

    assert main(["info", str(header)]) == 0
    assert f"  data files         {secret}\n" in capsys.readouterr().out
    (upload / "slices.mhd").write_text(META.format("LIST 2D") + "".join(f"s{z:03d}.raw\n" for z in range(4)))
    assert main(["info", str(upload / "slices.mhd"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data_files"] == [f"s{z:03d}.raw" for z in range(4)]
    image = sitk.GetImageFromArray(ARRAY)
    sitk.WriteImage(image, str(upload / "plain.mha"))  # the voxels in the file itself: no line
    assert main(["info", str(upload / "plain.mha")]) == 0
    assert "data files" not in capsys.readouterr().out


def test_segment_reports_data_files_away_from_the_header(folders, tmp_path):
    upload, outside = folders
    header = upload / "elsewhere.mhd"
    header.write_text(META.format(outside / "secret.raw"))

    class Seen(Exception):
        pass

    class Recorder:  # stands in for the model: what the report's warnings start from
        def segment(self, volume, objects, **options):
            raise Seen(list(volume.warnings))

    job = SegmentJob(image=header, output=tmp_path / "o.nii.gz", prompt_items=(("box", "1:1,1,4,3"),))
    with pytest.raises(Seen) as seen:
        run_segment_job(job, lambda: Recorder())
    assert f"the header elsewhere.mhd reads its voxels from: {(outside / 'secret.raw').resolve()}" in seen.value.args[0]


def test_lists_and_patterns_are_expanded_as_itk_reads_them(tmp_path):
    header = tmp_path / "h.mhd"
    header.write_text(META.format("img%02d.raw 3"))  # min 3, four slices
    assert detached_data_files(header, ".mhd") == ("img03.raw", "img04.raw", "img05.raw", "img06.raw")
    header.write_text(META.format("LIST 2D") + "a.raw \nb.raw\r\nc.raw\nd.raw\nnot read.raw\n")
    assert detached_data_files(header, ".mhd") == ("a.raw", "b.raw", "c.raw", "d.raw")
    header.write_text(META.format("LOCAL"))
    assert detached_data_files(header, ".mha") == () and detached_data_files(header, ".nii") == ()
    nhdr = tmp_path / "h.nhdr"
    nhdr.write_text(NRRD.format("s%d.raw 6 0 -2 2"))
    assert detached_data_files(nhdr, ".nhdr") == ("s6.raw", "s4.raw", "s2.raw", "s0.raw")
    nhdr.write_text(NRRD.format("LIST") + "a.raw\nb.raw\n")
    assert detached_data_files(nhdr, ".nhdr") == ("a.raw", "b.raw")


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("h.mhd", META.format("s%03d.raw 0 3"), "steps by 0"),  # ITK divides by the step: SIGFPE
        ("h.mhd", META.format("s%03d.raw 1 3 1"), "names 3 files for 4 slices"),  # the fourth slice: unset memory
        ("h.mhd", META.format("LIST 2D") + "a.raw\nb.raw\nc.raw\nd.raw", "lists 3 data files but its size needs 4"),
        ("h.mhd", META.format("s%s.raw 0 3 1"), "must hold one integer"),
        ("h.mhd", "ObjectType = Image\nNDims = 3\nDimSize = 6 5 4\nComment\nElementDataFile = x.raw\n", "has no '='"),
        ("h.nhdr", NRRD.format(f"s%d.raw 0 {MAX_DATA_FILES} 1"), f"more than the {MAX_DATA_FILES}"),
        ("h.nhdr", NRRD.format("s%020d.raw 0 3 1"), "too wide"),  # teem's buffer for the name overflows: SIGSEGV
        ("h.nhdr", NRRD.format("-"), "standard input"),
        ("h.nhdr", NRRD.format("a\tb.raw"), "control characters"),
    ],
    ids=["step-0", "too-few-numbered", "too-few-listed", "not-an-integer", "bare-field-name", "too-many", "too-wide", "stdin",
         "control-character"],
)
def test_lists_and_patterns_itk_would_misread_are_refused(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message):
        detached_data_files(tmp_path / name, tmp_path.joinpath(name).suffix)


def test_missing_and_special_data_files_are_named_as_written(tmp_path):
    header = tmp_path / "h.mhd"
    header.write_text(META.format("gone.raw"))
    for check in (lambda: stored_data(header, ".mhd"), lambda: load_volume(header), lambda: check_data_files(header, ".mhd", None)):
        with pytest.raises(InputError) as caught:
            check()
        assert str(caught.value) == "cannot read h.mhd: its data file 'gone.raw' is missing"
    os.mkfifo(tmp_path / "pipe.raw")  # teem opens an NRRD header's data file as it reads the header: it would block
    (tmp_path / "h.nhdr").write_text(NRRD.format("pipe.raw"))
    with pytest.raises(InputError, match="its data file 'pipe.raw' is a FIFO"):
        check_data_files(tmp_path / "h.nhdr", ".nhdr", None)
