"""``medsam2 train``: fine-tune LiteMedSAM or a SAM 2 family model on a labelled dataset, on this
machine or with torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medsam2.cli.common import add_common, int_list


def add_arguments(parser) -> None:
    """The options of ``medsam2 train`` (also those of ``python -m medsam2.cli.train_worker`` under torchrun)."""
    from medsam2.io.slicing import AXES
    from medsam2.train.settings import PROMPT_KINDS

    parser.add_argument("dataset", nargs="?", help="dataset folder, as evaluate reads it (nnU-Net/MSD layout, or images/ + labels/)")
    parser.add_argument("-o", "--output-dir", dest="run_dir", help="RUN_DIR: best.pth, last.pth, train_log.csv, "
                        "training_curves.png and the feature cache (required with DATASET)")
    parser.add_argument("--project", help="train on a project's final labels instead of DATASET: a new model version "
                        "DIR/models/vN, active when its validation Dice beats the active model's (see docs/project.md)")
    from medsam2.backbones.registry import BACKBONES, DEFAULT_BACKBONE

    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=BACKBONES,
                        help="litemedsam (default: slices, cached embeddings) or sam2 (slice sequences through SAM 2's memory)")
    parser.add_argument("--checkpoint", help="weights to start from (default: the bundled LiteMedSAM weights; required for sam2)")
    parser.add_argument("--model-config", help="sam2: architecture name (see `medsam2 models`); default: read from the checkpoint")
    parser.add_argument("--image-size", type=int, help="sam2: train at this input side (a multiple of 32) instead of the config's")
    parser.add_argument("--sequence-length", type=int, default=8,
                        help="sam2: slices per training sequence, prompt on the first (default 8, as SAM 2 trains)")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training slices at most (default 10)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of cases held out for validation (default 0.2)")
    parser.add_argument("--val-cases", help="comma-separated validation case names (instead of --val-fraction)")
    parser.add_argument("--prompt", default="box", choices=PROMPT_KINDS,
                        help="box (default: reference box with jitter and, on 3D data, the propagation's neighbour box), "
                        "click, or mixed")
    parser.add_argument("--jitter", type=int, default=5, help="move box edges at random by up to this many pixels (default 5)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="slices (sam2: sequences) per step, over all processes (default 8)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    from medsam2.train.settings import TUNE_PARTS

    parser.add_argument("--tune", choices=TUNE_PARTS,
                        help="litemedsam: masks (default: the mask heads only; the predicted IoU stays the starting "
                        "weights') or decoder (prompt encoder + mask decoder, IoU head on the true IoU)")
    parser.add_argument("--train-encoder", action="store_true", help="train the image encoder too (slow on a CPU: a GPU is advised)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the slice order and the jitter (default 0)")
    parser.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better validation Dice")
    parser.add_argument("--labels", help="comma-separated label values to train on (default: every label found)")
    parser.add_argument("--axis", default="axial", choices=AXES)
    parser.add_argument("--window", default="auto", help="intensity window, as segment takes it (default auto)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from last.pth (same settings)")
    add_common(parser)


def add_parser(commands) -> None:
    train = commands.add_parser(
        "train", help="fine-tune a backbone on your labelled data (CPU: minutes; several processes: --nproc N)",
        description="Fine-tune LiteMedSAM's mask heads (--tune decoder: its prompt encoder and mask decoder) on cached "
        "embeddings of a labelled dataset, "
        "or a SAM 2 family model's memory attention, memory encoder and mask decoder on slice sequences (--backbone sam2); "
        "RUN_DIR/best.pth then goes to --checkpoint of segment, evaluate, oneprompt and serve.",
    )
    add_arguments(train)
    train.add_argument("--nproc", type=int, default=1,
                       help="train in N processes with DistributedDataParallel (gloo on CPU, nccl on CUDA), via torchrun")


def settings_of(args):
    from medsam2.train.settings import TrainSettings

    val_cases = tuple(c.strip() for c in args.val_cases.split(",") if c.strip()) if args.val_cases else None
    return TrainSettings(
        backbone=args.backbone, checkpoint=str(Path(args.checkpoint).resolve()) if args.checkpoint else None, epochs=args.epochs,
        val_fraction=args.val_fraction, val_cases=val_cases, prompt=args.prompt, jitter=args.jitter, batch_size=args.batch_size,
        lr=args.lr, train_encoder=args.train_encoder, tune=args.tune, seed=args.seed, patience=args.patience,
        labels=int_list(args.labels, "--labels"), axis=args.axis, window=args.window, model_config=args.model_config,
        image_size=args.image_size, sequence_length=args.sequence_length,
    )


def run_train(args, argv: list[str]) -> int:
    """Here (one process), or ``--nproc N`` processes started by torchrun (``argv``: the command line)."""
    from medsam2.errors import UsageError

    if getattr(args, "nproc", 1) < 1:
        raise UsageError(f"--nproc takes a positive integer, not {args.nproc}")
    if args.project is not None:
        refused = [name for name, given in (("DATASET", args.dataset), ("-o", args.run_dir), ("--resume", args.resume),
                                            ("--val-cases", args.val_cases), ("--nproc", getattr(args, "nproc", 1) > 1)) if given]
        if refused:
            raise UsageError(f"--project chooses the data, the run folder and the validation cases itself; drop {', '.join(refused)}")
        return train_project_here(args)
    if args.dataset is None or args.run_dir is None:
        raise UsageError("name a DATASET and -o RUN_DIR, or train a project with --project DIR")
    if getattr(args, "nproc", 1) > 1:
        settings_of(args).check()
        argv = _without_nproc([str(a) for a in argv[argv.index("train") + 1 :]])
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.nproc),
                   "-m", "medsam2.cli.train_worker", *argv]
        return subprocess.call(command, env=dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.nproc))))
    return train_here(args)


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--nproc":
            skip = True
            continue
        if item.startswith("--nproc="):
            continue
        out.append(item)
    return out


def train_project_here(args) -> int:
    from medsam2.backbones.devices import resolve_device
    from medsam2.project.store import open_project
    from medsam2.train.from_project import train_project

    say = None if args.quiet else (lambda text: print(text, flush=True))
    with open_project(args.project) as store:
        model = train_project(store, settings_of(args), resolve_device(args.device), say=say,
                              progress=not args.quiet and sys.stderr.isatty())
    print(f"model {model.name}: {'active' if model.active else 'inactive'}; {model.reason}; "
          f"{len(model.train_cases)} training and {len(model.val_cases)} validation cases")
    return 0


def train_here(args) -> int:
    from medsam2.backbones.devices import resolve_device
    from medsam2.train.loop import Trainer, world_from_environment

    device = resolve_device(args.device)
    world = world_from_environment(device)
    say = (lambda text: print(text, flush=True)) if not args.quiet and world.writes else None
    trainer = Trainer(Path(args.dataset), Path(args.run_dir), settings_of(args), device, world, resume=args.resume,
                      overwrite=args.overwrite, progress=not args.quiet and sys.stderr.isatty(), say=say)
    records = trainer.run()
    if say is not None and records:
        best = max(records, key=lambda r: r.val_dice)
        print(f"best validation Dice {best.val_dice:.4f} at epoch {best.epoch} (epoch 0: {records[0].val_dice:.4f}); "
              f"wrote {Path(args.run_dir) / 'best.pth'}, last.pth, train_log.csv, training_curves.png")
    if world.size > 1:
        import torch

        torch.distributed.destroy_process_group()
    return 0
