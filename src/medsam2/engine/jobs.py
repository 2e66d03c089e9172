"""One scan segmented from a file to a file: what ``medsam2 segment`` does, and what each row of
``medsam2 batch`` does, in one place so that the two give the same masks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medsam2.engine.results import SegmentationResult
from medsam2.engine.segmenter import Segmenter
from medsam2.engine.session_state import many_objects_note
from medsam2.errors import OutputError, PromptError, UsageError
from medsam2.io.atomic import write_json_atomic
from medsam2.io.limits import ReadLimits, resolve_path
from medsam2.io.readers import load_volume
from medsam2.io.slicing import to_frames, voxel_axis
from medsam2.io.volume import data_files_note, suffix_of
from medsam2.io.writers import check_output_path, save_mask
from medsam2.prompts.parse import collect_prompts, mask_file, validate_prompts


@dataclass(frozen=True)
class SegmentJob:
    """A scan, its prompts and where the label map goes.

    Attributes:
        image: the scan (any input :func:`medsam2.load_volume` reads).
        output: the label map to write (its suffix picks the format).
        prompt_items: ("label", int) | ("box", "Z:x0,y0,x1,y1") | ("point", "Z:x,y[,1|0]") |
            ("mask", path) | ("box_mm", ...) | ("point_mm", ...) | ("name", text), in order, as on
            the command line (see :func:`medsam2.prompts.parse.collect_prompts`).
        prompts_json: a prompts.json, or None.
        axis, window, time_index: as ``medsam2 segment`` takes them.
        report: a JSON report to write, or None.
        overwrite: replace existing outputs.
        limits: the cap on the input's decoded size.
        ras: millimetre prompts are RAS (3D Slicer), not LPS.
        index_base: 0 or 1, the base of the voxel indices in boxes and points (1: ITK-SNAP).
        label_file: write an ITK-SNAP label description (``NAME.label.txt``) beside the label map.
        montage: a PNG of overlays on the structures' slices to write, or None.
        dicom_kind: what a ``.dcm`` output is: "dicom-seg" or "rtstruct" (the input must be DICOM).
        source_name: what the report names as the input where ``image`` is a copy (a series
            fetched from a PACS), or None for ``image`` itself.
        multiview: fuse the result with passes along the two other axes boxed on it
            (:func:`medsam2.engine.multiview.fuse_views`); a 3D scan only.
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
    ras: bool = False
    index_base: int = 0
    label_file: bool = True
    montage: Path | None = None
    dicom_kind: str = "dicom-seg"
    source_name: str | None = None
    multiview: bool = False

    @property
    def writes_dicom(self) -> bool:
        """The output is a DICOM SEG or RT-STRUCT (it names its structures itself: no label description beside it)."""
        return suffix_of(self.output) == ".dcm"

    def outputs(self) -> list[Path]:
        """Every file the job writes: the label map, its label description, the report, the montage."""
        from medsam2.io.label_files import label_file_path

        extra = [label_file_path(self.output)] if self.label_file and not self.writes_dicom else []
        return [self.output, *extra, *([self.report] if self.report else []), *([self.montage] if self.montage else [])]

    def inputs(self) -> list[Path]:
        """Every file the job reads (none of them may be an output)."""
        masks = [mask_file(str(value)) for kind, value in self.prompt_items if kind == "mask"]
        return [self.image, *masks, *([self.prompts_json] if self.prompts_json else [])]

    def check_outputs(self) -> None:
        """Check before any work that the outputs can be written (see :func:`check_output_path`).

        Raises:
            OutputError, UsageError: as :func:`check_output_path`; the report and the label map
                are one file.
        """
        from medsam2.io.label_files import check_output_path_text

        check_output_path(self.output, self.inputs(), self.overwrite)
        outputs = self.outputs()
        resolved = [resolve_path(p) for p in outputs]
        if len(set(resolved)) != len(resolved):
            raise OutputError(f"two outputs are one file: {', '.join(str(p) for p in outputs)}")
        inputs = {resolve_path(p) for p in self.inputs()}
        for path in outputs[1:]:
            if resolve_path(path) in inputs:
                raise OutputError(f"the output {path} is an input; choose another output path")
            check_output_path_text(path, self.overwrite)
        if self.montage is not None and suffix_of(self.montage) != ".png":
            raise UsageError(f"--montage writes a PNG; name it {self.montage.with_suffix('.png').name}")


def provenance_of(result: SegmentationResult):
    """What a DICOM output says made it: medsam2's version, the backbone and checkpoint, the memory rule, axis,
    window and (litemedsam) the intensity stop rule's threshold."""
    from medsam2.io.dicom_seg import Provenance

    report = result.report
    parameters = {"memory": report.memory, "axis": report.axis, "window": report.window}
    if "stop_intensity_overlap" in report.settings:  # the litemedsam engine's stop rule, which moves the masks
        parameters["stop_intensity_overlap"] = f"{report.settings['stop_intensity_overlap']:g}"
    return Provenance(
        version=report.medsam2_version, backbone=report.backbone, checkpoint=report.checkpoint, parameters=parameters,
    )


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
    elsewhere = data_files_note(volume)  # a header's data files away from it: said in the report
    if elsewhere is not None:
        volume.warnings.append(elsewhere)
    if job.source_name:
        volume.source = job.source_name
    read_seconds = time.perf_counter() - started
    check_output_path(job.output, job.inputs(), job.overwrite, n_slices=volume.shape[0])  # a 2D format for a 3D scan
    if job.multiview and min(volume.array.shape[:3]) < 2:
        raise UsageError(f"--multiview needs a 3D scan; {job.image.name} is {volume.array.shape[:3]} voxels (z, y, x)")
    source = None
    if job.writes_dicom:  # a NIfTI input has no instances to reference: refused before the model runs
        from medsam2.io.dicom_source import source_series

        source = source_series(volume, "an RT-STRUCT" if job.dicom_kind == "rtstruct" else "a DICOM SEG")
    objects = collect_prompts(list(job.prompt_items), job.prompts_json, volume, job.axis, ras=job.ras, index_base=job.index_base)
    if not objects:
        raise PromptError("no prompt given; add --box, --point, --mask or --prompts")
    frames_shape = to_frames(volume.array, voxel_axis(job.axis, volume.direction)).shape
    validate_prompts(objects, frames_shape[0], frames_shape[1], frames_shape[2], job.axis)
    many = many_objects_note(len(objects), frames_shape[0])
    if many is not None:
        say(many)
    # kept until the outputs are written: OpenVINO's CPU plugin leaves the main thread's alternate
    # signal stack pointing at freed memory once its compiled models are released, and a SIGTERM
    # (or Ctrl-C) then crashes instead of unwinding and removing the temporaries (DESIGN.md)
    model = segmenter()
    result = model.segment(volume, objects, axis=job.axis, window=job.window, progress=progress)
    if job.multiview:
        from medsam2.engine.multiview import fuse_views

        result = fuse_views(model, volume, result, objects, job.axis, job.window)
    for note in result.report.warnings:
        if note != many:
            say(note)
    write_started = time.perf_counter()
    names = {obj.label: obj.name for obj in result.report.objects}
    save_mask(
        result.labels, volume, job.output, overwrite=job.overwrite, names=names, dicom_kind=job.dicom_kind,
        provenance=provenance_of(result) if job.writes_dicom else None, source=source,
    )
    if job.label_file and not job.writes_dicom:
        from medsam2.io.label_files import label_entries, label_file_path, stored_entries, write_label_file

        entries = stored_entries(label_entries(names), job.output)
        write_label_file(label_file_path(job.output), entries, overwrite=job.overwrite)
    if job.montage is not None:
        from medsam2.reporting.montage import write_segmentation_montage

        write_segmentation_montage(job.montage, volume, result, names, overwrite=job.overwrite)
    result.report.timings.read_seconds = round(read_seconds, 3)
    result.report.timings.write_seconds = round(time.perf_counter() - write_started, 3)
    if job.report is not None:
        write_json_atomic(result.report.to_dict(), job.report, job.overwrite)
    return result
