"""Labelled datasets on disk: the nnU-Net / Medical Segmentation Decathlon layout and plain folders.

* nnU-Net / MSD: ``imagesTr/CASE_0000.nii.gz`` (the ``_0000`` channel suffix is optional),
  ``labelsTr/CASE.nii.gz`` and ``dataset.json`` whose ``labels`` names the structures (nnU-Net v2
  writes ``{"background": 0, "liver": 1}``, the MSD ``{"0": "background", "1": "liver"}``).
* plain: ``images/NAME.ext`` with ``labels/NAME.ext`` (matched by name without suffix); 2D
  images and 3D volumes alike.

In either layout an image may be a DICOM series folder (``images/NAME/``), and a label a DICOM
SEG of that series (``labels/NAME.dcm``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medsam2.errors import InputError
from medsam2.io.volume import SUPPORTED_SUFFIXES, suffix_of

#: nnU-Net's channel suffix of an image file's name (``CASE_0000``)
CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


@dataclass(frozen=True)
class Case:
    """One image with its label map."""

    case_id: str
    image: Path
    label: Path


@dataclass
class Dataset:
    """Cases found in a folder, the structure names, and what was skipped and why."""

    root: Path
    layout: str  # "nnunet" or "plain"
    cases: list[Case]
    label_names: dict[int, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def case_stem(path: Path) -> str:
    """A file's name without its suffix (``.nii.gz`` whole), or a folder's name."""
    if path.is_dir():
        return path.name
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name


def images_in(folder: Path, series_folders: bool = False) -> list[Path]:
    """The image files in ``folder``, and with ``series_folders`` its subfolders (DICOM series)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if not p.name.startswith(".") and ((p.is_file() and suffix_of(p) in SUPPORTED_SUFFIXES) or (series_folders and p.is_dir()))
    )


def label_names(dataset_json: Path) -> dict[int, str]:
    """Structure names by label value from a dataset.json (nnU-Net v2 name -> value, or MSD "value" -> name)."""
    try:
        data = json.loads(dataset_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {dataset_json}: {exc}") from exc
    labels = data.get("labels", {}) if isinstance(data, dict) else {}
    names: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: name -> value
            names[value] = key
        elif isinstance(value, str) and str(key).isdigit():  # MSD: "value" -> name
            names[int(key)] = value
    names.pop(0, None)
    return names


def discover_dataset(root: str | Path) -> Dataset:
    """Find the cases of a dataset folder.

    Raises:
        InputError: the folder does not exist or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"no such dataset folder: {root}")
    if (root / "imagesTr").is_dir():
        layout, image_dir, label_dir = "nnunet", root / "imagesTr", root / "labelsTr"
    elif (root / "images").is_dir():
        layout, image_dir, label_dir = "plain", root / "images", root / "labels"
    else:
        raise InputError(f"{root} holds neither imagesTr/ (nnU-Net layout) nor images/ (plain layout)")
    images = images_in(image_dir, series_folders=True)
    if not images:
        raise InputError(f"{image_dir} holds no image")
    labels = {case_stem(p): p for p in images_in(label_dir)}
    cases, skipped = [], []
    for image in images:
        stem = case_stem(image)
        case_id = CHANNEL_SUFFIX.sub("", stem) if layout == "nnunet" else stem
        if layout == "nnunet" and stem.endswith(tuple(f"_{c:04d}" for c in range(1, 10))):
            continue  # further channels of a multi-channel case: the first channel is used
        label = labels.get(case_id)
        if label is None:
            skipped.append(f"{case_id}: no label file in {label_dir}")
            continue
        cases.append(Case(case_id, image, label))
    names = label_names(root / "dataset.json") if (root / "dataset.json").is_file() else {}
    if not names and cases and suffix_of(cases[0].label) == ".dcm":
        from medsam2.io.dicom_seg import is_dicom_seg, segment_names

        if is_dicom_seg(cases[0].label):  # SEG references name their segments
            names = segment_names(cases[0].label)
    return Dataset(root=root, layout=layout, cases=cases, label_names=names, skipped=skipped)
