"""The training loop: the split, the feature cache, epochs, validation, early stopping, checkpoints.

What trains and how a target becomes a loss is the backbone's recipe:
:class:`~medsam2.train.litemedsam_recipe.LiteMedSAMRecipe` (the mask heads, or the prompt encoder
and mask decoder, on cached embeddings, one slice per target) or :class:`~medsam2.train.sam2_recipe.Sam2Recipe` (short
slice sequences through SAM 2's memory). Losses are :mod:`medsam2.engine.losses`. The image encoder
is frozen unless ``train_encoder`` (then slices are encoded in each step, in PyTorch).

Several processes (``torchrun``): every global batch is the same as in one process, and each
process takes its share (``batch[rank::world]``); each share's loss is its sum over the global
batch size times the world size, so DistributedDataParallel's gradient average is the gradient
of the global batch's mean loss, whatever the split. Only rank 0 writes.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from medsam2.backbones.checkpoints import load_weights_only
from medsam2.backbones.registry import backbone_family
from medsam2.errors import InputError, OutputError, UsageError
from medsam2.train.prompts import batch_kind
from medsam2.train.samples import CaseFeatures, cached_case, split_cases
from medsam2.train.settings import TrainSettings

CHECKPOINT_FORMAT = 1
LOG_FIELDS = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds")


@dataclass
class EpochRecord:
    """One row of ``train_log.csv`` (epoch 0: the starting weights, before any step)."""

    epoch: int
    train_loss: float | None
    val_loss: float
    val_dice: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def writes(self) -> bool:
        return self.rank == 0


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int, world: int) -> list[list[int]]:
    """The global batches of an epoch: a seeded permutation in chunks of ``batch_size``; a last
    chunk smaller than the number of processes is dropped (every process needs a share)."""
    order = np.random.default_rng([seed, epoch]).permutation(count).tolist()
    batches = [order[i : i + batch_size] for i in range(0, count, batch_size)]
    return [b for b in batches if len(b) >= world]


class Trainer:
    """One run: the split, the cached features, the model, and what it writes in ``run_dir``.

    Arguments:
        dataset: the dataset folder (as ``evaluate`` reads it).
        run_dir: where checkpoints, the log, the curves and the feature cache go.
        settings: the run's settings.
        device: where the decoder trains.
        world: this process among the training processes.
        resume: continue from ``run_dir/last.pth``; overwrite: replace a previous run there.
        progress: show progress bars; say: called with each line worth printing.
        features_dir: the feature cache's folder (default ``run_dir/features``); one file per case,
            replaced when its inputs or the starting weights change.
        frame_features: a project's per-slice feature folder (``DIR/cache/features``, what the
            viewer and the scoring fill): a slice found there for the starting weights is not
            encoded again, and a slice encoded here is written there.
    """

    def __init__(
        self, dataset: Path, run_dir: Path, settings: TrainSettings, device: torch.device, world: World = World(),
        resume: bool = False, overwrite: bool = False, progress: bool = False, say: Callable[[str], None] | None = None,
        features_dir: Path | None = None, frame_features: Path | None = None,
    ) -> None:
        from medsam2.evaluation.datasets import discover_dataset

        settings.check()
        self.settings, self.device, self.world, self.progress = settings, device, world, progress
        self.say = say or (lambda text: None)
        self.dataset_path = Path(dataset)
        self.run_dir = Path(run_dir)
        #: where each case's encoded frames are cached (default RUN_DIR/features; a project shares one)
        self.features_dir = Path(features_dir) if features_dir is not None else self.run_dir / "features"
        self.frame_features = frame_features
        self.resume_state = self._check_run_dir(resume, overwrite)
        self.dataset = discover_dataset(self.dataset_path)
        if not self.dataset.cases:
            raise InputError(f"{self.dataset_path} has no case with a label map (labels/ or labelsTr/); nothing to train on")
        self.train_cases, self.val_cases = split_cases([c.case_id for c in self.dataset.cases], settings.val_fraction,
                                                      settings.val_cases, settings.seed)
        self._check_labels()
        self.recipe_type = backbone_family(settings.backbone).recipe_class()
        self.backbone = self._backbone()
        from medsam2.backbones.runtime import file_sha256

        # what the run started from: the weights given (or bundled), not a resumed run's last epoch
        self.base_sha256 = self.resume_state["medsam2"]["base_sha256"] if self.resume_state else file_sha256(self.backbone.checkpoint)

    # -- before any work ---------------------------------------------------------------------
    def _check_run_dir(self, resume: bool, overwrite: bool) -> dict | None:
        run_dir = self.run_dir
        if run_dir.exists() and not run_dir.is_dir():
            raise OutputError(f"{run_dir} is a file; RUN_DIR is a folder")
        parent = run_dir.resolve().parent
        if not parent.is_dir():
            raise OutputError(f"the folder {parent} does not exist; create it first")
        if not os.access(run_dir if run_dir.is_dir() else parent, os.W_OK | os.X_OK):
            raise OutputError(f"{run_dir if run_dir.is_dir() else parent} is not writable")
        last = run_dir / "last.pth"
        if resume:
            if not last.is_file():
                raise UsageError(f"--resume continues a run in {run_dir}, and there is no {last.name} there")
            state = load_weights_only(last, "checkpoint")
            meta = state.get("medsam2", {}) if isinstance(state, dict) else {}
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise UsageError(f"{last} was not written by medsam2 train; it cannot be resumed")
            previous = TrainSettings.from_dict(meta["settings"])
            changed = self.settings.differences(previous)
            if changed:
                shown = ", ".join(f"{k} {previous.to_dict()[k]!r} -> {self.settings.to_dict()[k]!r}" for k in changed)
                raise UsageError(f"--resume continues the run with its own settings; these differ: {shown}")
            return state
        if run_dir.is_dir() and any(p.name in ("last.pth", "best.pth", "train_log.csv") for p in run_dir.iterdir()) and not overwrite:
            raise OutputError(f"{run_dir} holds a training run; pass --resume to continue it or --overwrite to replace it")
        return None

    def _check_labels(self) -> None:
        from medsam2.evaluation.harness import load_case

        found: set[int] = set()
        for case in self.dataset.cases:
            loaded = load_case(case)
            if loaded is None:
                raise InputError(f"{case.case_id}: its label map has another shape than its image; fix or remove the case")
            found.update(int(v) for v in np.unique(loaded[1]) if v > 0)
        if not found:
            raise InputError(f"the label maps of {self.dataset_path} hold no structure (all zeros)")
        wanted = self.settings.labels
        missing = [v for v in wanted or () if v not in found]
        if missing:
            raise UsageError(f"label {missing[0]} is in no case of {self.dataset_path} (labels found: {sorted(found)})")
        self.labels = sorted(wanted) if wanted else sorted(found)

    def _backbone(self):
        return self.recipe_type.build_backbone(self.settings, self.device)

    def _encoder(self):
        """What encodes the cases' slices: the backbone, through the project's per-slice feature
        folder where there is one (not while the encoder trains: it takes the inputs then; nor for
        multiscale features, which the folder does not keep)."""

        if self.frame_features is None or self.settings.train_encoder or backbone_family(self.settings.backbone).multiscale_features:
            return self.backbone
        from medsam2.engine.feature_cache import CachedBackbone
        from medsam2.engine.feature_disk import FeatureFolder, model_key

        return CachedBackbone(self.backbone, 512.0, disk=FeatureFolder(self.frame_features, model_key(self.backbone)))

    def _recipe(self):
        return self.recipe_type(self.backbone, self.settings, self.device)

    # -- data ----------------------------------------------------------------------------------
    def load_features(self) -> None:
        """Every case's cached frames (encoded now where the cache lacks them); rank 0 encodes."""
        folder = self.features_dir
        self.cases: dict[str, CaseFeatures] = {}
        wanted = list(self.settings.labels) if self.settings.labels else None
        encoder = self._encoder()
        if self.world.size > 1 and not self.world.writes:
            torch.distributed.barrier()  # rank 0 writes the cache first
        for case in _progress(self.dataset.cases, "encoding", self.progress and self.world.writes):
            if self.world.writes:
                folder.mkdir(parents=True, exist_ok=True)
            self.cases[case.case_id], _ = cached_case(folder, encoder, case, self.settings, wanted)
        if self.world.size > 1 and self.world.writes:
            torch.distributed.barrier()
        self.recipe.cases = self.cases
        self.train_targets = [t for c in self.train_cases for t in self.cases[c].targets(c)]
        self.val_targets = self.recipe.validation_targets([t for c in self.val_cases for t in self.cases[c].targets(c)])
        if not self.train_targets or not self.val_targets:
            raise InputError("no slice holds a wanted structure in the training or the validation cases")

    # -- training ------------------------------------------------------------------------------
    def run(self) -> list[EpochRecord]:
        """Train until the epochs are done or validation stops improving; returns the log."""
        settings = self.settings
        torch.manual_seed(settings.seed)
        self.recipe = self._recipe()
        self.load_features()
        decoder = self.recipe.module
        if self.resume_state is not None:
            self.recipe.load(self.resume_state["model"])
        decoder.train()
        model = decoder
        if self.world.size > 1:
            # box prompts leave the point embeddings unused (and clicks the box ones)
            model = torch.nn.parallel.DistributedDataParallel(decoder, find_unused_parameters=True)
        optimizer = torch.optim.AdamW([p for p in decoder.parameters() if p.requires_grad], lr=settings.lr, weight_decay=0.01)
        records: list[EpochRecord] = []
        start_epoch, best, bad = 1, -1.0, 0
        if self.resume_state is not None:
            meta = self.resume_state["medsam2"]
            optimizer.load_state_dict(self.resume_state["optimizer"])
            start_epoch, best, bad = int(meta["epoch"]) + 1, float(meta["best_val_dice"]), int(meta["bad_epochs"])
            records = _read_log(self.run_dir / "train_log.csv")
            if bad >= settings.patience or start_epoch > settings.epochs:
                self.say(f"the run in {self.run_dir} has finished (epoch {meta['epoch']}); raise --epochs to train further")
                return records
        else:
            started = time.perf_counter()
            val_loss, val_dice = self.validate(decoder)
            records.append(EpochRecord(0, None, val_loss, val_dice, settings.lr, round(time.perf_counter() - started, 2)))
            best = val_dice
            self.say(f"epoch 0 (starting weights): validation Dice {val_dice:.4f}, loss {val_loss:.4f}")
            if self.world.writes:
                self._write(decoder, optimizer, records, 0, best, 0, is_best=True)
        for epoch in range(start_epoch, settings.epochs + 1):
            started = time.perf_counter()
            train_loss = self.train_epoch(model, optimizer, epoch)
            val_loss, val_dice = self.validate(decoder)
            improved = val_dice > best
            best, bad = (val_dice, 0) if improved else (best, bad + 1)
            records.append(EpochRecord(epoch, train_loss, val_loss, val_dice, settings.lr, round(time.perf_counter() - started, 2)))
            self.say(f"epoch {epoch}: train loss {train_loss:.4f}, validation Dice {val_dice:.4f}, loss {val_loss:.4f}"
                     + (" (best)" if improved else ""))
            if self.world.writes:
                self._write(decoder, optimizer, records, epoch, best, bad, is_best=improved)
            if bad >= settings.patience:
                self.say(f"no better validation Dice for {bad} epochs: stopped early")
                break
        return records

    def train_epoch(self, model, optimizer, epoch: int) -> float:
        settings, world = self.settings, self.world
        batches = epoch_batches(len(self.train_targets), settings.batch_size, settings.seed, epoch, world.size)
        total = torch.zeros(2, dtype=torch.float64)
        bar = _bar(len(batches), f"epoch {epoch}", self.progress and world.writes)
        for number, batch in enumerate(batches):
            share = batch[world.rank :: world.size]
            kind = batch_kind(settings.prompt, settings.seed, epoch, number)
            losses, _ = self.recipe.losses(model, self.train_targets, share, kind, epoch, training=True)
            loss = losses.sum() / len(batch) * world.size
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += torch.tensor([float(losses.detach().sum()), len(share)], dtype=torch.float64)
            if bar is not None:
                bar.set_postfix(loss=f"{float(losses.detach().mean()):.4f}")
                bar.update(1)
        if bar is not None:
            bar.close()
        if world.size > 1:
            torch.distributed.all_reduce(total)
        return float(total[0] / max(total[1], 1))

    @torch.no_grad()
    def validate(self, decoder) -> tuple[float, float]:
        """Mean loss and mean Dice of the validation targets with their reference box (or deepest click)."""
        decoder.eval()
        kind = "click" if self.settings.prompt == "click" else "box"
        losses, dices = [], []
        for start in range(0, len(self.val_targets), 16):
            indices = list(range(start, min(start + 16, len(self.val_targets))))
            loss, dice = self.recipe.losses(decoder, self.val_targets, indices, kind, 0, training=False)
            losses.append(loss.cpu())
            dices.append(dice.cpu())
        decoder.train()
        return float(torch.cat(losses).mean()), float(torch.cat(dices).mean())

    # -- outputs -------------------------------------------------------------------------------
    def metadata(self, epoch: int, val_dice: float, best: float, bad: int) -> dict:
        """The ``medsam2`` block of best.pth and last.pth."""
        from medsam2._version import __version__

        return {
            "format": CHECKPOINT_FORMAT, "backbone": self.settings.backbone, "medsam2_version": __version__,
            "base_checkpoint": str(self.backbone.checkpoint), "base_sha256": self.base_sha256,
            "dataset": str(self.dataset_path.resolve()), "settings": self.settings.to_dict(), "labels": list(self.labels),
            "train_cases": list(self.train_cases), "val_cases": list(self.val_cases), "epoch": epoch, "val_dice": val_dice,
            "best_val_dice": best, "bad_epochs": bad, **self.recipe.metadata(),
        }

    def _write(self, decoder, optimizer, records: list[EpochRecord], epoch: int, best: float, bad: int, is_best: bool) -> None:
        from medsam2.io.atomic import atomic_write

        self.run_dir.mkdir(exist_ok=True)
        meta = self.metadata(epoch, records[-1].val_dice, best, bad)
        state = self.recipe.weights()
        atomic_write(self.run_dir / "last.pth", lambda tmp: torch.save({"model": state, "optimizer": optimizer.state_dict(),
                                                                        "medsam2": meta}, tmp), ".pth")
        if is_best:
            atomic_write(self.run_dir / "best.pth", lambda tmp: torch.save({"model": state, "medsam2": meta}, tmp), ".pth")
        _write_log(self.run_dir / "train_log.csv", records)
        _write_curves(self.run_dir / "training_curves.png", records)


def _progress(items, description: str, show: bool):
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, unit="case")


def _bar(total: int, description: str, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="batch")


def _write_log(path: Path, records: list[EpochRecord]) -> None:
    from medsam2.io.atomic import atomic_write

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
            writer.writeheader()
            for record in records:
                row = asdict(record)
                writer.writerow({k: ("" if row[k] is None else (round(row[k], 6) if isinstance(row[k], float) else row[k]))
                                 for k in LOG_FIELDS})

    atomic_write(path, write, ".csv")


def _read_log(path: Path) -> list[EpochRecord]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [EpochRecord(int(r["epoch"]), float(r["train_loss"]) if r["train_loss"] else None, float(r["val_loss"]),
                            float(r["val_dice"]), float(r["lr"]), float(r["seconds"])) for r in csv.DictReader(handle)]


def _write_curves(path: Path, records: list[EpochRecord]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsam2.io.atomic import atomic_write

    figure, (loss_axis, dice_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [r.epoch for r in records]
    trained = [r for r in records if r.train_loss is not None]
    loss_axis.plot([r.epoch for r in trained], [r.train_loss for r in trained], "o-", label="training")
    loss_axis.plot(epochs, [r.val_loss for r in records], "o-", label="validation")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss (Dice + BCE + IoU error)")
    loss_axis.legend()
    dice_axis.plot(epochs, [r.val_dice for r in records], "o-", color="tab:green")
    dice_axis.set_xlabel("epoch")
    dice_axis.set_ylabel("validation Dice (reference box)")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"), ".png")
    plt.close(figure)


def world_from_environment(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes (gloo on CPU, nccl on CUDA), or rank 0 of 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    threads = max(1, (os.cpu_count() or 1) // size)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads)
    return World(torch.distributed.get_rank(), torch.distributed.get_world_size())

