"""The server on a project (``serve --project DIR``): its cases as the page lists them, a case
opened as a session with the project's active model, a session saved into the project as a new
version, and retraining after every N final labels.

Every call opens the project's index for itself (SQLite connections stay in their thread).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from medsam2.engine.feature_disk import FeatureFolder, model_key
from medsam2.engine.segmenter import Segmenter
from medsam2.errors import MedSAM2Error
from medsam2.io.readers import read_mask
from medsam2.project.models import active_model, active_model_name, check_backbone, model_versions
from medsam2.project.scoring import unscored_cases
from medsam2.project.store import ProjectStore, VersionRecord, open_project
from medsam2.project.vocabulary import STRATEGIES
from medsam2.serve.deps import ServerState
from medsam2.serve.errors import ApiError
from medsam2.serve.opening import open_scan
from medsam2.serve.store import CaseLink, ServedSession

NO_PROJECT = "this server has no project; start it with 'medsam2 serve --project DIR'"


def project_of(state: ServerState) -> ProjectStore:
    """The server's project, opened for this call.

    Raises:
        ApiError: 404 when the server runs without ``--project``.
    """
    if state.settings.project is None:
        raise ApiError(404, NO_PROJECT)
    return open_project(state.settings.project)


def version_dict(version: VersionRecord) -> dict:
    provenance = version.provenance
    return {"case": version.case_id, "version": version.version, "status": version.status, "based_on": version.based_on,
            "conflict": version.conflict, "user": provenance.user, "model": provenance.model,
            "corrections": provenance.corrections, "seconds": provenance.seconds, "prompts": provenance.prompts,
            "created": version.created}


def project_listing(store: ProjectStore) -> dict:
    """The project as the page lists it: every case with its newest version, the counts, the models."""
    latest: dict[str, VersionRecord] = {}
    final: dict[str, int] = {}
    for version in store.versions():
        latest[version.case_id] = version
        if version.status == "final":
            final[version.case_id] = version.version
    cases = []
    for case in store.cases():
        version = latest.get(case.case_id)
        cases.append({"case": case.case_id, "status": "unlabelled" if version is None else version.status,
                      "latest": None if version is None else version_dict(version), "final_version": final.get(case.case_id)})
    models = [{"name": m.name, "active": m.active, "val_dice": m.val_dice, "val_dice_base": m.val_dice_base,
               "reason": m.reason, "created": m.created} for m in model_versions(store)]
    return {"name": store.root.name, "cases": cases, "counts": store.status(check_files=False).to_dict(),
            "models": models, "active_model": active_model_name(store), "strategies": list(STRATEGIES)}


def current_segmenter(state: ServerState, store: ProjectStore) -> tuple[Segmenter, str]:
    """The segmenter of the project's active model, built anew when another model became active
    since the last one was built (new sessions use it; open sessions keep theirs), and its name."""
    name = active_model_name(store)
    with state.segmenter_lock:
        if name != state.model_name:
            active = active_model(store)
            check_backbone(active, state.settings.model.backbone)
            checkpoint = None if active is None else str(active.checkpoint(store.root))
            state.segmenter = Segmenter.from_options(replace(state.settings.model, checkpoint=checkpoint))
            state.model_name, state.checkpoint_sha256 = name, None  # /api/info hashes the new weights
            state.feature_key = None
        return state.segmenter, name


def project_features(state: ServerState, store: ProjectStore, segmenter: Segmenter) -> FeatureFolder:
    """The project's features of ``segmenter``'s model on disk (``DIR/cache/features/KEY``),
    trimmed to ``--feature-disk-mb``."""
    with state.segmenter_lock:
        if state.feature_key is None:
            state.feature_key = model_key(segmenter.backbone)
        key = state.feature_key
    folder = FeatureFolder(store.root / "cache" / "features", key, state.settings.feature_disk_mb)
    folder.trim()
    return folder


def open_case(state: ServerState, folder: Path, case_id: str, axis: str, window: str, version: int | None = None) -> ServedSession:
    """Open a project case as a session with the active model (in a worker thread), with a saved
    version's label map laid on it as editable objects (``version``: None the newest, if any; 0
    none: the scan alone). A save builds on the case's newest version, whichever was opened.

    Raises:
        ApiError: 400 for an unknown case or version, or a scan or label map that cannot be read.
    """
    with project_of(state) as store:
        case = store.case(case_id)
        segmenter, model = current_segmenter(state, store)
        latest = store.latest(case_id)
        shown = latest if version is None else store.version(case_id, version) if version else None
        features = project_features(state, store, segmenter)
        names = {} if shown is None else version_names(store, shown)
    confine_to = case.image if case.image.is_dir() else case.image.parent
    served = open_scan(state, folder, case.image, case_id, axis, window, confine_to=confine_to, segmenter=segmenter,
                       feature_folder=features)
    if shown is not None:
        try:
            served.session.open_labels(read_mask(store.root / shown.path, served.session.volume), names)
        except MedSAM2Error as exc:
            state.store.delete(served.id)
            raise ApiError(400, f"version {shown.version} of case '{case_id}' cannot be opened: {exc}") from None
    served.case = CaseLink(case_id, None if latest is None else latest.version, model, time.monotonic(),
                           None if shown is None else shown.version)
    return served


def version_names(store: ProjectStore, version: VersionRecord) -> dict[int, str]:
    """The structure names of a saved version: those its session gave its objects, else the
    project's (from an imported dataset.json)."""
    names = {int(k): v for k, v in store.meta("label_names", {}).items() if str(k).isdigit()}
    prompts = version.provenance.prompts or {}
    names.update({int(o["label"]): o["name"] for o in prompts.get("objects", []) if o.get("name")})
    return names


def save_case(state: ServerState, served: ServedSession, status: str, user: str | None) -> dict:
    """Save the session's label map as a new version of its case (call holding the session).

    The version records the user, the model, the prompted slices of every object, the corrections
    and the seconds since the session opened; the model's mean slice confidence on the case is kept
    for ``least-confident``. After a final save, training starts when ``--retrain-every`` finals
    have arrived since it last started.

    Raises:
        ApiError: 400 for a session not opened from the project, or a final save with nothing segmented.
    """
    from medsam2.project.store import Provenance

    link: CaseLink | None = served.case
    if link is None:
        raise ApiError(400, "this session was not opened from the project; open the case with POST /api/project/cases/CASE/sessions")
    result = served.session.result(propagate_pending=False, sanity=False)
    if not result.labels.any():  # a session opens empty: saving it would bury the case's newest version
        kept = "" if link.based_on is None else f" (the case's newest version, v{link.based_on}, stays as it is)"
        raise ApiError(400, f"nothing is segmented in this session yet; prompt and propagate before saving{kept}")
    objects = result.report.objects
    prompts = {"objects": [{"label": o.label, "name": o.name, "prompted_slices": o.prompted_slices} for o in objects]}
    provenance = Provenance(user=user, model=link.model, prompts=prompts, corrections=result.report.corrections,
                            seconds=round(time.monotonic() - link.opened, 1))
    confidences = [o.mean_confidence for o in objects if o.mean_confidence is not None]
    with project_of(state) as store:
        version = store.save_version(link.case_id, result.labels, served.session.volume, status, link.based_on, provenance)
        if confidences:
            store.record_score(link.case_id, link.model, sum(confidences) / len(confidences))
        training = after_save(state, store, status)
    served.case = replace(link, based_on=version.version)  # the next save builds on this one
    return {**version_dict(version), "training_started": training}


def after_save(state: ServerState, store: ProjectStore, status: str) -> bool | None:
    """What a saved version sets off: after a final one, training when ``--retrain-every`` finals
    have arrived since it last started (whether it started; None when not due), and scoring (the
    new final lends its structures to the scores)."""
    if status != "final":
        return None
    training = start_training(state, store, every=state.settings.retrain_every) if state.settings.retrain_every > 0 else None
    start_scoring(state, store)
    return training


def model_arguments(settings, has_active_model: bool) -> tuple[str, ...]:
    """Options that make ``medsam2 train --project`` or ``project score`` run the model the server
    runs: its backbone, device and architecture, and the server's starting weights while the
    project has no model of its own (SAM 2 has no bundled weights)."""
    model = settings.model
    arguments = ["--backbone", model.backbone, "--device", model.device]
    if model.model_config:
        arguments += ["--model-config", model.model_config]
    if model.checkpoint and not has_active_model:
        arguments += ["--checkpoint", str(model.checkpoint)]
    return tuple(arguments)


def training_arguments(settings, has_active_model: bool) -> tuple[str, ...]:
    """``medsam2 train --project`` options: the server's model (:func:`model_arguments`) and ``settings.train_args``."""
    return (*model_arguments(settings, has_active_model), *settings.train_args)


def start_scoring(state: ServerState, store: ProjectStore) -> bool:
    """Start ``medsam2 project score`` in the background when the active model has cases left to
    score (and a final label to score them from), no scoring runs and no training does (it would
    only slow both); False when none started."""
    if state.scoring is None or state.scoring.running or (state.training is not None and state.training.running):
        return False
    finals = store.final_cases()
    if not finals or not unscored_cases(store, active_model_name(store), finals):
        return False
    disk = ("--feature-disk-mb", str(state.settings.feature_disk_mb))
    return state.scoring.start((*model_arguments(state.settings, active_model(store) is not None), *disk))


def start_training(state: ServerState, store: ProjectStore, every: int = 0) -> bool:
    """Start the project's background training when at least ``every`` final labels arrived since
    it last started (0: now); False when none started (too few, or one is running)."""
    finals = len(store.final_cases())
    if state.training is None or finals - store.meta("finals_at_last_training", 0) < every:
        return False
    if not state.training.start(training_arguments(state.settings, active_model(store) is not None)):
        return False
    store.set_meta("finals_at_last_training", finals)
    return True
