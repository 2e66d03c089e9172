"""The study's other images of a served session (FLAIR beside T1c, PET over CT): read within the
server's volume budget, put on the scan's grid, written for the page, and chosen as what the model
sees (in a worker thread: reading and resampling take seconds)."""

from __future__ import annotations

from pathlib import Path

from medsam2.errors import MedSAM2Error
from medsam2.io.resample import resample_onto
from medsam2.io.windows import choose_window
from medsam2.serve.deps import ServerState
from medsam2.serve.errors import ApiError, one_line
from medsam2.serve.opening import no_room, read_within_budget, relative_message
from medsam2.serve.store import ServedSession, StudyImage
from medsam2.serve.viewer_files import window_presets, write_viewer_nifti

#: how many other images a session may hold (each counts against ``--max-volume-mb``)
MAX_STUDY_IMAGES = 3


def image_file(served: ServedSession, index: int) -> Path:
    """The page's NIfTI copy of the session's image ``index`` (0: the scan)."""
    return served.folder / ("volume.nii.gz" if index == 0 else f"image{index}.nii.gz")


def describe_images(served: ServedSession) -> list[dict]:
    """The session's images as the page lists them: the scan first, then the others."""
    model = served.session.model_image
    listed = [{"index": 0, "name": served.name, "resampled": False, "model_input": model is None,
               "window_presets": served.window_presets}]
    for index, image in enumerate(served.images, start=1):
        listed.append({"index": index, "name": image.name, "resampled": image.resampled, "model_input": model is image.volume,
                       "window_presets": image.window_presets})
    return listed


def room_for_one(state: ServerState, session_id: str) -> None:
    """Whether the session may take one more image, before it is sent.

    Raises:
        ApiError: 404 for no such session; 400 when it holds its most images; 413 when the volume
            budget is spent.
    """
    _check_count(state.store.get(session_id))
    if (room := state.store.volume_room()) <= 0:
        raise no_room(state, "another image", room)


def _check_count(served: ServedSession) -> None:
    if len(served.images) >= MAX_STUDY_IMAGES:
        raise ApiError(400, f"a session holds at most {MAX_STUDY_IMAGES} other images; this one has them")


def add_study_image(state: ServerState, served: ServedSession, path: Path, name: str, confine_to: Path) -> None:
    """Read another image of the study onto the session's grid and keep it (hold the session).

    Raises:
        ApiError: 400 for an image that cannot be read, is in colour or lies elsewhere in space,
            or when the session holds its most images; 413 when it does not fit the volume budget.
    """
    _check_count(served)
    with state.store.reading:
        try:
            volume, resampled = resample_onto(read_within_budget(state, path, name, confine_to), served.session.volume)
            if volume.array.nbytes > (room := state.store.volume_room()):  # resampled: another size
                raise no_room(state, name, room)
            shown = choose_window(volume.array, "auto", volume.modality)
        except MedSAM2Error as exc:
            raise ApiError(400, relative_message(exc, path, name, (confine_to, served.folder, state.settings.data_dir))) from None
        except RuntimeError as exc:  # SimpleITK's, from a grid it cannot resample
            raise ApiError(400, f"{name} could not be put on the scan's grid ({one_line(exc)[:160]})") from None
        taken = {served.name, *(i.name for i in served.images)}
        shown_name = name if name not in taken else next(f"{name} ({n})" for n in range(2, 10) if f"{name} ({n})" not in taken)
        image = StudyImage(shown_name, volume, resampled, window_presets(volume, shown))
        write_viewer_nifti(volume, image_file(served, len(served.images) + 1))
        served.images.append(image)


def study_image(served: ServedSession, index: int):
    """The session's image ``index``: None for the scan (0), else its :class:`StudyImage`.

    Raises:
        ApiError: 404 for no such image.
    """
    if not 0 <= index <= len(served.images):
        raise ApiError(404, f"no image {index} in this session (0 is the scan; {len(served.images)} other images)")
    return None if index == 0 else served.images[index - 1]


def choose_model_input(served: ServedSession, index: int, window: str | None) -> None:
    """Let the model see the session's image ``index`` (0: the scan) from now on (hold the session).

    Raises:
        ApiError: 404 for no such image; 400 for an unknown window or a constant image.
    """
    image = study_image(served, index)
    try:
        served.session.use_image(None if image is None else image.volume, window)
    except MedSAM2Error as exc:
        raise ApiError(400, str(exc).splitlines()[0]) from None
