"""The project as MONAI Label's datastore: images are the project's cases (an image id is a case
name), and a label's *tag* is a version status: ``final`` the newest final version, ``draft`` the
newest draft. A label saved with the tag ``final`` becomes a final version, any other tag a draft."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medsam2.io.volume import suffix_of
from medsam2.project.store import ProjectStore, VersionRecord
from medsam2.project.vocabulary import STATUSES
from medsam2.serve.errors import ApiError

#: what an uploaded image may be called (it becomes a case name, and a file name in the project):
#: Slicer names an upload after its volume node ("MR Head"), so spaces are fine; no folders
IMAGE_ID = re.compile(r"[A-Za-z0-9_(+-][A-Za-z0-9 _.()+-]{0,126}[A-Za-z0-9_)+-]|[A-Za-z0-9_]")
#: the structure a model answers for when the project names none
DEFAULT_LABEL = "structure"


def label_names(store: ProjectStore) -> list[str]:
    """The project's structure names in label order (from an imported dataset.json, else the
    names saved sessions gave their objects); ``structure`` when it has none."""
    names = {int(k): v for k, v in store.meta("label_names", {}).items() if str(k).isdigit() and int(k) > 0}
    for version in store.versions():
        prompts = version.provenance.prompts if isinstance(version.provenance.prompts, dict) else {}
        for obj in prompts.get("objects", []):
            if obj.get("name") and int(obj.get("label", 0)) not in names:
                names[int(obj["label"])] = obj["name"]
    return [names[k] for k in sorted(names)] or [DEFAULT_LABEL]


def tagged_versions(store: ProjectStore, case_id: str) -> dict[str, VersionRecord]:
    """The case's label per tag: the newest version of each status it has."""
    found = {status: store.latest(case_id, status) for status in STATUSES}
    return {status: version for status, version in found.items() if version is not None}


def label_version(store: ProjectStore, case_id: str, tag: str) -> VersionRecord:
    """The version a ``tag`` names for a case.

    Raises:
        ApiError: 404 for an unknown case, or a case with no label of that tag.
    """
    if case_id not in {c.case_id for c in store.cases()}:
        raise ApiError(404, f"the project holds no image '{case_id}'")
    version = tagged_versions(store, case_id).get(tag or "final")
    if version is None:
        raise ApiError(404, f"image '{case_id}' has no label tagged {tag or 'final'!r} (tags are the version statuses: "
                            f"{', '.join(STATUSES)})")
    return version


def status_of_tag(tag: str | None) -> str:
    """The status a label saved with ``tag`` gets: ``final`` for ``final`` (and no tag, MONAI
    Label's default), ``draft`` for any other."""
    return "final" if not tag or tag == "final" else "draft"


def datastore_stats(store: ProjectStore) -> dict:
    """``GET /datastore/?output=stats``: the counts, and the cases with a final label (``train``)."""
    tags: dict[str, int] = {}
    finals = []
    for case in store.cases():
        for tag in tagged_versions(store, case.case_id):
            tags[tag] = tags.get(tag, 0) + 1
            if tag == "final":
                finals.append({"image": case.case_id, "label": case.case_id})
    return {"total": len(store.cases()), "completed": len(finals), "label_tags": tags, "train": finals}


def datastore_listing(store: ProjectStore) -> dict:
    """``GET /datastore/?output=all``: every image with its labels per tag, as MONAI Label's
    local datastore lists them (no server paths)."""
    objects = {}
    for case in store.cases():
        labels = {tag: {"ext": ".nii.gz", "info": {"version": v.version, "user": v.provenance.user, "model": v.provenance.model,
                                                   "ts": int(v.created)}}
                  for tag, v in tagged_versions(store, case.case_id).items()}
        ext = "" if case.image.is_dir() else suffix_of(case.image)
        objects[case.case_id] = {"image": {"ext": ext, "info": {"name": case.case_id, "sha256": case.sha256}}, "labels": labels}
    return {"name": store.root.name, "description": "a medsam2 project", "images_dir": "images", "labels_dir": "labels",
            "objects": objects}


def new_image_id(given: str | None, filename: str | None) -> str:
    """The id of an uploaded image: ``given``, else the file's name without its suffix.

    Raises:
        ApiError: 400 for a name that is no safe case name.
    """
    name = given or (Path(filename).name.removesuffix(suffix_of(Path(filename))) if filename else "")
    if not IMAGE_ID.fullmatch(name or ""):
        raise ApiError(400, f"image id {name!r} is not a case name: up to 128 letters, digits, spaces and _ . ( ) + -, "
                            "not starting with '.' or ending in a space")
    return name


def read_label_upload(upload, volume, folder: Path) -> np.ndarray:
    """The uploaded label map on ``volume``'s grid, (k, j, i): a label file (NIfTI, NRRD, MHA, a
    ``.seg.nrrd``, a DICOM SEG of the scan's series), or OHIF's ``.bin``, the raw uint8 voxels with i
    fastest (MONAI Label's reading of it).

    Raises:
        ApiError: 400 for a file that is not a label map of this grid.
    """
    from medsam2.errors import MedSAM2Error
    from medsam2.io.readers import read_mask
    from medsam2.serve.opening import relative_message

    shape = tuple(volume.array.shape[:3])
    if suffix_of(upload.file).lower() == ".bin":
        data = np.fromfile(upload.file, dtype=np.uint8)
        if data.size != int(np.prod(shape)):
            raise ApiError(400, f"the .bin label holds {data.size} bytes; the image has {int(np.prod(shape))} voxels (one uint8 each)")
        return data.reshape(shape)
    try:
        return read_mask(upload.file, volume, confine_to=folder)
    except MedSAM2Error as exc:
        raise ApiError(400, relative_message(exc, upload.file, upload.filename or "label", (folder,))) from None


def label_values(params: dict) -> dict[int, str]:
    """Structure names by label value from a save's ``params``: ``label_names`` ({name: value},
    MONAI Label's form) or ``label_info`` ([{"name", "idx"}], OHIF's)."""
    names: dict[int, str] = {}
    given = params.get("label_names")
    if isinstance(given, dict):
        names.update({int(v): str(k) for k, v in given.items() if isinstance(v, int) and not isinstance(v, bool)})
    info = params.get("label_info")
    for entry in info if isinstance(info, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("idx"), int) and entry.get("name"):
            names.setdefault(int(entry["idx"]), str(entry["name"]))
    return names

