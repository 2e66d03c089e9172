"""Opening a scan as a session (in a worker thread): reading it within the server's volume budget,
or first retrieving it from the ``--dicomweb`` PACS."""

from __future__ import annotations

import re
from pathlib import Path

from medsam2.engine.feature_disk import FeatureFolder
from medsam2.engine.segmenter import Segmenter
from medsam2.errors import InputTooLarge, MedSAM2Error
from medsam2.io.limits import DEFAULT_MAX_INPUT_BYTES, ReadLimits
from medsam2.io.readers import load_volume
from medsam2.io.volume import Volume, suffix_of
from medsam2.serve.deps import ServerState
from medsam2.serve.errors import ApiError, one_line
from medsam2.serve.settings import ServeSettings
from medsam2.serve.store import ServedSession
from medsam2.serve.uploads import unpack_zip
from medsam2.serve.viewer_files import window_presets, write_viewer_nifti


def open_scan(
    state: ServerState, folder: Path, path: Path, name: str, axis: str, window: str, pacs=None, confine_to: Path | None = None,
    segmenter: Segmenter | None = None, feature_folder: FeatureFolder | None = None,
) -> ServedSession:
    """Read the scan (its data files only from ``confine_to``; its voxels only where they fit the
    server's volume budget), open a session on it with ``segmenter`` (default: the server's; its
    features on disk in ``feature_folder``) and write the viewer's copy (in a worker thread)."""
    settings = state.settings
    try:
        if suffix_of(path).lower() == ".zip":
            path = unpack_zip(path, folder / "series", settings.max_upload_bytes)
        with state.store.reading:
            volume = read_within_budget(state, path, name, confine_to)
            state.store.claim(folder, volume.array.nbytes)
        session = (segmenter or state.segmenter).open(volume, axis=axis, window=window, feature_cache_mb=settings.feature_cache_mb,
                                                      feature_folder=feature_folder)
    except MedSAM2Error as exc:
        raise ApiError(400, relative_message(exc, path, name, (folder, settings.data_dir))) from None
    write_viewer_nifti(volume, folder / "volume.nii.gz")
    return state.store.add(name, session, folder, window_presets(volume, session.intensity), pacs=pacs)


def read_within_budget(state: ServerState, path: Path, name: str, confine_to: Path | None) -> Volume:
    """The volume at ``path``, read only where its voxels fit the room left in the server's volume
    budget; call holding ``state.store.reading``.

    Raises:
        ApiError: 413 where it does not fit (with the room left and the budget).
        MedSAM2Error: as :func:`medsam2.io.readers.load_volume`.
    """
    room = state.store.volume_room()
    try:
        if room <= 0:
            raise InputTooLarge("no room")
        return load_volume(path, limits=ReadLimits(min(room, DEFAULT_MAX_INPUT_BYTES)), confine_to=confine_to)
    except InputTooLarge:
        raise no_room(state, name, room) from None


def no_room(state: ServerState, name: str, room: int) -> ApiError:
    """413: ``name`` does not fit the memory the server keeps for open scans."""
    return ApiError(413, f"{name} does not fit the memory this server keeps for open scans ({_mb(max(0, room))} MB free of "
                         f"{_mb(state.settings.max_volume_bytes)} MB, --max-volume-mb); close a session or raise the budget")


def fetch_series(settings: ServeSettings, study: str, series: str, folder: Path):
    """Retrieve a series of the PACS into the session's folder; (its address, the folder, a name
    for it: patient ID, modality and series number, e.g. ``P123_CT_2``)."""
    import pydicom

    from medsam2.io.dicomweb import SeriesAddress, fetched_series

    address = SeriesAddress(settings.dicomweb, study, series)
    target = folder / "series"
    target.mkdir()
    try:
        with fetched_series(address, target) as fetched:
            header = pydicom.dcmread(next(fetched.iterdir()), stop_before_pixels=True)
    except MedSAM2Error as exc:
        raise ApiError(502, one_line(exc)) from None
    parts = [str(header.get(key, "")) for key in ("PatientID", "Modality", "SeriesNumber")]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", "_".join(p for p in parts if p)).strip("-") or "pacs-series"
    return address, fetched, name


def relative_message(exc: BaseException, path: Path, name: str, folders: tuple[Path | None, ...]) -> str:
    """The error's line with the scan's path as the client named it and every server folder left out."""
    text = one_line(exc).replace(str(path), name)
    for folder in folders:
        if folder is not None:
            text = text.replace(str(folder) + "/", "").replace(str(folder), ".")
    return text


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.0f}"
