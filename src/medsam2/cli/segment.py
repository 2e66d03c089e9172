"""``medsam2 segment``: prompts on one or a few slices -> a label map through the scan, and a report."""

from __future__ import annotations

import sys
import time

from medsam2.cli.common import (
    PromptAction,
    add_common,
    add_input_limit,
    add_model_options,
    check_report_path,
    label_value,
    model_kwargs,
    output_claim,
    output_path,
    read_limits,
    warn,
)
from medsam2.errors import OutputError, PromptError
from medsam2.io.atomic import write_json_atomic


def add_parser(commands) -> None:
    """The ``segment`` subcommand's options."""
    from medsam2.memory import MEMORY_KINDS
    from medsam2.preprocess import WINDOW_CHOICES
    from medsam2.slicing import AXES

    seg = commands.add_parser(
        "segment",
        help="segment structures through a scan from prompts on one or a few slices",
        description="Segment structures through a scan. Coordinates are 0-based voxel indices (IJK) as "
        "ITK-SNAP and 3D Slicer show them: --box 42:10,20,80,90 is slice 42, x 10..80, y 20..90.",
    )
    seg.add_argument("input", help="NIfTI, NRRD, MHA/MHD file, a DICOM series folder, or a 2D image")
    seg.add_argument("-o", "--output", required=True, help="label map to write (.nii.gz default; suffix picks the format)")
    seg.add_argument(
        "--label", type=label_value, action=PromptAction,
        help="label (1..65535) of the object that the prompts after it belong to (default 1)",
    )
    seg.add_argument("--box", action=PromptAction, help="box SLICE:x0,y0,x1,y1 (inclusive voxel indices)")
    seg.add_argument("--point", action=PromptAction, help="click SLICE:x,y[,1|0] (1 foreground, the default; 0 background)")
    seg.add_argument("--mask", action=PromptAction, help="mask file on the input's grid: every slice with foreground pins the object")
    seg.add_argument("--name", action=PromptAction, help="name of the current object (for the report)")
    seg.add_argument("--prompts", help="prompts.json with many objects (see README)")
    seg.add_argument("--axis", default="axial", choices=AXES, help="slicing direction (default axial)")
    seg.add_argument("--window", default="auto", choices=WINDOW_CHOICES, help="intensity window (default auto)")
    seg.add_argument("--memory", default="confidence", choices=MEMORY_KINDS, help="memory rule (default: confidence bank)")
    seg.set_defaults(prompt_items=[])  # PromptAction appends to it in command-line order
    add_model_options(seg)
    seg.add_argument("--time-index", type=int, help="for 4D input: which 3D volume to segment (0-based)")
    seg.add_argument("--report", help="write a JSON report here")
    add_input_limit(seg)
    add_common(seg)


def run_segment(args) -> int:
    from medsam2.io.guard import resolve_path
    from medsam2.io.volume import check_output_path

    output = output_path(args.output)
    inputs = [args.input] + [v for k, v in args.prompt_items if k == "mask"]
    if args.prompts:
        inputs.append(args.prompts)
    check_output_path(output, inputs, args.overwrite)
    report_path = check_report_path(args.report, inputs + [str(output)], args.overwrite)
    if report_path is not None and resolve_path(report_path) == resolve_path(output):
        raise OutputError("--report and --output name the same file")
    limits = read_limits(args)
    claimed = [output] + ([report_path] if report_path is not None else [])
    with output_claim(claimed):  # a second run on these outputs is refused now, not after its work
        result = _segment_and_write(args, output, inputs, report_path, limits)
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


def _segment_and_write(args, output, inputs, report_path, limits):
    """Read, check everything that can be checked before the model loads, segment, write.

    Returns:
        The :class:`~medsam2.engine.results.SegmentationResult`.
    """
    from medsam2.engine.session import many_objects_note
    from medsam2.io.volume import check_output_path, load_volume, save_mask
    from medsam2.prompts import collect_prompts, validate_prompts
    from medsam2.segmenter import Segmenter
    from medsam2.slicing import to_frames

    start = time.perf_counter()
    volume = load_volume(args.input, time_index=args.time_index, limits=limits)
    read_seconds = time.perf_counter() - start
    check_output_path(output, inputs, args.overwrite, n_slices=volume.shape[0])  # a 2D format for a 3D scan
    objects = collect_prompts(args.prompt_items, args.prompts, volume, args.axis)
    if not objects:
        raise PromptError("no prompt given; add --box, --point, --mask or --prompts")
    frames_shape = to_frames(volume.array, args.axis).shape
    validate_prompts(objects, frames_shape[0], frames_shape[1], frames_shape[2], args.axis)  # before the model loads
    many = many_objects_note(len(objects), frames_shape[0])
    if many is not None:
        warn(many)
    segmenter = Segmenter(backbone=args.backbone, device=args.device, memory=args.memory, **model_kwargs(args))
    progress = not args.quiet and sys.stderr.isatty()
    result = segmenter.segment(volume, objects, axis=args.axis, window=args.window, progress=progress)
    for note in result.report.warnings:
        if note != many:
            warn(note)
    write_start = time.perf_counter()
    save_mask(result.labels, volume, output, overwrite=args.overwrite)
    result.report.timings.read_seconds = round(read_seconds, 3)
    result.report.timings.write_seconds = round(time.perf_counter() - write_start, 3)
    if report_path is not None:
        write_json_atomic(result.report.to_dict(), report_path, args.overwrite)
    return result
