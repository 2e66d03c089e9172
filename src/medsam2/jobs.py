"""One scan segmented from a file to a file: what ``medsam2 segment`` does, and what each row of
``medsam2 batch`` does, in one place so that the two give the same masks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medsam2.engine.results import SegmentationResult
from medsam2.engine.session import many_objects_note
from medsam2.errors import OutputError, PromptError
from medsam2.io.atomic import write_json_atomic
from medsam2.io.guard import ReadLimits, resolve_path
from medsam2.io.volume import check_output_path, load_volume, save_mask
from medsam2.prompts import collect_prompts, validate_prompts
from medsam2.segmenter import Segmenter
from medsam2.slicing import to_frames


@dataclass(frozen=True)
class ModelOptions:
    """The model every worker builds (the options of ``segment``)."""

    backbone: str = "litemedsam"
    device: str = "auto"
    memory: str = "confidence"
    checkpoint: str | None = None
    runtime: str = "auto"
    precision: str = "auto"
    model_config: str | None = None
    offload: bool = False

    def build_backbone(self):
        """The backbone alone (what evaluate's method segmenters share)."""
        from medsam2.backbones import build_backbone
        from medsam2.devices import resolve_device

        return build_backbone(
            self.backbone, resolve_device(self.device), checkpoint=self.checkpoint, runtime=self.runtime,
            precision=self.precision, model_config=self.model_config, offload=self.offload,
        )

    def segmenter(self) -> Segmenter:
        return Segmenter(
            backbone=self.backbone, device=self.device, memory=self.memory, checkpoint=self.checkpoint, runtime=self.runtime,
            precision=self.precision, model_config=self.model_config, offload=self.offload,
        )


@dataclass(frozen=True)
class SegmentJob:
    """A scan, its prompts and where the label map goes.

    Attributes:
        image: the scan (any input :func:`medsam2.load_volume` reads).
        output: the label map to write (its suffix picks the format).
        prompt_items: ("label", int) | ("box", "Z:x0,y0,x1,y1") | ("point", "Z:x,y[,1|0]") |
            ("mask", path) | ("name", text), in order, as on the command line.
        prompts_json: a prompts.json, or None.
        axis, window, time_index: as ``medsam2 segment`` takes them.
        report: a JSON report to write, or None.
        overwrite: replace existing outputs.
        limits: the cap on the input's decoded size.
    """

    image: Path
    output: Path
    prompt_items: tuple[tuple[str, object], ...] = ()
    prompts_json: Path | None = None
    axis: str = "axial"
    window: str = "auto"
    time_index: int | None = None
    report: Path | None = None
    overwrite: bool = False
    limits: ReadLimits = field(default_factory=ReadLimits)

    def inputs(self) -> list[Path]:
        """Every file the job reads (none of them may be an output)."""
        masks = [Path(str(value)) for kind, value in self.prompt_items if kind == "mask"]
        return [self.image, *masks, *([self.prompts_json] if self.prompts_json else [])]

    def check_outputs(self) -> None:
        """Check before any work that the outputs can be written (see :func:`check_output_path`).

        Raises:
            OutputError, UsageError: as :func:`check_output_path`; the report and the label map
                are one file.
        """
        check_output_path(self.output, self.inputs(), self.overwrite)
        if self.report is not None and resolve_path(self.report) == resolve_path(self.output):
            raise OutputError("--report and --output name the same file")


def run_segment_job(
    job: SegmentJob,
    segmenter: Callable[[], Segmenter],
    warn: Callable[[str], None] | None = None,
    progress: bool = False,
) -> SegmentationResult:
    """Read, check everything that can be checked before the model is needed, segment, write.

    Arguments:
        job: what to segment and where to write it.
        segmenter: gives the :class:`Segmenter` (called only once the input and prompts are good).
        warn: called with each warning as soon as it is known.
        progress: show a progress bar.

    Returns:
        The result, whose report carries read and write times.

    Raises:
        MedSAM2Error: any bad input, prompt or output, before the model is built where it can be.
    """
    say = warn or (lambda message: None)
    started = time.perf_counter()
    volume = load_volume(job.image, time_index=job.time_index, limits=job.limits)
    read_seconds = time.perf_counter() - started
    check_output_path(job.output, job.inputs(), job.overwrite, n_slices=volume.shape[0])  # a 2D format for a 3D scan
    objects = collect_prompts(list(job.prompt_items), job.prompts_json, volume, job.axis)
    if not objects:
        raise PromptError("no prompt given; add --box, --point, --mask or --prompts")
    frames_shape = to_frames(volume.array, job.axis).shape
    validate_prompts(objects, frames_shape[0], frames_shape[1], frames_shape[2], job.axis)
    many = many_objects_note(len(objects), frames_shape[0])
    if many is not None:
        say(many)
    # kept until the outputs are written: OpenVINO's CPU plugin leaves the main thread's alternate
    # signal stack pointing at freed memory once its compiled models are released, and a SIGTERM
    # (or Ctrl-C) then crashes instead of unwinding and removing the temporaries (DESIGN.md)
    model = segmenter()
    result = model.segment(volume, objects, axis=job.axis, window=job.window, progress=progress)
    for note in result.report.warnings:
        if note != many:
            say(note)
    write_started = time.perf_counter()
    save_mask(result.labels, volume, job.output, overwrite=job.overwrite)
    result.report.timings.read_seconds = round(read_seconds, 3)
    result.report.timings.write_seconds = round(time.perf_counter() - write_started, 3)
    if job.report is not None:
        write_json_atomic(result.report.to_dict(), job.report, job.overwrite)
    return result
