"""``medsam2 segment``: prompts on one or a few slices -> a label map through the scan, and a report."""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from medsam2.cli.common import (
    OUTPUT_FORMATS,
    PromptAction,
    add_common,
    add_input_limit,
    add_memory_option,
    add_model_options,
    add_multiview_option,
    check_output_format,
    check_report_path,
    engine_settings,
    label_value,
    model_options,
    output_claim,
    output_path,
    output_stem,
    read_limits,
    warn,
)
from medsam2.errors import UsageError


def add_parser(commands) -> None:
    """The ``segment`` subcommand's options."""
    from medsam2.io.slicing import AXES
    from medsam2.io.windows import WINDOW_CHOICES

    seg = commands.add_parser(
        "segment",
        help="segment structures through a scan from prompts on one or a few slices",
        description="Segment structures through a scan. Coordinates are 0-based voxel indices (IJK) as "
        "ITK-SNAP and 3D Slicer show them: --box 42:10,20,80,90 is slice 42, x 10..80, y 20..90.",
    )
    seg.add_argument(
        "input",
        help="NIfTI, NRRD, MHA/MHD file, a DICOM series folder, a 2D image, or a series on a PACS: "
        "dicomweb://HOST:PORT/PATH/studies/UID/series/UID (dicomwebs:// for https)",
    )
    seg.add_argument(
        "-o", "--output", required=True,
        help="label map to write (.nii.gz default; suffix picks the format; .dcm: a DICOM SEG of a DICOM input)",
    )
    _add_prompt_options(seg)
    seg.add_argument(
        "--axis", default="axial", choices=AXES,
        help="slicing direction: axial, coronal, sagittal of the patient (from the direction cosines; default axial) "
        "or the voxel axis k, j, i",
    )
    add_multiview_option(seg)
    seg.add_argument("--window", default="auto", choices=WINDOW_CHOICES, help="intensity window (default auto)")
    add_memory_option(seg)
    seg.set_defaults(prompt_items=[])  # PromptAction appends to it in command-line order
    add_model_options(seg)
    seg.add_argument("--time-index", type=int, help="for 4D input: which 3D volume to segment (0-based)")
    _add_output_options(seg)
    add_input_limit(seg)
    add_common(seg)


def _add_prompt_options(seg) -> None:
    """The prompts: --label, --box, --point, --mask (and its segment), the millimetre ones,
    --index-base, --name and --prompts, in the order the help lists them."""
    seg.add_argument(
        "--label", type=label_value, action=PromptAction,
        help="label (1..65535) of the object that the prompts after it belong to (default 1)",
    )
    seg.add_argument("--box", action=PromptAction, help="box SLICE:x0,y0,x1,y1 (inclusive voxel indices)")
    seg.add_argument("--point", action=PromptAction, help="click SLICE:x,y[,1|0] (1 foreground, the default; 0 background)")
    seg.add_argument(
        "--mask", action=PromptAction,
        help="mask file on the input's grid (every slice with foreground pins the object), a DICOM SEG of the input series "
        "(every segment, or the one --mask-segment N picks), or SLICE:FILE for a 2D mask of one slice",
    )
    seg.add_argument(
        "--mask-segment", dest="mask_segment", type=int, action=PromptAction, metavar="N",
        help="after --mask SEG.dcm: take only segment N of the DICOM SEG",
    )
    seg.add_argument(
        "--box-mm", dest="box_mm", action=PromptAction,
        help="box as two opposite corners X0,Y0,Z0,X1,Y1,Z1 in mm (LPS as ITK reports them; RAS with --ras); "
        "the slice is the one they lie on",
    )
    seg.add_argument("--point-mm", dest="point_mm", action=PromptAction, help="click X,Y,Z[,1|0] in mm (LPS; RAS with --ras)")
    seg.add_argument("--ras", action="store_true", help="--box-mm/--point-mm are RAS millimetres, as 3D Slicer shows them")
    seg.add_argument(
        "--index-base", type=int, choices=(0, 1), default=0,
        help="base of the voxel indices in --box/--point/SLICE:: 0 (default; 3D Slicer's IJK) or 1 (ITK-SNAP's cursor position)",
    )
    seg.add_argument("--name", action=PromptAction, help="name of the current object (for the report)")
    seg.add_argument("--prompts", help="prompts.json with many objects (see README)")


def _add_output_options(seg) -> None:
    """What is written beside the label map: the report, the format, the PACS copy, the montage
    and the label description."""
    seg.add_argument("--report", help="write a JSON report here")
    seg.add_argument(
        "--format", choices=OUTPUT_FORMATS, default="auto",
        help="auto: the output's suffix picks it (.dcm: DICOM SEG); seg-nrrd: a 3D Slicer segmentation with named, coloured "
        "segments (NAME.seg.nrrd); dicom-seg: a DICOM Segmentation (NAME.dcm) referencing the input series; rtstruct: an RT "
        "Structure Set (NAME.dcm) with one ROI per object, for planning systems",
    )
    seg.add_argument(
        "--push", action="store_true",
        help="with a dicomweb:// input: also store the DICOM SEG (or RT-STRUCT) on that server (STOW-RS)",
    )
    seg.add_argument("--montage", help="also write a PNG of overlays on up to 8 of the structures' slices, to check the result")
    seg.add_argument(
        "--no-label-file", action="store_true",
        help="do not write the ITK-SNAP label description (NAME.label.txt: names and colours) beside the label map",
    )


def run_segment(args) -> int:
    from medsam2.io.dicomweb import is_dicomweb, parse_series_url
    from medsam2.io.limits import check_input_path

    if not is_dicomweb(args.input) and not Path(args.input).exists():
        check_input_path(Path(args.input))  # the one-line error, before the model's code is imported
    from medsam2.engine.jobs import SegmentJob, run_segment_job
    from medsam2.engine.segmenter import Segmenter

    settings = engine_settings(args)  # an option the backbone does not take is refused before anything is read
    output = output_path(args.output, ".dcm" if args.format in ("dicom-seg", "rtstruct") else ".nii.gz")
    dicom_kind = check_output_format(args.format, output)
    remote = parse_series_url(args.input) if is_dicomweb(args.input) else None
    if args.push and remote is None:
        raise UsageError("--push stores the result on the DICOMweb server the input came from; give a dicomweb:// input")
    if args.push and not output.name.lower().endswith(".dcm"):
        raise UsageError(f"--push stores a DICOM SEG or RT-STRUCT; name the output e.g. {output_stem(output)}.dcm")
    job = SegmentJob(
        image=Path(args.input), output=output, prompt_items=tuple(args.prompt_items),
        prompts_json=Path(args.prompts) if args.prompts else None, axis=args.axis, window=args.window,
        time_index=args.time_index, report=None, overwrite=args.overwrite, limits=read_limits(args),
        ras=args.ras, index_base=args.index_base, label_file=not args.no_label_file,
        montage=Path(args.montage) if args.montage else None, dicom_kind=dicom_kind, multiview=args.multiview,
    )
    report_path = check_report_path(args.report, [str(p) for p in job.inputs()] + [str(output)], args.overwrite)
    job = replace(job, report=report_path)
    job.check_outputs()
    claimed = job.outputs()
    built: list[Segmenter] = []  # held until the lock files are gone (see run_segment_job)

    def build() -> Segmenter:
        built.append(Segmenter.from_options(model_options(args, settings)))
        return built[-1]

    with output_claim(claimed), ExitStack() as stack:  # a second run on these outputs is refused now, not after its work
        if remote is not None:  # the series is fetched once the outputs are known to be writable
            from medsam2.io.dicomweb import fetched_series

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medsam2-dicomweb-")))
            job = replace(job, image=stack.enter_context(fetched_series(remote, folder)), source_name=str(remote))
        result = run_segment_job(
            job,
            build,
            warn=warn,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    if not args.quiet:
        for obj in result.report.objects:
            if not obj.slices:
                span = "not found"
            else:
                span = "found" if result.report.slices_total == 1 else f"slices {obj.first_slice}-{obj.last_slice}"
            name = f" ({obj.name})" if obj.name else ""
            conf = f", mean confidence {obj.mean_confidence:.2f}" if obj.mean_confidence is not None else ""
            print(f"label {obj.label}{name}: {span}, {obj.size_text()}{conf}")
        timings = result.report.timings
        others = [str(path) for path in job.outputs()[1:]]
        print(
            f"wrote {output} ({result.report.slices_encoded} of {result.report.slices_total} slices encoded, "
            f"{timings.total_seconds:.1f} s)" + (f" and {', '.join(others)}" if others else "")
        )
    if args.push:
        from medsam2.errors import InputError
        from medsam2.io.dicomweb import store

        try:
            uid = store(remote.root, output)
        except InputError as error:
            raise InputError(f"wrote {output} but stored nothing: {error}") from None
        if not args.quiet:
            print(f"stored {output} on {remote.root} (SOP Instance UID {uid})")
    return 0
