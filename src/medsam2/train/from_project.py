"""Training a new model version from a project's final labels (``medsam2 train --project DIR``).

The run starts from the project's active model (or the bundled weights), validates it on the
project's fixed validation cases at epoch 0, and writes ``DIR/models/vN/`` (the trainer's files,
``model.json``, and ``data/``: links to the images and label versions it used). The new model
becomes active only when its validation Dice is at least the starting model's.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace

from medsam2.errors import UsageError
from medsam2.project.models import (
    ModelVersion,
    active_model,
    active_model_name,
    check_backbone,
    new_model_folder,
    stage_dataset,
    validation_split,
)
from medsam2.project.store import ProjectStore


def train_project(store: ProjectStore, settings, device, say=None, progress: bool = False) -> ModelVersion:
    """Train a new model version on the project's final labels.

    Arguments:
        settings: :class:`~medsam2.train.settings.TrainSettings`; its checkpoint (None: the
            project's active model, else the bundled weights) and validation cases are set here.

    Raises:
        UsageError: fewer than two cases with a final label.
    """
    from medsam2.train.loop import Trainer

    finals = {c.case_id: v.version for c in store.cases() if (v := store.latest(c.case_id, "final")) is not None}
    if len(finals) < 2:
        raise UsageError(f"training needs final labels of at least two cases (one to validate on); the project has {len(finals)}")
    train, val = validation_split(store, list(finals))
    if not train:
        raise UsageError("every final case is a validation case; label one more case final to train on")
    base, active = active_model_name(store), active_model(store)
    if settings.checkpoint is None:
        check_backbone(active, settings.backbone)
    start = settings.checkpoint or (None if active is None else str(active.checkpoint(store.root)))
    settings = replace(settings, checkpoint=start, val_cases=tuple(val), val_fraction=0.0)
    run_dir = new_model_folder(store)
    data = stage_dataset(store, run_dir, finals)
    records = Trainer(data, run_dir, settings, device, say=say, progress=progress,
                      features_dir=store.root / "cache" / "train-features", frame_features=store.root / "cache" / "features").run()
    best = max(records, key=lambda r: r.val_dice)
    before = records[0].val_dice
    better = best.val_dice >= before and best.epoch > 0
    reason = (f"validation Dice {best.val_dice:.4f} against {before:.4f} of {base}" if better
              else f"kept inactive: validation Dice {best.val_dice:.4f} does not beat {before:.4f} of {base}")
    model = ModelVersion(
        name=run_dir.name, created=time.time(), base=base, train_cases={c: finals[c] for c in train},
        val_cases={c: finals[c] for c in val}, val_dice_base=round(before, 5), val_dice=round(best.val_dice, 5),
        active=better, reason=reason, settings=settings.to_dict(),
    )
    (run_dir / "model.json").write_text(json.dumps(asdict(model), indent=2) + "\n")
    if better:
        store.set_meta("active_model", model.name)
    return model
