"""The ``medsam2`` command line: ``segment`` and ``demo``.

Errors are printed on one line to stderr (``medsam2: error: ...``) with exit code 2 for usage
errors and 1 for data errors; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from medsam2._version import __version__
from medsam2.errors import MedSAM2Error, OutputError, PromptError, UsageError
from medsam2.io.atomic import atomic_write


class _OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), like every other medsam2 error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _PromptAction(argparse.Action):
    """Keeps --label/--box/--point/--mask in command-line order, so --label applies to what follows."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "prompt_items", None) or [])
        items.append((self.dest, values))
        namespace.prompt_items = items


class _SupportPromptAction(argparse.Action):
    """Keeps --support-mask/--support-box/--support-point in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "support_prompts", None) or [])
        items.append((self.dest.replace("support_", ""), values))
        namespace.support_prompts = items


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
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


def _model_kwargs(args) -> dict:
    """The model options of a parsed command line, as keyword arguments of build_backbone."""
    return {
        "checkpoint": args.checkpoint,
        "runtime": args.runtime,
        "precision": args.precision,
        "model_config": args.model_config,
        "offload": args.offload,
    }


def build_parser() -> argparse.ArgumentParser:
    from medsam2.memory import MEMORY_KINDS
    from medsam2.preprocess import WINDOW_CHOICES
    from medsam2.slicing import AXES

    parser = _OneLineParser(prog="medsam2", description="Promptable medical image segmentation (MedSAM-2 style).")
    parser.add_argument("--version", action="version", version=f"medsam2 {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_OneLineParser)

    seg = commands.add_parser(
        "segment",
        help="segment structures through a scan from prompts on one or a few slices",
        description="Segment structures through a scan. Coordinates are 0-based voxel indices (IJK) as "
        "ITK-SNAP and 3D Slicer show them: --box 42:10,20,80,90 is slice 42, x 10..80, y 20..90.",
    )
    seg.add_argument("input", help="NIfTI, NRRD, MHA/MHD file, a DICOM series folder, or a 2D image")
    seg.add_argument("-o", "--output", required=True, help="label map to write (.nii.gz default; suffix picks the format)")
    seg.add_argument("--label", type=int, action=_PromptAction, help="label of the object that the prompts after it belong to (default 1)")
    seg.add_argument("--box", action=_PromptAction, help="box SLICE:x0,y0,x1,y1 (inclusive voxel indices)")
    seg.add_argument("--point", action=_PromptAction, help="click SLICE:x,y[,1|0] (1 foreground, the default; 0 background)")
    seg.add_argument("--mask", action=_PromptAction, help="mask file on the input's grid: every slice with foreground pins the object")
    seg.add_argument("--name", action=_PromptAction, help="name of the current object (for the report)")
    seg.add_argument("--prompts", help="prompts.json with many objects (see README)")
    seg.add_argument("--axis", default="axial", choices=AXES, help="slicing direction (default axial)")
    seg.add_argument("--window", default="auto", choices=WINDOW_CHOICES, help="intensity window (default auto)")
    seg.add_argument("--memory", default="confidence", choices=MEMORY_KINDS, help="memory rule (default: confidence bank)")
    _add_model_options(seg)
    seg.add_argument("--time-index", type=int, help="for 4D input: which 3D volume to segment (0-based)")
    seg.add_argument("--report", help="write a JSON report here")
    _add_common(seg)

    ev = commands.add_parser(
        "evaluate",
        help="measure methods side by side on a labelled dataset with simulated prompts",
        description="Datasets: nnU-Net/MSD layout (imagesTr/, labelsTr/, dataset.json) or images/ + labels/.",
    )
    ev.add_argument("dataset", help="dataset folder")
    ev.add_argument("-o", "--output-dir", required=True, help="RESULTS_DIR for per_case.csv, summary.csv/.md, results.json")
    ev.add_argument(
        "--protocol", default="box-mid",
        help="box-mid (default), box-largest, click-mid, box-every-K, oneprompt, or interactive-N (N = 1..10 rounds of corrections)",
    )
    ev.add_argument("--correction", default="box", choices=("box", "click"),
                    help="interactive-N: correct the worst slice with its reference box (default) or one click")
    ev.add_argument("--methods", default="confidence,oracle",
                    help="comma-separated: confidence, fifo, none, oracle (default: confidence,oracle)")
    ev.add_argument("--labels", help="comma-separated label values to evaluate (default: every label found)")
    ev.add_argument("--cases", type=int, help="only the first N cases")
    ev.add_argument("--seed", type=int, default=0, help="seed of the prompt jitter")
    ev.add_argument("--jitter", type=int, default=0, help="move box edges at random by up to this many pixels")
    ev.add_argument("--nsd-tol", type=float, default=2.0, help="NSD tolerance in mm (default 2)")
    ev.add_argument("--axis", default="axial", choices=AXES)
    ev.add_argument("--window", default="auto", choices=WINDOW_CHOICES)
    _add_model_options(ev)
    ev.add_argument("--save-predictions", action="store_true", help="write every method's masks under RESULTS_DIR/predictions")
    ev.add_argument("--resume", action="store_true", help="continue a run in RESULTS_DIR, skipping finished cases")
    _add_common(ev)

    one = commands.add_parser(
        "oneprompt",
        help="segment the structure of annotated support example(s) in other images or scans, with no prompt on them",
        description="Each --support takes the next --support-mask, --support-box or --support-point (in order). "
        "Boxes and points on 2D images may omit the slice (x0,y0,x1,y1 / x,y); on volumes write SLICE:x0,y0,x1,y1.",
    )
    one.add_argument("queries", nargs="+", help="query images or volumes, or folders of them")
    one.add_argument("--support", action="append", required=True, help="an annotated example image or volume (repeatable)")
    one.add_argument("--support-mask", action=_SupportPromptAction, help="mask of the structure on the support (one slice is enough)")
    one.add_argument("--support-box", action=_SupportPromptAction, help="box on the support instead of a mask")
    one.add_argument("--support-point", action=_SupportPromptAction, help="click on the support instead of a mask")
    one.add_argument("-o", "--output-dir", required=True, help="folder for one mask per query, report.json and overview.png")
    one.add_argument("--window", default="auto", choices=WINDOW_CHOICES, help="intensity window (default auto)")
    _add_model_options(one)
    _add_common(one)

    commands.add_parser("models", help="list the backbones and SAM 2 model configs, with what each needs")
    demo = commands.add_parser("demo", help="segment five organs of the bundled CT sample and score them")
    demo.add_argument("-o", "--output-dir", default="medsam2_demo", help="folder for the label map, montage and report")
    _add_common(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medsam2`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command == "segment":
            return _segment(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "oneprompt":
            from medsam2.oneprompt_cli import run_oneprompt_command

            return run_oneprompt_command(args, _model_kwargs(args), _warn)
        if args.command == "models":
            from medsam2.backbones import describe_backbones

            print(describe_backbones())
            return 0
        if args.command == "demo":
            from medsam2.demo import run_demo

            return run_demo(Path(args.output_dir), device=args.device, overwrite=args.overwrite, quiet=args.quiet)
        raise UsageError(f"unknown command {args.command}")
    except MedSAM2Error as exc:
        if debug:
            raise
        print(f"medsam2: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medsam2: interrupted; no output was written", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line, not a traceback
        if debug:
            raise
        print(f"medsam2: internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return 1


def _warn(message: str) -> None:
    print(f"medsam2: warning: {message}", file=sys.stderr)


def _collect_prompts(args, volume, axis):
    """Objects from --label/--box/--point/--mask/--name (in order) and --prompts."""
    from medsam2.io.volume import read_mask
    from medsam2.prompts import ObjectPrompts, load_prompts_json, mask_prompts_from_array, parse_box, parse_point
    from medsam2.slicing import to_frames

    objects: dict[int, ObjectPrompts] = {}
    current = 1
    for kind, value in getattr(args, "prompt_items", None) or []:
        if kind == "label":
            if not 1 <= value <= 65535:
                raise PromptError(f"--label {value}: labels are integers from 1 to 65535")
            current = value
            continue
        obj = objects.setdefault(current, ObjectPrompts(label=current))
        if kind == "box":
            obj.boxes.append(parse_box(value))
        elif kind == "point":
            obj.points.append(parse_point(value))
        elif kind == "name":
            obj.name = value
        elif kind == "mask":
            mask = to_frames(read_mask(value, volume), axis)
            obj.masks.extend(mask_prompts_from_array(mask, value))
    if args.prompts:
        prompt_file = load_prompts_json(args.prompts)
        for obj in prompt_file.objects:
            if obj.label in prompt_file.mask_paths:
                path, value = prompt_file.mask_paths[obj.label]
                mask = to_frames(read_mask(path, volume), axis)
                if value is not None:
                    mask = mask == value
                obj.masks.extend(mask_prompts_from_array(mask, str(path)))
            if obj.label in objects:
                objects[obj.label].merge(obj)
            else:
                objects[obj.label] = obj
    empty = [label for label, obj in objects.items() if obj.is_empty()]
    if empty:
        raise PromptError(f"label {empty[0]} has a name but no prompt; add --box, --point or --mask after --label {empty[0]}")
    return [objects[label] for label in sorted(objects)]


def _output_path(text: str) -> Path:
    path = Path(text)
    if not path.suffix:
        path = path.with_name(path.name + ".nii.gz")
    return path


def write_json_atomic(data: dict, path: Path, overwrite: bool) -> None:
    """Write JSON through a temporary file in the target folder, then rename."""
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2)))


def _check_report_path(report: str | None, inputs: list[str], overwrite: bool) -> Path | None:
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


def _segment(args) -> int:
    from medsam2.io.volume import check_output_path, load_volume, save_mask
    from medsam2.prompts import validate_prompts
    from medsam2.segmenter import Segmenter
    from medsam2.slicing import to_frames

    output = _output_path(args.output)
    inputs = [args.input] + [v for k, v in (getattr(args, "prompt_items", None) or []) if k == "mask"]
    if args.prompts:
        inputs.append(args.prompts)
    check_output_path(output, inputs, args.overwrite)
    report_path = _check_report_path(args.report, inputs + [str(output)], args.overwrite)
    if report_path is not None and report_path.resolve() == output.resolve():
        raise OutputError("--report and --output name the same file")

    start = time.perf_counter()
    volume = load_volume(args.input, time_index=args.time_index)
    read_seconds = time.perf_counter() - start
    objects = _collect_prompts(args, volume, args.axis)
    if not objects:
        raise PromptError("no prompt given; add --box, --point, --mask or --prompts")
    frames_shape = to_frames(volume.array, args.axis).shape
    validate_prompts(objects, frames_shape[0], frames_shape[1], frames_shape[2], args.axis)  # before the model loads
    segmenter = Segmenter(backbone=args.backbone, device=args.device, memory=args.memory, **_model_kwargs(args))
    progress = not args.quiet and sys.stderr.isatty()
    result = segmenter.segment(volume, objects, axis=args.axis, window=args.window, progress=progress)
    for note in result.report.warnings:
        _warn(note)
    write_start = time.perf_counter()
    save_mask(result.labels, volume, output, overwrite=args.overwrite)
    result.report.timings.read_seconds = round(read_seconds, 3)
    result.report.timings.write_seconds = round(time.perf_counter() - write_start, 3)
    if report_path is not None:
        write_json_atomic(result.report.to_dict(), report_path, args.overwrite)
    if not args.quiet:
        for obj in result.report.objects:
            span = f"slices {obj.first_slice}-{obj.last_slice}" if obj.slices else "not found"
            name = f" ({obj.name})" if obj.name else ""
            conf = f", mean confidence {obj.mean_confidence:.2f}" if obj.mean_confidence is not None else ""
            print(f"label {obj.label}{name}: {span}, {obj.volume_ml:.1f} mL{conf}")
        timings = result.report.timings
        print(
            f"wrote {output} ({result.report.slices_encoded} of {result.report.slices_total} slices encoded, "
            f"{timings.total_seconds:.1f} s)"
        )
    return 0


def _int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise UsageError(f"{option} takes comma-separated integers, not '{text}'") from exc


def _evaluate(args) -> int:
    from medsam2.backbones import build_backbone
    from medsam2.backbones.cache import CachedBackbone
    from medsam2.datasets import discover_dataset
    from medsam2.devices import resolve_device
    from medsam2.evaluate import EvaluationConfig, check_config, run_evaluation
    from medsam2.segmenter import Segmenter

    config = EvaluationConfig(
        protocol=args.protocol,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        labels=_int_list(args.labels, "--labels"),
        cases=args.cases,
        seed=args.seed,
        jitter=args.jitter,
        nsd_tolerance_mm=args.nsd_tol,
        axis=args.axis,
        window=args.window,
        correction=args.correction,
    )
    check_config(config)
    dataset = discover_dataset(args.dataset)
    segmenters: dict[str, Segmenter] = {}
    cache: list[CachedBackbone] = []  # built with the first segmenter: no model load for a run with nothing to do

    def segmenter_for(memory: str) -> Segmenter:
        if not cache:
            cache.append(CachedBackbone(build_backbone(args.backbone, resolve_device(args.device), **_model_kwargs(args))))
        if memory not in segmenters:
            # every method of a case reads the same frames: encode them once for all methods
            segmenters[memory] = Segmenter(backbone=cache[0], memory=memory)
        return segmenters[memory]

    results = run_evaluation(
        dataset, Path(args.output_dir), config, segmenter_for, resume=args.resume, overwrite=args.overwrite,
        save_predictions=args.save_predictions, progress=not args.quiet and sys.stderr.isatty(),
        after_case=lambda: cache[0].clear() if cache else None,
    )
    for note in results["notes"]:
        _warn(note)
    if not args.quiet:
        print((Path(args.output_dir) / "summary.md").read_text(), end="")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
