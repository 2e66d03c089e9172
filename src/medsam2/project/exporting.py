"""A project's final labels as a dataset: ``evaluate``'s layout (``images/`` + ``labels/``, which
``train`` and ``evaluate`` read) or nnU-Net v2's raw layout (``imagesTr/CASE_0000.nii.gz``,
``labelsTr/CASE.nii.gz``, ``dataset.json``). Each case's newest ``final`` version is exported;
cases without one are left out and counted."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam2.errors import UsageError
from medsam2.io.volume import suffix_of
from medsam2.project.store import ProjectStore
from medsam2.project.vocabulary import EXPORT_FORMATS


@dataclass(frozen=True)
class ExportSummary:
    """Where the dataset went, how many cases it holds and how many had no final label."""

    folder: Path
    cases: int
    left_out: int


def export_project(store: ProjectStore, out: Path, format: str) -> ExportSummary:
    """Write the dataset into ``out`` (a missing or empty folder).

    Raises:
        UsageError: an unknown format, ``out`` not empty, or no case with a final label.
    """
    import SimpleITK as sitk

    if format not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format '{format}'; choose {' or '.join(EXPORT_FORMATS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} is not an empty folder; export into a new one")
    finals = [(case, store.latest(case.case_id, "final")) for case in store.cases()]
    finals = [(case, version) for case, version in finals if version is not None]
    if not finals:
        raise UsageError("no case has a final label yet; save one with status final (or import-labels --status final)")
    nnunet = format == "nnunet"
    images, labels = (out / "imagesTr", out / "labelsTr") if nnunet else (out / "images", out / "labels")
    images.mkdir(parents=True)
    labels.mkdir()
    values: set[int] = set()
    for case, version in finals:
        label_file = store.root / version.path
        values.update(int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))))
        shutil.copyfile(label_file, labels / f"{case.case_id}.nii.gz")
        if nnunet:  # nnU-Net reads one file ending: every image becomes NIfTI
            from medsam2.io.readers import load_volume
            from medsam2.io.writers import image_in_geometry

            volume = load_volume(case.image)
            sitk.WriteImage(image_in_geometry(volume.array, volume), str(images / f"{case.case_id}_0000.nii.gz"))
        elif case.image.is_dir():
            shutil.copytree(case.image, images / case.case_id)
        else:
            shutil.copyfile(case.image, images / f"{case.case_id}{suffix_of(case.image)}")
    names = store.meta("label_names", {})
    structures = {names.get(str(v), f"label_{v}"): v for v in sorted(values - {0})}
    if nnunet:
        dataset = {"channel_names": {"0": "image"}, "labels": {"background": 0, **structures},
                   "numTraining": len(finals), "file_ending": ".nii.gz"}
    else:
        dataset = {"labels": {"background": 0, **structures}}
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return ExportSummary(out, len(finals), store.status(check_files=False).cases - len(finals))
