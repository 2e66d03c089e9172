"""A project's models: versions ``DIR/models/vN/`` (``model.json`` beside the weights), the active
one, and the validation split that every training run of the project uses.

The validation cases are chosen once per case, when its first final label is trained on, by a hash
of its name (one in five), and never change; a project with final cases but none chosen gets its
first. A run starts from the active model (or the bundled weights) and validates it on the same
cases at epoch 0, so the new model's validation Dice and the active one's are measured alike; the
new model becomes active only when its Dice is at least the active one's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from medsam2.errors import InputError, UsageError
from medsam2.io.volume import suffix_of
from medsam2.project.store import ProjectStore

#: one final case in this many goes to validation
VALIDATION_EVERY = 5
#: the name a project's work with the bundled weights is recorded under (no active model)
BUNDLED_MODEL = "bundled"


@dataclass(frozen=True)
class ModelVersion:
    """A trained model of the project (``model.json`` in its folder)."""

    name: str
    created: float
    base: str
    train_cases: dict[str, int]
    val_cases: dict[str, int]
    val_dice_base: float
    val_dice: float
    active: bool
    reason: str
    settings: dict

    def checkpoint(self, root: Path) -> Path:
        """The weights ``--checkpoint`` reads."""
        return root / "models" / self.name / "best.pth"


def _rank(case_id: str) -> int:
    return int(hashlib.sha256(case_id.encode()).hexdigest()[:8], 16)


def validation_split(store: ProjectStore, final_cases: list[str]) -> tuple[list[str], list[str]]:
    """(train, validation) among ``final_cases``; new cases are assigned and the split is stored.

    A case keeps its side once assigned. A new case goes to validation when its name's hash says
    so (one in five), or when no final case validates yet; it trains instead when it would leave
    no case to train on."""
    split: dict[str, str] = store.meta("split", {})
    new = [c for c in final_cases if c not in split]
    for case_id in sorted(new, key=_rank):
        sides = [split[c] for c in final_cases if c in split]
        wants_val = _rank(case_id) % VALIDATION_EVERY == 0 or "val" not in sides
        split[case_id] = "val" if wants_val and ("train" in sides or not sides) else "train"
    store.set_meta("split", split)
    return [c for c in final_cases if split[c] == "train"], [c for c in final_cases if split[c] == "val"]


def model_versions(store: ProjectStore) -> list[ModelVersion]:
    folder = store.root / "models"
    found = []
    for meta in sorted(folder.glob("v*/model.json"), key=lambda p: int(p.parent.name[1:])) if folder.is_dir() else []:
        found.append(ModelVersion(**json.loads(meta.read_text())))
    active = store.meta("active_model")
    return [replace(m, active=m.name == active) for m in found]


def active_model(store: ProjectStore) -> ModelVersion | None:
    """The active model version, or None (the bundled weights)."""
    return next((m for m in model_versions(store) if m.active), None)


def active_model_name(store: ProjectStore) -> str:
    """The name the active model's work is recorded under (``bundled`` when none is active)."""
    return store.meta("active_model") or BUNDLED_MODEL


def active_checkpoint(store: ProjectStore) -> Path | None:
    """The active model's weights, or None (the bundled weights)."""
    active = active_model(store)
    return None if active is None else active.checkpoint(store.root)


def check_backbone(model: ModelVersion | None, backbone: str) -> None:
    """Refuse to run ``model`` (a project's model version; None: the bundled weights) as ``backbone``.

    Raises:
        UsageError: the model was trained for another backbone.
    """
    trained_for = None if model is None else model.settings.get("backbone")
    if trained_for is not None and trained_for != backbone:
        raise UsageError(f"the project's active model {model.name} was trained for the {trained_for} backbone, "
                         f"not {backbone}; pass --backbone {trained_for}")


def activate(store: ProjectStore, name: str) -> ModelVersion:
    """Make a model version the active one (whatever its validation Dice).

    Raises:
        InputError: no such model version.
    """
    found = next((m for m in model_versions(store) if m.name == name), None)
    if found is None or not found.checkpoint(store.root).is_file():
        names = ", ".join(m.name for m in model_versions(store)) or "none yet"
        raise InputError(f"the project has no model {name} (models: {names})")
    store.set_meta("active_model", name)
    return replace(found, active=True)


def new_model_folder(store: ProjectStore) -> Path:
    folder = store.root / "models"
    folder.mkdir(exist_ok=True)
    number = 1 + max((int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit()), default=0)
    while True:
        try:
            (folder / f"v{number}").mkdir()
            return folder / f"v{number}"
        except FileExistsError:  # another run took it meanwhile
            number += 1


def stage_dataset(store: ProjectStore, run_dir: Path, cases: dict[str, int]) -> Path:
    """A dataset in evaluate's layout of links to the cases' images and label versions."""
    data = run_dir / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for case_id, number in cases.items():
        image = store.case(case_id).image
        os.symlink(image.resolve(), data / "images" / (case_id if image.is_dir() else f"{case_id}{suffix_of(image)}"))
        os.symlink((store.root / store.version(case_id, number).path).resolve(), data / "labels" / f"{case_id}.nii.gz")
    return data
