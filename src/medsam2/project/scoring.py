"""The active model's confidence on the cases nobody has finished, before anyone opens them: what
``least-confident`` ranks by, and the project's feature cache filled on the way.

A promptable model needs a prompt to answer, and an open case has none. The project's final labels
give one: each structure of the newest final cases is a one-prompt support
(:func:`medsam2.engine.oneprompt.run.run_one_prompt`), the model finds and segments it in the
open case with no prompt there, and the case's score is the mean, over the structures, of that
answer's confidence (predicted IoU x agreement with the supports). A case the model is unsure of
scores low and comes first. A save from the viewer replaces the score with the session's own
mean slice confidence (what the annotator's prompts gave).

Every slice the model encodes on the way goes into the project's feature folder, so that the
viewer opens a scored case without encoding it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medsam2.engine.engine import Engine
from medsam2.engine.feature_cache import CachedBackbone
from medsam2.engine.feature_disk import DEFAULT_DISK_MB, FeatureFolder, model_key
from medsam2.engine.oneprompt.run import run_one_prompt, support_from_arrays
from medsam2.engine.options import ModelOptions
from medsam2.engine.segmenter import Segmenter
from medsam2.engine.session_state import DEFAULT_FEATURE_CACHE_MB
from medsam2.errors import InputError
from medsam2.project.models import active_model_name
from medsam2.project.store import ProjectStore
from medsam2.project.vocabulary import NO_FINAL_TO_SCORE

#: how many of the newest final cases lend their structures as supports
SUPPORT_CASES = 3


@dataclass(frozen=True)
class CaseScore:
    """One open case scored: the mean confidence over the structures (None: none was found), per
    structure, and the seconds it took."""

    case_id: str
    confidence: float | None
    per_label: dict[int, float]
    seconds: float


def unscored_cases(store: ProjectStore, model: str, final_ids: set[str] | None = None, rescore: bool = False) -> list:
    """The cases with no final label that ``model`` has not scored (all of them with ``rescore``), in the project's order."""
    final_ids = store.final_cases() if final_ids is None else final_ids
    scored = set() if rescore else set(store.scores(model))
    return [c for c in store.cases() if c.case_id not in final_ids and c.case_id not in scored]


def score_open_cases(
    store: ProjectStore, options: ModelOptions, limit: int | None = None, rescore: bool = False,
    feature_disk_mb: float = DEFAULT_DISK_MB, on_score: Callable[[CaseScore], None] | None = None,
) -> list[CaseScore]:
    """Score the cases with no final label that the active model has not scored (all of them with
    ``rescore``), at most ``limit``, in the project's order; each score is recorded as it comes.

    ``options`` is the model to run (its checkpoint: the active model's, as
    :func:`medsam2.cli.common.apply_project_model` sets it).

    Raises:
        InputError: the project has no final label to lend a support.
    """
    from medsam2.io.readers import load_volume, read_mask

    model = active_model_name(store)
    final_ids = store.final_cases()
    finals = sorted((v for c in final_ids if (v := store.latest(c, "final")) is not None), key=lambda v: v.created)[-SUPPORT_CASES:]
    if not finals:
        raise InputError(NO_FINAL_TO_SCORE)
    todo = unscored_cases(store, model, final_ids, rescore)[:limit]
    if not todo:
        return []
    segmenter = Segmenter.from_options(options)
    folder = FeatureFolder(store.root / "cache" / "features", model_key(segmenter.backbone), feature_disk_mb)
    supports: dict[int, list] = {}
    for version in finals:
        image = load_volume(store.case(version.case_id).image)
        labels = read_mask(store.root / version.path, image)
        for value in (int(v) for v in np.unique(labels) if v != 0):
            supports.setdefault(value, []).append(support_from_arrays(image, labels == value, f"{version.case_id}:{value}"))
    results = []
    for case in todo:
        image = load_volume(case.image)
        # a cache per case: its structures share the case's slices; memory stays one case's
        cache = CachedBackbone(segmenter.backbone, DEFAULT_FEATURE_CACHE_MB, disk=folder)
        engine = Engine(cache, segmenter.memory, segmenter.settings)
        per_label, seconds = {}, 0.0
        for value, pairs in sorted(supports.items()):
            outcome = run_one_prompt(engine, pairs, [image]).queries[0]
            seconds += outcome.seconds
            if outcome.error is None:
                per_label[value] = round(float(outcome.confidence), 4)
        confidence = round(float(np.mean(list(per_label.values()))), 4) if per_label else None
        score = CaseScore(case.case_id, confidence, per_label, round(seconds, 1))
        store.record_score(case.case_id, model, 0.0 if confidence is None else confidence)
        folder.trim()
        results.append(score)
        if on_score is not None:
            on_score(score)
    return results
