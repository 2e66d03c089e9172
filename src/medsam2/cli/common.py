"""What the subcommands share: one-line argparse errors, the options every command has, the model
options, and output-path checks."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from medsam2.errors import OutputError, UsageError
from medsam2.io.formats import DICOM_KINDS, EXPLICIT_FORMATS, label_format
from medsam2.io.limits import DEFAULT_MAX_INPUT_BYTES, ReadLimits, resolve_path

if TYPE_CHECKING:
    from medsam2.engine.litemedsam_settings import PropagationSettings


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


def label_value(text: str) -> int:
    """``--label`` values: integers 1..65535, checked when the command line is parsed (before any work)."""
    from medsam2.io.volume import MAX_LABEL_VALUE

    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer label (1..{MAX_LABEL_VALUE})") from None
    if not 1 <= value <= MAX_LABEL_VALUE:
        raise argparse.ArgumentTypeError(f"{value} is outside 1..{MAX_LABEL_VALUE} (0 is the background)")
    return value


def add_input_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-input-gb", type=float, default=DEFAULT_MAX_INPUT_BYTES / 1024**3,
        help="refuse an input whose header declares more than this many GiB of voxels (default 8), before reading it",
    )


def read_limits(args) -> ReadLimits:
    return ReadLimits.from_gigabytes(args.max_input_gb)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def add_memory_option(parser: argparse.ArgumentParser) -> None:
    """``--memory``: the memory rule of the commands that propagate."""
    from medsam2.engine.memory_kinds import DEFAULT_MEMORY, MEMORY_KINDS

    parser.add_argument("--memory", default=DEFAULT_MEMORY, choices=MEMORY_KINDS, help="memory rule (default: confidence bank)")


def add_multiview_option(parser: argparse.ArgumentParser) -> None:
    """--multiview, as segment and batch take it."""
    parser.add_argument(
        "--multiview", action="store_true",
        help="after the result along --axis, propagate along the two other axes from boxes on it and keep a voxel "
        "where 2 of 3 passes agree (3D scans; three passes: 3-5x the time)",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    from medsam2.backbones.registry import BACKBONES, DEFAULT_BACKBONE, PRECISIONS, RUNTIMES

    parser.add_argument(
        "--backbone", default=DEFAULT_BACKBONE, choices=BACKBONES,
        help="litemedsam (default, embedded weights) or sam2 (SAM 2 / SAM 2.1 / MedSAM-2 weights; needs --checkpoint)",
    )
    parser.add_argument("--checkpoint", help="weights file to use instead of the backbone's bundled weights (required for sam2)")
    parser.add_argument("--project", dest="model_project", metavar="DIR",
                        help="use a project's active model (see `medsam2 project status`) instead of --checkpoint")
    parser.add_argument("--model-config", help="sam2: architecture name (see `medsam2 models`); default: read from the checkpoint")
    parser.add_argument("--offload", action="store_true", help="sam2: keep past frames' memory in CPU memory (long scans, small GPUs)")
    parser.add_argument(
        "--runtime", default="auto", choices=RUNTIMES, help="image encoder runtime: auto (OpenVINO on CPUs, else PyTorch), torch, openvino"
    )
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="auto (native bf16 if any, else fp32), fp32, bf16, fp16"
    )
    parser.add_argument(
        "--stop-intensity-overlap", type=fraction, metavar="F",
        help="litemedsam: a slice looks absent when the values inside its mask overlap the prompted slice's by less "
        "than F (histogram intersection, 0..1; default 0.35; 0 turns the rule off, e.g. for a structure whose "
        "brightness changes along it)",
    )


def fraction(text: str) -> float:
    """A number in [0, 1], checked when the command line is parsed."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is outside 0..1")
    return value


def engine_settings(args) -> PropagationSettings | None:
    """The engine settings a parsed command line asks for; None keeps the backbone's measured defaults.

    Raises:
        UsageError: an engine option given for a backbone whose engine does not take it.
    """
    from dataclasses import fields

    from medsam2.engine.step_kinds import STEP_KINDS

    if args.stop_intensity_overlap is None:
        return None
    settings_type = STEP_KINDS[args.backbone].settings
    if "stop_intensity_overlap" not in {f.name for f in fields(settings_type)}:
        takes = ", ".join(name for name, kind in STEP_KINDS.items() if "stop_intensity_overlap" in {f.name for f in fields(kind.settings)})
        raise UsageError(
            f"--stop-intensity-overlap applies to the {takes} backbone; the {args.backbone} engine ends objects by its own object score"
        )
    return settings_type(stop_intensity_overlap=args.stop_intensity_overlap)


def apply_project_model(args) -> None:
    """``--project DIR``: the project's active model becomes ``args.checkpoint`` (none active: the
    bundled weights, said on stderr).

    Raises:
        UsageError: both --project and --checkpoint, or a model trained for another backbone.
        InputError: DIR holds no project.
    """
    if getattr(args, "model_project", None) is None:
        return
    if args.checkpoint is not None:
        raise UsageError("give --project (its active model) or --checkpoint, not both")
    from medsam2.project.models import active_model, check_backbone
    from medsam2.project.store import open_project

    with open_project(args.model_project) as store:
        active = active_model(store)
        root = store.root
    if active is None:
        warn(f"{args.model_project} has no active model yet; using the bundled weights")
        return
    check_backbone(active, args.backbone)
    args.checkpoint = str(active.checkpoint(root))


def model_options(args, settings=None):
    """The one :class:`~medsam2.engine.options.ModelOptions` of a parsed command line: every command
    that runs a model builds it here and passes it down whole (``settings``: the engine settings
    when already checked, else read from ``args``)."""
    from medsam2.engine.memory_kinds import DEFAULT_MEMORY
    from medsam2.engine.options import ModelOptions

    return ModelOptions(
        backbone=args.backbone, device=args.device, memory=getattr(args, "memory", DEFAULT_MEMORY), checkpoint=args.checkpoint,
        runtime=args.runtime, precision=args.precision, model_config=args.model_config, offload=args.offload,
        settings=engine_settings(args) if settings is None else settings,
    )


def warn(message: str) -> None:
    print(f"medsam2: warning: {message}", file=sys.stderr)


def output_path(text: str, default_suffix: str = ".nii.gz") -> Path:
    """``-o`` as given, or with ``default_suffix`` added where it has no suffix; a folder is refused."""
    path = Path(text)
    if path.is_dir():
        raise OutputError(f"the output {path} is a folder; give a file name such as {path / 'mask.nii.gz'}")
    if not path.suffix:
        path = path.with_name(path.name + default_suffix)
    return path


#: what ``--format`` takes where a label map is written (segment, evaluate --save-predictions)
OUTPUT_FORMATS = EXPLICIT_FORMATS


def check_output_format(format: str, output: Path) -> str:
    """Check ``--format`` against the output's name; returns what a .dcm output is ("dicom-seg" or "rtstruct").

    Raises:
        UsageError: the suffix does not go with the format.
    """
    if format == "auto":
        return DICOM_KINDS[0]
    chosen = label_format(format)
    if not output.name.lower().endswith(chosen.suffix):
        what = "a DICOM file" if chosen.needs_dicom_input else f"NAME{chosen.suffix}"
        raise UsageError(f"--format {format} writes {what}; name the output e.g. {output_stem(output)}{chosen.suffix}")
    return chosen.dicom_kind or DICOM_KINDS[0]


def output_stem(path: Path) -> str:
    """``out/liver.nii.gz`` -> ``out/liver`` (the path without its image suffix)."""
    from medsam2.io.volume import suffix_of

    suffix = suffix_of(path)
    text = str(path)
    return text[: len(text) - len(suffix)] if suffix and text.lower().endswith(suffix) else text


@contextmanager
def output_claim(paths: list[Path]) -> Iterator[None]:
    """Hold a lock file beside each output for the run, so that a second run on the same output is
    refused before its work instead of after it (a lock left by a run that died is taken over).

    Raises:
        OutputError: another live medsam2 process holds one of the outputs.
    """
    from medsam2.io.atomic import claim_lock, release_lock

    held: list[Path] = []
    try:
        for path in paths:
            held.append(claim_lock(path))
        yield
    finally:
        for lock in held:
            release_lock(lock)


def check_report_path(report: str | None, inputs: list[str], overwrite: bool) -> Path | None:
    if not report:
        return None
    path = Path(report)
    if path.suffix.lower() != ".json":
        raise UsageError(f"--report {report}: name the report with a .json suffix")
    if path.is_dir():
        raise OutputError(f"--report {report} is a folder; give a file name such as {path / 'report.json'}")
    if any(resolve_path(Path(i)) == resolve_path(path) for i in inputs):
        raise OutputError(f"--report {report} is an input; choose another path")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    parent = resolve_path(path).parent
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


