"""``medsam2 info SCAN``: size, spacing, orientation, axes, values and coordinate conventions of a scan."""

from __future__ import annotations

from medsam2.cli.common import add_input_limit, read_limits


def add_parser(commands) -> None:
    """The ``info`` subcommand's options."""
    info = commands.add_parser(
        "info",
        help="print a scan's size, spacing, orientation, which voxel axis is axial/coronal/sagittal, values, and viewer conventions",
    )
    info.add_argument("input", help="NIfTI, NRRD, MHA/MHD, GIPL, VTK file, a DICOM series folder, or a 2D image")
    info.add_argument("--time-index", type=int, help="for 4D input: which 3D volume to describe (0-based)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_input_limit(info)
    info.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def run_info(args) -> int:
    from medsam2.io.readers import load_volume
    from medsam2.io.scan_info import describe

    facts = describe(load_volume(args.input, time_index=args.time_index, limits=read_limits(args)))
    print(facts.to_json() if args.json else facts.to_text())
    return 0
