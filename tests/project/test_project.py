"""Projects on real scans (MSD hippocampus crops): init by reference or copy, labels imported as
immutable versions, conflicts kept instead of lost, kill -9 during a save, changed images noticed,
export that evaluate and nnU-Net read, and one line for each bad input."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from medsam2.evaluation.datasets import discover_dataset
from medsam2.io.readers import load_volume
from medsam2.project.store import Provenance, open_project
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.shared_data import REPO, shared

CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004")


@pytest.fixture()
def scans(tmp_path):
    """Three real scans and their labels, copied so that a test may change them."""
    for folder in ("images", "labels"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for case in CASES:
            shutil.copy(shared("msd_hippocampus", folder, f"{case}.nii.gz"), tmp_path / "data" / folder)
    return tmp_path / "data"


def labels_of(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_init_import_status_export(scans, tmp_path, capsys):
    project = tmp_path / "proj"
    code, _ = run_cli(["project", "init", project, "--images", str(scans / "images" / "*.nii.gz")], capsys)
    assert code == 0
    code, _ = run_cli(["project", "status", project, "--json"], capsys)
    assert code == 0
    code = run_cli(["project", "import-labels", project, "--labels", scans / "labels", "--user", "ana"], capsys)[0]
    assert code == 0
    assert run_cli(["project", "status", project, "--json"], capsys)[0] == 0
    with open_project(project) as store:
        assert [c.case_id for c in store.cases()] == list(CASES)
        assert all(not c.copied and c.image.parent == (scans / "images").resolve() for c in store.cases())
        status = store.status()
        assert status.by_status == {"unlabelled": 0, "draft": 0, "final": 3} and status.conflicts == 0
        for case in CASES:
            version = store.latest(case)
            assert (version.version, version.status, version.provenance.user) == (1, "final", "ana")
            assert np.array_equal(labels_of(project / version.path), labels_of(scans / "labels" / f"{case}.nii.gz"))

    out = tmp_path / "exported"
    assert run_cli(["project", "export", project, "-o", out], capsys)[0] == 0
    dataset = discover_dataset(out)  # what train and evaluate read
    assert [c.case_id for c in dataset.cases] == list(CASES)
    assert np.array_equal(labels_of(dataset.cases[0].label), labels_of(scans / "labels" / f"{CASES[0]}.nii.gz"))

    nnunet = tmp_path / "Dataset001_Hippocampus"
    assert run_cli(["project", "export", project, "-o", nnunet, "--format", "nnunet"], capsys)[0] == 0
    meta = json.loads((nnunet / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "label_1": 1, "label_2": 2} and meta["numTraining"] == 3
    assert meta["file_ending"] == ".nii.gz" and meta["channel_names"] == {"0": "image"}
    image = sitk.ReadImage(str(nnunet / "imagesTr" / f"{CASES[1]}_0000.nii.gz"))
    source = sitk.ReadImage(str(scans / "images" / f"{CASES[1]}.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(source))
    assert np.allclose(image.GetSpacing(), source.GetSpacing()) and np.allclose(image.GetDirection(), source.GetDirection())
    assert discover_dataset(nnunet).cases[2].case_id == CASES[2]


def test_versions_are_immutable_and_a_stale_save_is_a_conflict(scans, tmp_path, capsys):
    project = tmp_path / "proj"
    assert run_cli(["project", "init", project, "--images", scans / "images", "--copy"], capsys)[0] == 0
    with open_project(project) as store:
        case = store.cases()[0]
        assert case.copied and case.image.parent == project / "images"
        volume = load_volume(case.image)
        made = Provenance(user="ana", model="litemedsam", prompts={"boxes": ["17:1,2,9,9"]}, corrections=2, seconds=31.5)
        first = store.save_version(case.case_id, np.zeros(volume.array.shape, np.uint8), volume, "draft", None, made)
        before = (project / first.path).read_bytes()
        ones = np.ones(volume.array.shape, np.uint8)
        second = store.save_version(case.case_id, ones, volume, "final", based_on=1)
        stale = store.save_version(case.case_id, ones * 2, volume, "draft", based_on=1)  # edited from v1 while v2 was saved
        assert (first.version, second.version, stale.version) == (1, 2, 3)
        assert (first.conflict, second.conflict, stale.conflict) == (False, False, True)
        assert (project / first.path).read_bytes() == before  # an older version never changes
        assert store.latest(case.case_id, "final").version == 2 and store.status(check_files=False).conflicts == 1
        assert store.version(case.case_id, 1).provenance == made


def _save_after(project, case_id, go, value):
    with open_project(project) as store:
        volume = load_volume(store.case(case_id).image)
        go.wait()
        store.save_version(case_id, np.full(volume.array.shape, value, np.uint8), volume, "draft", based_on=None)


def test_two_writers_lose_no_update(scans, tmp_path, capsys):
    project = tmp_path / "proj"
    assert run_cli(["project", "init", project, "--images", scans / "images"], capsys)[0] == 0
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    writers = [context.Process(target=_save_after, args=(project, CASES[0], go, value)) for value in (1, 2)]
    for writer in writers:
        writer.start()
    time.sleep(3)  # both have read their scan and wait
    go.set()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    with open_project(project) as store:
        versions = store.versions(CASES[0])
        assert [v.version for v in versions] == [1, 2] and [v.conflict for v in versions] == [False, True]
        assert sorted(int(labels_of(project / v.path).max()) for v in versions) == [1, 2]


_SAVE_FOREVER = """
import sys, numpy as np
from medsam2.io.readers import load_volume
from medsam2.project.store import open_project
with open_project(sys.argv[1]) as store:
    case = store.cases()[0]
    volume = load_volume(case.image)
    print("ready", flush=True)
    value = 0
    while True:
        value = value % 200 + 1
        store.save_version(case.case_id, np.full(volume.array.shape, value, np.uint8), volume, "draft", based_on=None)
"""


def test_kill_9_during_saves_leaves_a_consistent_project(scans, tmp_path, capsys):
    project = tmp_path / "proj"
    assert run_cli(["project", "init", project, "--images", scans / "images"], capsys)[0] == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(project)], stdout=subprocess.PIPE, text=True, env=env)
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(2.5)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    with open_project(project) as store:
        versions = store.versions(CASES[0])
        assert len(versions) >= 2
        assert [v.version for v in versions] == list(range(1, len(versions) + 1))
        for version in versions:  # every row names a whole file holding what that save wrote
            assert labels_of(project / version.path).max() == (version.version - 1) % 200 + 1
        volume = load_volume(store.case(CASES[0]).image)
        after = store.save_version(CASES[0], np.ones(volume.array.shape, np.uint8), volume, "final", versions[-1].version)
        assert after.version == len(versions) + 1 and not after.conflict


def test_changed_and_missing_images_are_noticed(scans, tmp_path, capsys):
    project = tmp_path / "proj"
    assert run_cli(["project", "init", project, "--images", scans / "images"], capsys)[0] == 0
    changed = scans / "images" / f"{CASES[0]}.nii.gz"
    image = sitk.ReadImage(str(changed))
    sitk.WriteImage(image * 2, str(changed))
    (scans / "images" / f"{CASES[2]}.nii.gz").unlink()
    code = main_status(project, capsys)
    assert code["changed"] == [CASES[0]] and code["missing"] == [CASES[2]]


def main_status(project, capsys):
    from medsam2.cli import main

    assert main(["project", "status", str(project), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_one_folder_per_patient_gets_names_from_the_folders(scans, tmp_path, capsys):
    for patient, case in (("p1", CASES[0]), ("p2", CASES[1])):
        (tmp_path / patient).mkdir()
        shutil.copy(scans / "images" / f"{case}.nii.gz", tmp_path / patient / "flair.nii.gz")
    project = tmp_path / "proj"
    assert run_cli(["project", "init", project, "--images", tmp_path / "p1" / "flair.nii.gz", tmp_path / "p2" / "flair.nii.gz"],
                   capsys)[0] == 0
    with open_project(project) as store:
        assert [c.case_id for c in store.cases()] == ["p1_flair", "p2_flair"]


def test_bad_inputs_give_one_line_and_change_nothing(scans, tmp_path, capsys):
    project = tmp_path / "proj"
    code, err = run_cli(["project", "init", project, "--images", tmp_path / "nothing" / "*.nii.gz"], capsys)
    assert_one_line_error(code, err, 1, "matches no file")
    assert not project.exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, err = run_cli(["project", "init", tmp_path / "busy", "--images", scans / "images"], capsys)
    assert_one_line_error(code, err, 2, "not an empty folder")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    assert run_cli(["project", "init", project, "--images", scans / "images"], capsys)[0] == 0
    code, err = run_cli(["project", "init", project, "--images", scans / "images"], capsys)
    assert_one_line_error(code, err, 2, "already holds a project")
    code, err = run_cli(["project", "status", tmp_path], capsys)
    assert_one_line_error(code, err, 1, "holds no project")
    code, err = run_cli(["project", "export", project, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, 2, "no case has a final label")
    assert not (tmp_path / "out").exists()
    code, err = run_cli(["project", "score", project], capsys)
    assert_one_line_error(code, err, 1, "scoring needs at least one case with a final label")
    code, err = run_cli(["project", "score", project, "--limit", "0"], capsys)
    assert_one_line_error(code, err, 2, "--limit takes a number of cases from 1 up")

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(scans / "labels" / f"{CASES[0]}.nii.gz", wrong / f"{CASES[0]}.nii.gz")
    shutil.copy(scans / "labels" / f"{CASES[0]}.nii.gz", wrong / f"{CASES[1]}.nii.gz")  # another shape than case 003
    code, err = run_cli(["project", "import-labels", project, "--labels", wrong], capsys)
    assert_one_line_error(code, err, 1, f"{CASES[1]}.nii.gz does not fit case '{CASES[1]}'")
    code, err = run_cli(["project", "import-labels", project, "--labels", scans / "images" / "*.txt"], capsys)
    assert_one_line_error(code, err, 1, "names no label file")
    (tmp_path / "other.nii.gz").write_bytes((scans / "labels" / f"{CASES[0]}.nii.gz").read_bytes())
    code, err = run_cli(["project", "import-labels", project, "--labels", tmp_path / "other.nii.gz"], capsys)
    assert_one_line_error(code, err, 1, "matches a case")
    code, err = run_cli(["project", "import-labels", project, "--labels", wrong, "--status", "done"], capsys)
    assert_one_line_error(code, err, 2, "invalid choice")
    with open_project(project) as store:
        assert store.versions() == []  # nothing was saved by any refused import
    assert run_cli(["project", "import-labels", project, "--labels", scans / "labels"], capsys)[0] == 0
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    code, err = run_cli(["project", "export", project, "-o", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, 2, "not an empty folder")


def test_a_project_moved_with_its_images_still_finds_them(scans, tmp_path, capsys):
    project = scans.parent / "proj"
    assert run_cli(["project", "init", project, "--images", scans / "images"], capsys)[0] == 0
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.move(str(tmp_path), str(moved))
    try:
        with open_project(moved / "proj") as store:
            assert all(c.image.is_file() and c.image.is_relative_to(moved) for c in store.cases())
            assert store.status().missing == [] and store.status().changed == []
    finally:
        shutil.move(str(moved), str(tmp_path))


def test_an_empty_final_label_is_refused(scans, tmp_path, capsys):
    project = tmp_path / "proj"
    assert run_cli(["project", "init", project, "--images", scans / "images"], capsys)[0] == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    label = sitk.ReadImage(str(scans / "labels" / f"{CASES[0]}.nii.gz"))
    sitk.WriteImage(label * 0, str(empty / f"{CASES[0]}.nii.gz"))
    code, err = run_cli(["project", "import-labels", project, "--labels", empty], capsys)
    assert_one_line_error(code, err, 1, "holds no structure")
    assert run_cli(["project", "import-labels", project, "--labels", empty, "--status", "draft"], capsys)[0] == 0
    with open_project(project) as store:
        assert [v.status for v in store.versions()] == ["draft"]
