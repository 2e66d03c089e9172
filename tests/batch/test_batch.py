"""``medsam2 batch``: local workers and Ray give the masks of sequential runs; failures, resume,
worker deaths and manifest errors (issue 19)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medsam2.cli import main
from medsam2.engine.jobs import SegmentJob, run_segment_job
from medsam2.engine.segmenter import Segmenter
from tests.shared_data import REPO

BUNDLED_CT = REPO / "src" / "medsam2" / "data" / "example_ct_sm.nii.gz"
# (first slice of the crop, box on its middle slice, label): spleen, kidneys, liver of the bundled CT
STUDIES = [(13, "1:11,23,27,54", 1), (10, "1:70,29,90,46", 2), (10, "1:26,28,44,45", 3), (13, "1:45,27,104,85", 4)]


def _write_studies(folder: Path, extra_rows: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.ReadImage(str(BUNDLED_CT))
    rows = []
    for index, (z0, box, label) in enumerate(STUDIES):
        sitk.WriteImage(image[:, :, z0 : z0 + 3], str(folder / f"study{index}.nii.gz"))
        rows.append({"image": f"study{index}.nii.gz", "box": box, "label": label, "name": f"organ{label}"})
    rows += extra_rows or []
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "box", "label", "name"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _manifest_beside_studies(tmp_path: Path, name: str, text: str) -> Path:
    """The studies written into ``tmp_path/in`` and a manifest ``name`` there holding ``text``."""
    folder = tmp_path / "in"
    _write_studies(folder)
    manifest = folder / name
    manifest.write_text(text)
    return manifest


def _report(outdir: Path) -> dict[str, dict]:
    return {row["case"]: row for row in csv.DictReader((outdir / "batch_report.csv").open())}


def _labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def local_batch(tmp_path_factory):
    """The four studies through two local worker processes."""
    folder = tmp_path_factory.mktemp("batch")
    manifest = _write_studies(folder / "in")
    code = main(["batch", str(manifest), "-o", str(folder / "out"), "--workers", "2", "--quiet"])
    return folder, code


def test_two_local_workers_give_the_masks_of_sequential_runs(local_batch, lite_backbone, tmp_path):
    folder, code = local_batch
    assert code == 0
    report = _report(folder / "out")
    assert sorted(report) == [f"study{i}" for i in range(4)]
    assert {row["status"] for row in report.values()} == {"ok"}
    assert len({row["worker"] for row in report.values()}) == 2  # both workers took cases
    segmenter = Segmenter(backbone=lite_backbone)
    for index, (_, box, label) in enumerate(STUDIES):
        job = SegmentJob(folder / "in" / f"study{index}.nii.gz", tmp_path / f"seq{index}.nii.gz", (("label", label), ("box", box)))
        run_segment_job(job, lambda: segmenter)
        batch = _labels(folder / "out" / f"study{index}.nii.gz")
        assert np.array_equal(batch, _labels(tmp_path / f"seq{index}.nii.gz")), f"study{index}"
        assert batch.max() == label and report[f"study{index}"]["volume_ml"].startswith(f"{label}:")


def test_resume_skips_finished_cases_and_redoes_a_half_written_one(local_batch, tmp_path, capsys):
    folder, _ = local_batch
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    lines = (out / "batch_report.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["case"] != "study2"]
    (out / "batch_report.jsonl").write_text("\n".join(kept) + "\n" + lines[0][: len(lines[0]) // 2])  # a line cut by a crash
    (out / "study2.nii.gz").write_bytes((out / "study2.nii.gz").read_bytes()[:100])  # its output half-written
    (out / "study1.nii.gz").unlink()  # an output lost after its report line was written
    before = {i: (out / f"study{i}.nii.gz").stat().st_mtime_ns for i in (0, 3)}
    code = main(["batch", str(folder / "in" / "manifest.csv"), "-o", str(out), "--workers", "1", "--resume", "--quiet"])
    assert code == 0
    report = _report(out)
    statuses = {case: row["status"] for case, row in report.items()}
    assert statuses == {"study0": "skipped", "study3": "skipped", "study1": "ok", "study2": "ok"}
    assert {i: (out / f"study{i}.nii.gz").stat().st_mtime_ns for i in (0, 3)} == before  # not rewritten
    for index in (1, 2):
        assert np.array_equal(_labels(out / f"study{index}.nii.gz"), _labels(folder / "out" / f"study{index}.nii.gz"))
    # a second run without --resume or --overwrite is refused before anything runs
    code = main(["batch", str(folder / "in" / "manifest.csv"), "-o", str(out), "--quiet"])
    assert code == 1 and "pass --resume" in capsys.readouterr().err


def test_a_bad_case_is_reported_and_the_others_finish(tmp_path, capsys):
    folder = tmp_path / "in"
    _write_studies(folder)
    (folder / "broken.nii.gz").write_bytes(b"not a scan")
    manifest = folder / "m.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "image", "box"])
        writer.writerows([["c0", "study0.nii.gz", STUDIES[0][1]], ["broken", "broken.nii.gz", "1:5,5,20,20"],
                          ["off", "study1.nii.gz", "1:5,5,500,20"], ["c3", "study3.nii.gz", STUDIES[3][1]]])
    code = main(["batch", str(manifest), "-o", str(tmp_path / "out"), "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    report = _report(tmp_path / "out")
    assert report["c0"]["status"] == report["c3"]["status"] == "ok"
    assert report["broken"]["status"] == "failed" and "cannot read" in report["broken"]["error"]
    assert report["off"]["status"] == "failed" and "reaches outside the image" in report["off"]["error"]
    assert "broken: cannot read" in err and not (tmp_path / "out" / "broken.nii.gz").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("box,label\n\"1:5,5,20,20\",1\n", "no 'image' column"),
        ("image,box,colour\nstudy0.nii.gz,\"1:5,5,20,20\",red\n", "unknown column 'colour'"),
        ("image,box\nstudy0.nii.gz,\"1:5,5,20,20\"\nmissing.nii.gz,\"1:5,5,20,20\"\n", "row 2: no such file or folder for 'image'"),
        ("image,box,output\nstudy0.nii.gz,\"1:5,5,20,20\",a.nii.gz\nstudy1.nii.gz,\"1:5,5,20,20\",a.nii.gz\n",
         "row 2: writes the same output as row 1"),
        ("image,box\nstudy0.nii.gz,\"1:5,5\"\n", "row 1: cannot read box"),
        ("image,label\nstudy0.nii.gz,2\n", "row 1: no prompt"),
        ("image,box,label\nstudy0.nii.gz,\"1:5,5,20,20\",0\n", "row 1: 'label' is an integer from 1 to 65535"),
        ("image,box\nstudy0.nii.gz,1:5,5,20,20\n", "row 1: more cells than columns"),
    ],
)
def test_manifest_errors_are_refused_before_anything_runs(tmp_path, capsys, content, message):
    manifest = _manifest_beside_studies(tmp_path, "bad.csv", content)
    code = main(["batch", str(manifest), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../../escaped", "..", "sub/escaped", "..\\escaped", "ABSOLUTE"])
def test_a_case_that_is_not_a_file_name_is_refused_before_anything_runs(tmp_path, capsys, name):
    if name == "ABSOLUTE":
        name = str(tmp_path / "escaped")
    folder = tmp_path / "in"
    _write_studies(folder)
    manifest = folder / "cases.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "image", "box"])
        writer.writerows([["fine", "study0.nii.gz", STUDIES[0][1]], [name, "study1.nii.gz", STUDIES[1][1]]])
    out = tmp_path / "a" / "b" / "out"
    code = main(["batch", str(manifest), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"cases.csv row 2: case {name!r} is not a file name (no '/', '\\', '..' or NUL)" in err[0], err
    assert not (tmp_path / "a").exists()  # nothing in OUTDIR, nothing beside it
    assert not list(tmp_path.rglob("*escaped*"))


@pytest.mark.parametrize("name", ["bad\0name", "  "])
def test_jsonl_case_with_nul_or_blank_is_refused(tmp_path, capsys, name):
    row = {"case": name, "image": "study0.nii.gz", "box": "1:5,5,20,20"}
    manifest = _manifest_beside_studies(tmp_path, "m.jsonl", json.dumps(row) + "\n")
    code = main(["batch", str(manifest), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"m.jsonl row 1: case {name!r} is not a file name" in err[0], err
    assert not (tmp_path / "out").exists()


def test_explicit_outputs_may_lie_anywhere(tmp_path):
    """Only the case is a name: a row's own 'output' may point outside OUTDIR, or a case may look like a path suffix."""
    from medsam2.batch.manifest import read_manifest

    manifest = _manifest_beside_studies(
        tmp_path,
        "m.csv",
        "case,image,box,output\n"
        f"one,study0.nii.gz,\"1:5,5,20,20\",../elsewhere/one.nii.gz\n"
        f"two,study1.nii.gz,\"1:5,5,20,20\",{tmp_path / 'abs' / 'two.nii.gz'}\n"
        "three.v2,study2.nii.gz,\"1:5,5,20,20\",\n"
    )
    cases = read_manifest(manifest, tmp_path / "out")
    assert [c.case for c in cases] == ["one", "two", "three.v2"]
    assert [c.job.output for c in cases] == [manifest.parent / "../elsewhere/one.nii.gz", tmp_path / "abs" / "two.nii.gz",
                                             tmp_path / "out" / "three.v2.nii.gz"]


def test_jsonl_manifest_with_unknown_key_names_its_row(tmp_path, capsys):
    folder = tmp_path / "in"
    _write_studies(folder)
    manifest = folder / "m.jsonl"
    rows = [{"image": "study0.nii.gz", "box": ["1:5,5,20,20"]}, {"image": "study1.nii.gz", "boxes": []}]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code = main(["batch", str(manifest), "-o", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and "m.jsonl row 2: unknown key 'boxes'" in capsys.readouterr().err


def test_ray_gives_the_same_masks_and_survives_a_killed_worker(local_batch, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is the optional extra medsam2[ray] (make test installs it)")
    from medsam2.batch.manifest import read_manifest
    from medsam2.batch.pool import RayPool
    from medsam2.batch.run import SegmentWorker, run_batch
    from medsam2.engine.options import ModelOptions

    folder, _ = local_batch
    out = tmp_path / "out"
    cases = read_manifest(folder / "in" / "manifest.csv", out)
    pool = RayPool(SegmentWorker(ModelOptions()), workers=2, threads=1)
    try:
        pids = ray.get([actor.pid.remote() for actor in pool.actors])
        killed = []

        def kill_the_busy_one(outcome):
            if not killed:  # the other actor is mid-case now: kill its process
                busy = next(pid for pid in pids if not outcome.worker.endswith(f"-{pid}"))
                os.kill(busy, signal.SIGKILL)
                killed.append(busy)

        summary = run_batch(cases, pool, out, on_outcome=kill_the_busy_one)
    finally:
        pool.close()
    assert killed
    assert [o.status for o in summary.outcomes] == ["ok"] * 4, [(o.case, o.error) for o in summary.outcomes]
    for index in range(4):
        assert np.array_equal(_labels(out / f"study{index}.nii.gz"), _labels(folder / "out" / f"study{index}.nii.gz")), f"study{index}"


def test_evaluate_with_two_workers_matches_evaluate_here(nnunet_dataset, tmp_path, monkeypatch, lite_backbone):
    args = ["--methods", "confidence,none", "--quiet"]
    assert main(["evaluate", str(nnunet_dataset), "-o", str(tmp_path / "pool"), "--workers", "2", *args]) == 0
    monkeypatch.setattr("medsam2.backbones.build_backbone", lambda *a, **k: lite_backbone)
    assert main(["evaluate", str(nnunet_dataset), "-o", str(tmp_path / "here"), *args]) == 0

    def dice(folder):
        return {(r["case"], r["method"], r["structure"]): r["dice"] for r in csv.DictReader((folder / "per_case.csv").open())}

    pooled, here = dice(tmp_path / "pool"), dice(tmp_path / "here")
    assert len(here) == 8 and pooled == here


def test_a_model_that_cannot_load_stops_the_batch_with_its_error(tmp_path, capsys):
    manifest = _write_studies(tmp_path / "in")
    missing = tmp_path / "none.pth"
    code = main(["batch", str(manifest), "-o", str(tmp_path / "out"), "--workers", "2", "--checkpoint", str(missing), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "pass --checkpoint PATH" in err[0], err
    assert not list((tmp_path / "out").glob("*.nii.gz"))


# a box on the air beside the body on study0's crop: `segment` warns that it looks like background
BACKGROUND_BOX = "1:1,1,17,32"


def test_the_report_carries_the_sanity_warnings_that_segment_gives(tmp_path):
    manifest = _manifest_beside_studies(
        tmp_path,
        "m.csv",
        "case,image,box,name\n"
        f"off,study0.nii.gz,\"{BACKGROUND_BOX}\",spleen\n"
        f"good,study0.nii.gz,\"{STUDIES[0][1]}\",spleen\n"
    )
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "-o", str(out), "--workers", "1", "--quiet"]) == 0
    given = {}
    for case, box in (("off", BACKGROUND_BOX), ("good", STUDIES[0][1])):
        report = tmp_path / f"{case}.json"
        code = main(["segment", str(manifest.parent / "study0.nii.gz"), "--name", "spleen", "--box", box,
                     "-o", str(tmp_path / f"{case}.nii.gz"), "--report", str(report), "--quiet"])
        assert code == 0
        given[case] = json.loads(report.read_text())["warnings"]
    assert any("looks like background" in note for note in given["off"]), given
    assert given["good"] == [], given
    rows = _report(out)
    lines = {row["case"]: row for row in map(json.loads, (out / "batch_report.jsonl").read_text().splitlines())}
    for case, notes in given.items():
        assert lines[case]["warnings"] == notes, case
        assert rows[case]["warnings"] == " | ".join(notes), case


def _write_patients(folder: Path, patients: dict[str, int]) -> None:
    """One folder per patient holding flair.nii.gz (a 3-slice crop from the given slice)."""
    image = sitk.ReadImage(str(BUNDLED_CT))
    for patient, z0 in patients.items():
        (folder / patient).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image[:, :, z0 : z0 + 3], str(folder / patient / "flair.nii.gz"))


def test_one_folder_per_patient_with_the_same_file_names_runs(tmp_path):
    folder = tmp_path / "in"
    _write_patients(folder, {"P001": 13, "P002": 10})
    manifest = folder / "m.csv"
    manifest.write_text(f"image,box\nP001/flair.nii.gz,\"{STUDIES[0][1]}\"\nP002/flair.nii.gz,\"{STUDIES[1][1]}\"\n")
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "-o", str(out), "--workers", "1", "--quiet"]) == 0
    report = _report(out)
    assert sorted(report) == ["P001_flair", "P002_flair"]
    assert {row["status"] for row in report.values()} == {"ok"}
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["P001_flair.nii.gz", "P002_flair.nii.gz"]
    assert {case: Path(row["image"]).parent.name for case, row in report.items()} == {"P001_flair": "P001", "P002_flair": "P002"}


def test_default_case_names_are_unique_and_plain_where_they_can_be(tmp_path):
    from medsam2.batch.manifest import read_manifest

    folder = tmp_path / "in"
    _write_studies(folder)
    _write_patients(folder / "site_a", {"P001": 13, "P002": 10})
    _write_patients(folder / "site_b", {"P001": 13})
    box = "\"1:5,5,20,20\""
    # rows with their own outputs are named by them
    manifest = folder / "outputs.csv"
    manifest.write_text(f"image,box,output\nsite_a/P001/flair.nii.gz,{box},../res/first.nii.gz\n"
                        f"site_a/P002/flair.nii.gz,{box},../res/second.seg.nrrd\n")
    assert [c.case for c in read_manifest(manifest, tmp_path / "out")] == ["first", "second"]
    # an unambiguous manifest keeps the images' names; a folder more only where one does not tell rows apart
    manifest = folder / "mixed.csv"
    manifest.write_text(f"image,box\nstudy0.nii.gz,{box}\nsite_a/P001/flair.nii.gz,{box}\nsite_a/P002/flair.nii.gz,{box}\n"
                        f"site_b/P001/flair.nii.gz,{box}\nstudy1.nii.gz,{box}\n")
    cases = read_manifest(manifest, tmp_path / "out")
    assert [c.case for c in cases] == ["study0", "site_a_P001_flair", "site_a_P002_flair", "site_b_P001_flair", "study1"]
    assert [c.job.output.name for c in cases] == [f"{c.case}.nii.gz" for c in cases]


@pytest.mark.parametrize(
    "content, message",
    [
        ("image,box\nstudy0.nii.gz,\"1:5,5,20,20\"\nstudy0.nii.gz,\"1:9,9,30,30\"\n", "row 2: case 'study0' is also row 1"),
        ("case,image,box\nstudy1,study0.nii.gz,\"1:5,5,20,20\"\n,study1.nii.gz,\"1:5,5,20,20\"\n", "row 2: case 'study1' is also row 1"),
        ("case,image,box\nP002_flair,study0.nii.gz,\"1:5,5,20,20\"\n,P001/flair.nii.gz,\"1:5,5,20,20\"\n,P002/flair.nii.gz,\"1:5,5,20,20\"\n",
         "row 3: case 'P002_flair' is also row 1"),
    ],
)
def test_two_rows_with_one_case_name_are_still_refused(tmp_path, capsys, content, message):
    folder = tmp_path / "in"
    _write_studies(folder)
    _write_patients(folder, {"P001": 13, "P002": 10})
    manifest = folder / "dup.csv"
    manifest.write_text(content)
    code = main(["batch", str(manifest), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_multiview_per_row_or_for_every_row_gives_what_segment_gives(tmp_path, capsys):
    """A row's ``multiview`` (or ``batch --multiview`` for the rows that do not say) fuses the three
    axes as ``segment --multiview`` does: the same label map, voxel for voxel; a row that says false
    keeps the single axis; a value that is no boolean is refused before anything runs."""
    manifest = _manifest_beside_studies(
        tmp_path, "m.csv",
        "case,image,box,multiview\n"
        f"fused,study3.nii.gz,\"{STUDIES[3][1]}\",yes\n"
        f"plain,study3.nii.gz,\"{STUDIES[3][1]}\",false\n"
        f"default,study3.nii.gz,\"{STUDIES[3][1]}\",\n",
    )
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "-o", str(out), "--workers", "1", "--multiview", "--quiet"]) == 0
    expected = {}
    for flag in (True, False):
        target = tmp_path / f"segment-{flag}.nii.gz"
        argv = ["segment", str(manifest.parent / "study3.nii.gz"), "--box", STUDIES[3][1], "-o", str(target), "--quiet"]
        assert main(argv + (["--multiview"] if flag else [])) == 0
        expected[flag] = sitk.GetArrayFromImage(sitk.ReadImage(str(target)))
    assert not np.array_equal(expected[True], expected[False])  # the fusion changes this liver crop
    for case, flag in (("fused", True), ("plain", False), ("default", True)):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz"))), expected[flag]), case
    bad = _manifest_beside_studies(tmp_path, "bad.csv", f"image,box,multiview\nstudy3.nii.gz,\"{STUDIES[3][1]}\",maybe\n")
    assert main(["batch", str(bad), "-o", str(tmp_path / "out2"), "--quiet"]) == 2
    assert "'multiview' is true or false" in capsys.readouterr().err
