"""MONAI Label's datastore routes under ``/monailabel/datastore``: the project's cases as images,
their versions as tagged labels (:mod:`medsam2.serve.monailabel.datastore`), and, with
``--dicomweb``, labels of a PACS series stored back on the PACS as DICOM SEG."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from medsam2._version import __version__
from medsam2.errors import MedSAM2Error, UsageError
from medsam2.io.volume import suffix_of
from medsam2.project.store import Provenance
from medsam2.serve.deps import ServerState, State
from medsam2.serve.errors import ApiError, one_line
from medsam2.serve.monailabel.datastore import (
    datastore_listing,
    datastore_stats,
    label_values,
    label_version,
    new_image_id,
    read_label_upload,
    status_of_tag,
)
from medsam2.serve.monailabel.infer_request import params_of
from medsam2.serve.monailabel.inference import case_ids, image_session
from medsam2.serve.opening import relative_message
from medsam2.serve.project_cases import after_save, project_of, version_dict
from medsam2.serve.uploads import Upload, receive_upload, unpack_zip

router = APIRouter(prefix="/monailabel/datastore", tags=["MONAI Label"])

#: how long ``params`` may be
PARAMS_BYTES = 256 * 1024
#: one image is added to the project at a time (the id check, the copy and the index row together)
_ADDING = threading.Lock()


@router.get("/")
def datastore(state: State, output: str = "stats") -> dict | list:
    """The project as a datastore: ``stats`` (counts), ``all`` (every image with its labels per
    tag) or ``train`` (the cases with a final label)."""
    if output not in ("stats", "all", "train"):
        raise ApiError(400, f"output {output!r}: choose stats, all or train")
    with project_of(state) as store:
        if output == "all":
            return datastore_listing(store)
        stats = datastore_stats(store)
    return stats if output == "stats" else stats["train"]


@router.put("/")
async def add_image(request: Request, state: State, image: str | None = None) -> dict:
    """Add an image to the project (multipart field ``file``: NIfTI, NRRD, MHA or a zip of a DICOM
    series), copied into its ``images/``; ``image`` names it (default: the file's name). An id the
    project holds already is refused (409): its saved versions belong to that image."""
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace, max_field_bytes=PARAMS_BYTES)
        if upload.file is None:
            raise ApiError(400, "no file in the upload: send the image in the multipart field 'file'")
        image_id = new_image_id(image, upload.filename)
        await run_in_threadpool(_add_image, state, image_id, upload, folder)
    return {"image": image_id}


def _add_image(state: ServerState, image_id: str, upload: Upload, folder: Path) -> None:
    from medsam2.io.readers import load_volume
    from medsam2.project.sources import CaseSource

    path = upload.file
    if suffix_of(path).lower() == ".zip":
        path = unpack_zip(path, folder / "series", state.settings.max_upload_bytes)
    try:
        load_volume(path, confine_to=folder)  # an image medsam2 cannot read is refused now, not when opened
    except MedSAM2Error as exc:
        raise ApiError(400, relative_message(exc, path, upload.filename or image_id, (folder,))) from None
    with _ADDING, project_of(state) as store:
        if image_id in {c.case_id for c in store.cases()}:
            raise ApiError(409, f"the project holds an image '{image_id}' already; give the upload another id (?image=ID)")
        try:
            store.add_cases([CaseSource(image_id, path)], copy=True)
        except UsageError as exc:  # images/ holds that file name already (another case's)
            raise ApiError(409, one_line(exc)) from None


@router.put("/label")
async def save_label(request: Request, state: State, image: str, tag: str = "final") -> dict:
    """Save a label map (multipart field ``label``: a label file on the image's voxel grid, or
    OHIF's ``.bin``, the raw uint8 voxels). On a project case it becomes a new version: ``final``
    for the tag ``final``, a draft for any other; a final save sets off retraining
    (``--retrain-every``) and scoring as a save from the page does. On a series of the
    ``--dicomweb`` PACS it is stored there as a DICOM SEG of that series."""
    user = getattr(request.state, "user", None)
    with state.store.staging() as folder:
        upload = await receive_upload(request, folder, state.settings.max_upload_bytes, state.pace, file_field="label",
                                      max_field_bytes=PARAMS_BYTES)
        if upload.file is None:
            raise ApiError(400, "no label in the upload: send the label map in the multipart field 'label'")
        params = params_of(upload.fields.get("params"))
        client = params.get("client_id") if isinstance(params.get("client_id"), str) else None
        if state.settings.project is not None and image in await run_in_threadpool(case_ids, state):
            return await run_in_threadpool(_save_version, state, image, tag, upload, folder, user or client)
        if state.settings.dicomweb is not None:
            return await run_in_threadpool(_store_on_pacs, state, image, upload, folder, label_values(params))
        raise ApiError(404, f"image '{image}': this server has no case of that name" if state.settings.project is not None
                       else "this server has no project (serve --project DIR) and no PACS (--dicomweb) to save labels to")


def _save_version(state: ServerState, image: str, tag: str, upload: Upload, folder: Path, user: str | None) -> dict:
    from medsam2.io.readers import load_volume

    status = status_of_tag(tag)
    with project_of(state) as store:
        volume = load_volume(store.case(image).image)
        labels = read_label_upload(upload, volume, folder)
        latest = store.latest(image)
        provenance = Provenance(user=user, prompts={"client": "monailabel", "tag": tag})
        version = store.save_version(image, labels, volume, status, None if latest is None else latest.version, provenance)
        training = after_save(state, store, status)
    return {"image": image, "label": image, "tag": tag, **version_dict(version), "training_started": training}


def _store_on_pacs(state: ServerState, series_uid: str, upload: Upload, folder: Path, names: dict[int, str]) -> dict:
    from medsam2.io.dicom_seg import Provenance as SegProvenance
    from medsam2.io.dicomweb import store
    from medsam2.io.writers import save_mask

    served = image_session(state, series_uid)
    try:
        volume = served.session.volume
        labels = read_label_upload(upload, volume, folder)
        if not labels.any():
            raise ApiError(400, "the label map holds no structure (every voxel is 0); nothing is stored")
        out = served.folder / f"seg-{secrets.token_hex(6)}.dcm"
        present = {v: names.get(v) for v in map(int, np.unique(labels)) if v}
        try:
            save_mask(labels, volume, out, names=present,
                      provenance=SegProvenance(__version__, backbone=served.session.engine.backbone.name))
            uid = store(served.pacs.root, out)
        except MedSAM2Error as exc:
            raise ApiError(502, one_line(exc)) from None
        finally:
            out.unlink(missing_ok=True)
    finally:
        state.store.release(served)
    return {"image": series_uid, "label": uid, "stored": "dicom-seg"}


@router.get("/image")
def download_image(image: str, state: State, check_only: bool = False, check_sum: str | None = None):
    """The case's image file (a DICOM series as NIfTI); ``check_only``: 200 if it exists and, with
    ``check_sum`` (``SHA256:HEX`` or ``HEX``), has those bytes, else 404."""
    with project_of(state) as store:
        case = next((c for c in store.cases() if c.case_id == image), None)
    if case is None or not case.image.exists():
        raise ApiError(404, f"the project holds no image '{image}'")
    if check_only:
        if check_sum and check_sum.split(":")[-1].lower() != case.sha256:
            raise ApiError(404, f"image '{image}' has other bytes than that checksum")
        return {}
    if case.image.is_file():
        return FileResponse(case.image, media_type="application/octet-stream", filename=f"{image}{suffix_of(case.image)}")
    with state.store.staging() as folder:
        data = _series_as_nifti(case.image, folder, image)
    return Response(content=data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{image}.nii.gz"'})


def _series_as_nifti(series: Path, folder: Path, image: str) -> bytes:
    """A DICOM series case as NIfTI bytes (written in ``folder``, which the caller removes)."""
    import SimpleITK as sitk

    from medsam2.io.readers import load_volume
    from medsam2.io.writers import image_in_geometry

    try:
        volume = load_volume(series)
    except MedSAM2Error as exc:
        raise ApiError(400, relative_message(exc, series, image, (series.parent,))) from None
    out = folder / "series.nii.gz"
    sitk.WriteImage(image_in_geometry(volume.array, volume), str(out), useCompression=True)
    return out.read_bytes()


@router.get("/label")
def download_label(label: str, state: State, tag: str = "final"):
    """The case's label of ``tag`` (``final``: its newest final version; ``draft``: its newest draft), NIfTI."""
    with project_of(state) as store:
        version = label_version(store, label, tag)
        path = store.root / version.path
    return FileResponse(path, media_type="application/octet-stream", filename=f"{label}.nii.gz")
