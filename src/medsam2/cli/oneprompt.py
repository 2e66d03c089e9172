"""``medsam2 oneprompt``: supports and queries from the command line, masks and a report out."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from medsam2.cli.common import (
    SupportPromptAction,
    add_common,
    add_input_limit,
    add_model_options,
    engine_settings,
    model_options,
    read_limits,
)
from medsam2.errors import InputError, OutputError, PromptError, UsageError

if TYPE_CHECKING:
    import numpy as np

    from medsam2.io.volume import Volume
    from medsam2.prompts.types import ObjectPrompts


def add_parser(commands) -> None:
    """The ``oneprompt`` subcommand's options."""
    from medsam2.io.windows import WINDOW_CHOICES

    one = commands.add_parser(
        "oneprompt",
        help="segment the structure of annotated support example(s) in other images or scans, with no prompt on them",
        description="Each --support takes the next --support-mask, --support-box or --support-point (in order). "
        "Boxes and points on 2D images may omit the slice (x0,y0,x1,y1 / x,y); on volumes write SLICE:x0,y0,x1,y1.",
    )
    one.add_argument("queries", nargs="+", help="query images or volumes, or folders of them")
    one.add_argument("--support", action="append", required=True, help="an annotated example image or volume (repeatable)")
    one.add_argument("--support-mask", action=SupportPromptAction, help="mask of the structure on the support (one slice is enough)")
    one.add_argument("--support-box", action=SupportPromptAction, help="box on the support instead of a mask")
    one.add_argument("--support-point", action=SupportPromptAction, help="click on the support instead of a mask")
    one.add_argument("-o", "--output-dir", required=True, help="folder for one mask per query, report.json and overview.png")
    one.add_argument("--window", default="auto", choices=WINDOW_CHOICES, help="intensity window (default auto)")
    add_model_options(one)
    add_input_limit(one)
    add_common(one)


def expand_queries(items: list[str]) -> list[Path]:
    """Files as given; folders become their readable image/volume files (sorted); a DICOM
    folder (one holding .dcm files) stays one query."""
    from medsam2.io.volume import SUPPORTED_SUFFIXES, suffix_of

    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir() and not any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
            found = sorted(p for p in path.iterdir() if p.is_file() and suffix_of(p) in SUPPORTED_SUFFIXES)
            if not found:
                raise InputError(f"query folder {path} holds no image or volume files")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def output_name(query: Path, volume: Volume | None) -> str:
    """<stem>.png for 2D queries, <stem>.nii.gz for volumes (stem without .nii.gz)."""
    from medsam2.io.volume import suffix_of

    suffix = suffix_of(query)
    stem = query.name[: -len(suffix)] if suffix and query.name.lower().endswith(suffix) else query.name
    return f"{stem}.png" if volume is not None and volume.is_2d else f"{stem}.nii.gz"


def _with_slice(text: str, volume: Volume) -> str:
    return text if ":" in text or not volume.is_2d else f"0:{text}"


def support_prompts(kind: str, value: str, volume: Volume, name: str) -> ObjectPrompts:
    """The prompt of one support from --support-mask/--support-box/--support-point."""
    from medsam2.io.readers import read_mask
    from medsam2.prompts.parse import mask_prompts_from_array, parse_box, parse_point
    from medsam2.prompts.types import ObjectPrompts

    if kind == "mask":
        mask = read_mask(value, volume)
        return ObjectPrompts(1, name, masks=mask_prompts_from_array(mask > 0, value))
    if kind == "box":
        return ObjectPrompts(1, name, boxes=[parse_box(_with_slice(value, volume))])
    return ObjectPrompts(1, name, points=[parse_point(_with_slice(value, volume))])


def _thumbnail(image: np.ndarray, side: int = 160) -> np.ndarray:
    """Every k-th pixel so that the longest side is at most about ``side`` (the contact sheet's tile)."""

    step = max(1, max(image.shape[:2]) // side)
    return image[::step, ::step]


def _check_output_dir(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} exists and is not a folder")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise OutputError(f"output folder {folder} exists and is not empty; pass --overwrite or choose another folder")


def run_oneprompt_command(args, warn: Callable[[str], None]) -> int:
    """Run ``medsam2 oneprompt``; returns the exit code (1 when some query could not be read)."""
    import numpy as np

    from medsam2.engine.oneprompt.run import run_one_prompt
    from medsam2.engine.segmenter import Segmenter
    from medsam2.io.atomic import write_json_atomic
    from medsam2.io.readers import load_volume
    from medsam2.io.windows import choose_window
    from medsam2.io.writers import save_mask
    from medsam2.reporting.montage import write_contact_sheet

    settings = engine_settings(args)
    prompts = list(getattr(args, "support_prompts", None) or [])
    if len(prompts) != len(args.support):
        raise PromptError(
            f"{len(args.support)} --support but {len(prompts)} support prompts: give each --support one "
            "--support-mask, --support-box or --support-point"
        )
    output_dir = Path(args.output_dir)
    _check_output_dir(output_dir, args.overwrite)
    queries = expand_queries(args.queries)
    supports = []
    limits = read_limits(args)
    for path, (kind, value) in zip(args.support, prompts):
        volume = load_volume(path, limits=limits)
        supports.append((volume, support_prompts(kind, value, volume, Path(path).name)))
    names = [Path(p).name for p in args.support]
    outputs = [output_name(q, None) for q in queries]
    if len(set(outputs)) != len(outputs):
        raise UsageError("two queries have the same file name; their masks would overwrite each other")
    segmenter = Segmenter.from_options(model_options(args, settings))
    output_dir.mkdir(parents=True, exist_ok=True)
    tiles: dict[int, tuple] = {}
    written: list[str] = []

    def on_outcome(position: int, outcome) -> None:
        if outcome.error is not None:
            warn(f"query {outcome.name}: {outcome.error}")
            return
        volume = outcome.volume
        target = output_dir / output_name(queries[position], volume)
        labels = outcome.labels * 255 if volume.is_2d else outcome.labels
        save_mask(labels.astype(np.uint8), volume, target, overwrite=args.overwrite)
        written.append(target.name)
        z = outcome.located_slice if outcome.located_slice is not None else 0
        raw = volume.array[z]
        gray = choose_window(raw[None], args.window, volume.modality).apply(raw)
        if gray.ndim == 3:
            gray = gray.mean(axis=2)
        caption = f"{outcome.name} {outcome.confidence:.2f}"
        tiles[position] = (caption, _thumbnail(gray), _thumbnail(outcome.labels[z]), outcome.flagged)
        outcome.labels, outcome.volume = None, None  # written: keep memory flat over many queries
        if not args.quiet:
            print(f"{outcome.name}: confidence {outcome.confidence:.2f}{' (review)' if outcome.flagged else ''} -> {target.name}")

    result = run_one_prompt(
        segmenter.engine, supports, queries, window=args.window, support_names=names, on_outcome=on_outcome, limits=limits
    )
    report = result.to_dict()
    for row, query in zip(report["queries"], queries):
        row["file"] = str(query)
    write_json_atomic(report, output_dir / "report.json", overwrite=True)
    write_contact_sheet(output_dir / "overview.png", [tiles[i] for i in sorted(tiles)])
    failed = [q for q in result.queries if q.error is not None]
    if not args.quiet:
        flagged = report["flagged_for_review"]
        print(f"wrote {len(written)} masks, report.json and overview.png to {output_dir}; "
              f"{len(flagged)} flagged for review; {result.seconds:.1f} s")
    if failed:
        print(f"medsam2: error: {len(failed)} of {len(queries)} queries could not be segmented: "
              f"{', '.join(q.name for q in failed)} (see report.json)", file=sys.stderr)
        return 1
    return 0
