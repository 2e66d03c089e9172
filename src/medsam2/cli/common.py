"""What the subcommands share: one-line argparse errors, the options every command has, the model
options, and output-path checks."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medsam2.errors import OutputError, UsageError


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), like every other medsam2 error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


class PromptAction(argparse.Action):
    """Keeps --label/--box/--point/--mask in command-line order, so --label applies to what follows."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "prompt_items", None) or [])
        items.append((self.dest, values))
        namespace.prompt_items = items


class SupportPromptAction(argparse.Action):
    """Keeps --support-mask/--support-box/--support-point in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "support_prompts", None) or [])
        items.append((self.dest.replace("support_", ""), values))
        namespace.support_prompts = items


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    from medsam2.backbones import BACKBONES
    from medsam2.backbones.runtime import PRECISIONS, RUNTIMES

    parser.add_argument(
        "--backbone", default="litemedsam", choices=BACKBONES,
        help="litemedsam (default, embedded weights) or sam2 (SAM 2 / SAM 2.1 / MedSAM-2 weights; needs --checkpoint)",
    )
    parser.add_argument("--checkpoint", help="weights file to use instead of the backbone's bundled weights (required for sam2)")
    parser.add_argument("--model-config", help="sam2: architecture name (see `medsam2 models`); default: read from the checkpoint")
    parser.add_argument("--offload", action="store_true", help="sam2: keep past frames' memory in CPU memory (long scans, small GPUs)")
    parser.add_argument(
        "--runtime", default="auto", choices=RUNTIMES, help="image encoder runtime: auto (OpenVINO on CPUs, else PyTorch), torch, openvino"
    )
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="auto (native bf16 if any, else fp32), fp32, bf16, fp16"
    )


def model_kwargs(args) -> dict:
    """The model options of a parsed command line, as keyword arguments of build_backbone."""
    return {
        "checkpoint": args.checkpoint,
        "runtime": args.runtime,
        "precision": args.precision,
        "model_config": args.model_config,
        "offload": args.offload,
    }


def warn(message: str) -> None:
    print(f"medsam2: warning: {message}", file=sys.stderr)


def output_path(text: str) -> Path:
    path = Path(text)
    if not path.suffix:
        path = path.with_name(path.name + ".nii.gz")
    return path


def check_report_path(report: str | None, inputs: list[str], overwrite: bool) -> Path | None:
    if not report:
        return None
    path = Path(report)
    if path.suffix.lower() != ".json":
        raise UsageError(f"--report {report}: name the report with a .json suffix")
    if any(Path(i).resolve() == path.resolve() for i in inputs):
        raise OutputError(f"--report {report} is an input; choose another path")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    parent = path.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the report: the folder {parent} does not exist or is not writable")
    return path


def int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise UsageError(f"{option} takes comma-separated integers, not '{text}'") from exc


