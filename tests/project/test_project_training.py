"""medsam2 train --project on real scans (five MSD hippocampus crops, label 1): a model version
with its validation split fixed per project, activated only when it beats the model it started
from, measured on the same cases; project activate; one line for each refused option."""

from __future__ import annotations

import json

import pytest

from medsam2.project.models import model_versions
from medsam2.project.store import open_project
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.shared_data import shared

CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_007")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project of five final cases, and one training run of two epochs from the bundled weights."""
    project = tmp_path_factory.mktemp("project") / "hippo"
    images = [str(shared("msd_hippocampus", "images", f"{case}.nii.gz")) for case in CASES]
    labels = [str(shared("msd_hippocampus", "labels", f"{case}.nii.gz")) for case in CASES]
    from medsam2.cli import main

    assert main(["project", "init", str(project), "--images", *images]) == 0
    assert main(["project", "import-labels", str(project), "--labels", *labels]) == 0
    assert main(["train", "--project", str(project), "--epochs", "2", "--labels", "1", "--quiet"]) == 0
    return project


def test_a_run_writes_a_model_version_on_a_fixed_split(trained):
    with open_project(trained) as store:
        models = model_versions(store)
        split = store.meta("split")
    assert [m.name for m in models] == ["v1"]
    model = models[0]
    assert sorted([*model.train_cases, *model.val_cases]) == sorted(CASES) and model.val_cases
    assert all(split[c] == "val" for c in model.val_cases) and all(split[c] == "train" for c in model.train_cases)
    assert model.base == "bundled" and model.settings["labels"] == [1]
    assert model.active == (model.val_dice > model.val_dice_base)  # a tie is the starting weights themselves
    assert (trained / "models" / "v1" / "best.pth").is_file() and (trained / "models" / "v1" / "train_log.csv").is_file()
    assert json.loads((trained / "models" / "v1" / "model.json").read_text())["name"] == "v1"


def test_the_next_run_starts_from_the_active_model_on_the_same_cases(trained, capsys):
    with open_project(trained) as store:
        first = model_versions(store)[0]
    assert first.active, "two epochs on these cases raise the validation Dice (measured: see docs/project.md)"
    assert run_cli(["train", "--project", trained, "--epochs", "1", "--labels", "1", "--quiet"], capsys)[0] == 0
    with open_project(trained) as store:
        second = model_versions(store)[1]
        assert second.base == "v1" and second.val_cases == first.val_cases
        # epoch 0 of the new run is v1 measured again on the same validation cases
        assert second.val_dice_base == pytest.approx(first.val_dice, abs=2e-3)
        assert second.active == (store.meta("active_model") == "v2")
        assert second.active or "kept inactive" in second.reason
    assert run_cli(["project", "activate", trained, "v1"], capsys)[0] == 0
    with open_project(trained) as store:
        assert store.meta("active_model") == "v1"


def test_refused_options_and_too_few_cases(trained, tmp_path, capsys):
    code, err = run_cli(["train", "--project", trained, "-o", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, 2, "drop -o")
    code, err = run_cli(["train"], capsys)
    assert_one_line_error(code, err, 2, "name a DATASET and -o RUN_DIR")
    code, err = run_cli(["project", "activate", trained, "v9"], capsys)
    assert_one_line_error(code, err, 1, "has no model v9")
    small = tmp_path / "small"
    image = shared("msd_hippocampus", "images", f"{CASES[0]}.nii.gz")
    assert run_cli(["project", "init", small, "--images", image], capsys)[0] == 0
    code, err = run_cli(["train", "--project", small], capsys)
    assert_one_line_error(code, err, 2, "at least two cases")
    assert not (small / "models").exists()


def test_other_commands_use_the_active_model(trained, tmp_path, capsys):
    image = shared("msd_hippocampus", "images", f"{CASES[0]}.nii.gz")
    box = ["--box", "17:8,30,28,46"]
    with open_project(trained) as store:
        active = next(m for m in model_versions(store) if m.active)
    out = tmp_path / "by_project.nii.gz"
    assert run_cli(["segment", image, "-o", out, *box, "--project", trained, "--report", tmp_path / "r.json", "--quiet"],
                   capsys)[0] == 0
    assert json.loads((tmp_path / "r.json").read_text())["checkpoint"] == str(active.checkpoint(trained))
    code, err = run_cli(["segment", image, "-o", tmp_path / "x.nii.gz", *box, "--project", trained,
                         "--checkpoint", active.checkpoint(trained)], capsys)
    assert_one_line_error(code, err, 2, "not both")
    code, err = run_cli(["segment", image, "-o", tmp_path / "x.nii.gz", *box, "--project", trained, "--backbone", "sam2"], capsys)
    assert_one_line_error(code, err, 2, "trained for the litemedsam backbone")
    assert not (tmp_path / "x.nii.gz").exists()


def test_kill_9_during_training_activates_nothing(trained, capsys):
    import os
    import signal
    import subprocess
    import sys
    import time

    with open_project(trained) as store:
        before = (store.meta("active_model"), [m.name for m in model_versions(store)])
    command = [sys.executable, "-m", "medsam2.cli", "train", "--project", str(trained), "--epochs", "5", "--labels", "1", "--quiet"]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any((trained / "models").glob(f"v{len(before[1]) + 1}/*.pth")):
        time.sleep(0.2)  # killed once the run has written its first weights, half-way through its epochs
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    with open_project(trained) as store:
        assert (store.meta("active_model"), [m.name for m in model_versions(store)]) == before
    assert run_cli(["project", "status", trained], capsys)[0] == 0


def test_training_shares_the_projects_slice_features_with_the_viewer(trained):
    """The run above encoded its cases' slices that hold label 1 into the project's feature
    folder under the starting weights' key, which is the viewer's: a case opened there reads
    those slices and encodes only the ones beyond the structure that propagation looks at."""
    from medsam2 import ObjectPrompts, Segmenter, load_volume
    from medsam2.engine.feature_disk import FeatureFolder, model_key
    from medsam2.evaluation.protocols import middle_slice_box

    segmenter = Segmenter()  # the bundled weights: what the run started from
    folder = FeatureFolder(trained / "cache" / "features", model_key(segmenter.backbone))
    assert len(list(folder.folder.glob("*.pt"))) > 10
    reference = load_volume(shared("msd_hippocampus", "labels", f"{CASES[0]}.nii.gz")).array == 1
    session = segmenter.open(load_volume(shared("msd_hippocampus", "images", f"{CASES[0]}.nii.gz")), feature_folder=folder)
    session.add(ObjectPrompts(1, boxes=[middle_slice_box(reference)]))
    list(session.propagate())
    labelled = int(reference.any(axis=(1, 2)).sum())
    assert session.cache.disk_reads >= labelled and session.cache_stats().misses < session.cache.disk_reads
