"""The batch manifest: one study per row, in CSV or JSONL, checked whole before anything runs.

Columns (CSV header) or keys (JSONL objects):

- ``image`` (required): a scan file or a DICOM folder;
- ``case``: the study's name, a file name (no ``/``, ``\\``, ``..`` or NUL; default: the image's name without
  its suffix, and where rows share that name, the row's ``output`` name without its suffix, or else the image's
  parent folders, as few as tell those rows apart, joined with ``_``: ``P001/flair.nii.gz`` -> ``P001_flair``);
- ``output``: the label map (default ``OUTDIR/<case>.nii.gz``, or the ``--format`` suffix; a
  ``.dcm`` output is a DICOM SEG, or an RT-STRUCT with ``--format rtstruct``, of a DICOM image);
- ``prompts``: a prompts.json as ``segment --prompts`` takes it; and/or
- ``box``, ``point`` (in the CLI's syntax; several separated by ``;`` in CSV, or a JSON list),
  ``mask`` (a mask file on the image's grid), ``label`` (1..65535, default 1), ``name``.

Relative paths are relative to the manifest's folder. Errors name the row (the first study is row 1).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from medsam2.engine.jobs import SegmentJob
from medsam2.errors import UsageError
from medsam2.io.formats import DICOM_KINDS, format_names, label_format
from medsam2.io.limits import check_input_path, resolve_path
from medsam2.io.volume import WRITABLE_SUFFIXES, suffix_of
from medsam2.prompts.parse import object_label, parse_box, parse_point

MANIFEST_KEYS = ("case", "image", "output", "prompts", "box", "point", "mask", "label", "name", "box_mm", "point_mm", "ras", "multiview")
#: what ``--format`` names, and the suffix a default output gets
#: the formats of default outputs (``batch --format``): the 3D label-map formats and their older spellings
OUTPUT_FORMATS = format_names(3)


class ManifestError(UsageError):
    """The manifest cannot be run as it is (exit code 2): nothing has run."""


@dataclass(frozen=True)
class BatchCase:
    """One study of a batch.

    Attributes:
        case: its name (unique in the batch).
        row: its row in the manifest (1 = the first study).
        job: what to segment and where (axis, window and limits as the batch options set them).
    """

    case: str
    row: int
    job: SegmentJob


def _rows(path: Path) -> list[dict[str, object]]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path.name} row {len(rows) + 1} (line {number}): not valid JSON ({exc.msg})") from None
            if not isinstance(item, dict):
                raise ManifestError(f"{path.name} row {len(rows) + 1}: each line is a JSON object")
            rows.append(item)
        return rows
    if path.suffix.lower() != ".csv":
        raise ManifestError(f"a manifest is a .csv or .jsonl file, not {path.name}")
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None:
        raise ManifestError(f"{path.name} is empty: the first line names the columns (image, box, ...)")
    header = [name.strip() for name in reader.fieldnames]
    unknown = [name for name in header if name not in MANIFEST_KEYS]
    if unknown:
        raise ManifestError(f"{path.name} header: unknown column '{unknown[0]}'; columns are {', '.join(MANIFEST_KEYS)}")
    if "image" not in header:
        raise ManifestError(f"{path.name} has no 'image' column (columns: {', '.join(header)})")
    rows = []
    for row in reader:
        if None in row:
            raise ManifestError(f"{path.name} row {len(rows) + 1}: more cells than columns (quote cells that hold commas)")
        rows.append({k.strip(): v.strip() for k, v in row.items() if v is not None and v.strip() != ""})
    return rows


def _values(value: object, where: str, key: str) -> list[str]:
    """A box/point cell: one string, ``;``-separated strings, or a JSON list of strings."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(";") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ManifestError(f"{where}: '{key}' is a string like the CLI's --{key}, or a list of them")


def _case_name(value: object, where: str, hint: str = "") -> str:
    """A study's name: a file name (OUTDIR/<case>.nii.gz), never a path that leads out of OUTDIR."""
    case = str(value)
    if not case.strip() or case == ".." or any(c in case for c in ("/", "\\", "\0")):
        raise ManifestError(f"{where}: case {case!r} is not a file name (no '/', '\\', '..' or NUL){hint}")
    return case


def _stem(path: Path, whole_if_folder: bool = False) -> str:
    """A file's name without its suffix (``.nii.gz`` whole); with ``whole_if_folder``, a folder's (a DICOM series) whole."""
    suffix = "" if whole_if_folder and not path.is_file() else suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _given(row: dict[str, object], key: str) -> bool:
    return row.get(key) not in (None, "")  # (JSON null or an empty CSV cell: not given)


def _default_names(rows: list[dict[str, object]], base: Path) -> dict[int, tuple[str, str]]:
    """The name of each row (by index) that gives no ``case``, and what it was made of (for errors).

    The image's name without its suffix where no other such row has it (the names of explicit cases
    are not looked at: a clash with one is refused). Rows that share it are named by their
    ``output`` without its suffix where they name one, else by the image's name after its parent
    folders, as few as tell those rows apart, joined with ``_`` (``P001/flair.nii.gz`` -> ``P001_flair``).
    Rows whose image is not a path are left out: their own check refuses them.
    """
    images = {
        index: Path(row["image"]) if Path(row["image"]).is_absolute() else base / row["image"]
        for index, row in enumerate(rows)
        if not _given(row, "case") and isinstance(row.get("image"), str)
    }
    names = {index: (_stem(image, whole_if_folder=True), "it is the image's name") for index, image in images.items()}
    groups: dict[str, list[int]] = {}
    for index, (name, _) in names.items():
        groups.setdefault(name, []).append(index)
    for name, group in groups.items():
        if len(group) < 2:
            continue
        by_image = []
        for index in group:
            output = rows[index].get("output")
            if isinstance(output, str) and output:
                names[index] = (_stem(Path(output)), "it is the output's name")
            else:
                by_image.append(index)
        folders = {index: Path(os.path.abspath(images[index])).parent.parts[1:] for index in by_image}
        for depth in range(1, max((len(f) for f in folders.values()), default=0) + 1):
            derived = {index: "_".join([*parts[-depth:], name]) for index, parts in folders.items()}
            if len(set(derived.values())) == len(derived):
                names.update({index: (text, "it is the image's name and folders") for index, text in derived.items()})
                break
    return names


def _existing(value: object, base: Path, where: str, key: str) -> Path:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: '{key}' is a path")
    path = Path(value) if Path(value).is_absolute() else base / value
    if not path.exists() and not path.is_symlink():
        raise ManifestError(f"{where}: no such file or folder for '{key}': {path}")
    check_input_path(path)
    return path


def _mm_box(text: str) -> None:
    """Check a ``box_mm`` cell: 6 numbers (4 for a 2D image)."""
    from medsam2.prompts.coordinates import parse_numbers

    parse_numbers(text, (4, 6), "box_mm", "X0,Y0,Z0,X1,Y1,Z1 (two opposite corners in mm)")


def _mm_point(text: str) -> None:
    """Check a ``point_mm`` cell: X,Y,Z[,1|0] (X,Y[,1|0] for a 2D image)."""
    from medsam2.prompts.coordinates import parse_numbers

    parse_numbers(text, (2, 3, 4), "point_mm", "X,Y,Z or X,Y,Z,1 or X,Y,Z,0 (mm)")


def read_manifest(path: str | Path, outdir: Path, output_format: str = "nii.gz", axis: str = "axial", window: str = "auto",
                  limits=None, overwrite: bool = False, multiview: bool = False) -> list[BatchCase]:
    """Every study of a manifest, checked before anything runs (``multiview``: every study's
    default; a row's ``multiview`` true or false overrides it).

    Raises:
        ManifestError: an unreadable manifest, a missing ``image``, an unknown key, a missing file,
            a ``case`` that is not a file name (empty, '..', or holding '/', '\\' or NUL), a study
            without a prompt, a malformed box, point or label, two studies with one name or one
            output path; each names its row.
    """
    from medsam2.io.limits import ReadLimits

    manifest = Path(path)
    if not manifest.is_file():
        raise ManifestError(f"no such manifest: {manifest}")
    if output_format not in OUTPUT_FORMATS:
        raise ManifestError(f"unknown --format '{output_format}'; choose one of {', '.join(OUTPUT_FORMATS)}")
    chosen = label_format(output_format)
    base = manifest.parent
    cases: list[BatchCase] = []
    outputs: dict[Path, int] = {}
    names: dict[str, int] = {}
    rows = _rows(manifest)
    if not rows:
        raise ManifestError(f"{manifest.name} holds no study")
    defaults = _default_names(rows, base)
    for number, row in enumerate(rows, start=1):
        where = f"{manifest.name} row {number}"
        unknown = [key for key in row if key not in MANIFEST_KEYS]
        if unknown:
            raise ManifestError(f"{where}: unknown key '{unknown[0]}'; keys are {', '.join(MANIFEST_KEYS)}")
        if "image" not in row:
            raise ManifestError(f"{where}: no 'image'")
        image = _existing(row["image"], base, where, "image")
        if _given(row, "case"):
            case = _case_name(row["case"], where)
        else:  # a file name too, but for a folder named '..', a file named only a suffix, a folder named with '\\'
            derived, origin = defaults[number - 1]
            case = _case_name(derived, where, f"; {origin}: give the row a 'case'")
        if case in names:
            raise ManifestError(f"{where}: case '{case}' is also row {names[case]}; give each study its own 'case'")
        names[case] = number
        items, prompts, ras = _row_prompts(row, base, where)
        output = _row_output(row, base, where, outdir / f"{case}{chosen.suffix}", image)
        key = resolve_path(output)
        if key in outputs:
            raise ManifestError(f"{where}: writes the same output as row {outputs[key]} ({output})")
        outputs[key] = number
        job = SegmentJob(
            image=image, output=output, prompt_items=tuple(items), prompts_json=prompts, axis=axis, window=window,
            overwrite=overwrite, limits=limits or ReadLimits(), ras=ras, multiview=_row_flag(row, "multiview", where, multiview),
            dicom_kind=chosen.dicom_kind or DICOM_KINDS[0],
        )
        cases.append(BatchCase(case=case, row=number, job=job))
    return cases


def _row_prompts(row: dict, base: Path, where: str) -> tuple[list[tuple[str, object]], Path | None, bool]:
    """A row's prompts as (kind, value) items in the command line's terms, its prompts JSON file
    and whether its millimetres are RAS, each checked.

    Raises:
        ManifestError: a malformed label, box, point or ``ras``, a missing file, or no prompt.
    """
    items: list[tuple[str, object]] = []
    if "label" in row:
        try:
            items.append(("label", object_label(int(str(row["label"])))))
        except (ValueError, UsageError):
            raise ManifestError(f"{where}: 'label' is an integer from 1 to 65535, not {row['label']!r}") from None
    if "name" in row:
        items.append(("name", str(row["name"])))
    for key, parse in (("box", parse_box), ("point", parse_point), ("box_mm", _mm_box), ("point_mm", _mm_point)):
        for text in _values(row.get(key, []), where, key):
            try:
                if ":" in text or key.endswith("_mm"):  # a 2D image's box may leave out its slice: checked with the image
                    parse(text)
            except UsageError as exc:
                raise ManifestError(f"{where}: {exc}") from None
            items.append((key, text))
    ras = _row_flag(row, "ras", where, False)
    if "mask" in row:
        items.append(("mask", str(_existing(row["mask"], base, where, "mask"))))
    prompts = _existing(row["prompts"], base, where, "prompts") if "prompts" in row else None
    if prompts is None and all(kind in ("label", "name") for kind, _ in items):
        raise ManifestError(f"{where}: no prompt; give 'prompts' or 'box' / 'point' / 'mask'")
    return items, prompts, ras


def _row_flag(row: dict, key: str, where: str, default: bool) -> bool:
    """A row's true/false column (``default`` where it is absent or empty).

    Raises:
        ManifestError: a value that is not true/false, yes/no or 1/0.
    """
    text = str(row.get(key, "")).strip().lower()
    if text == "":
        return default
    if text not in ("0", "1", "false", "true", "no", "yes"):
        meaning = {"ras": " (millimetres as 3D Slicer shows them)", "multiview": " (fuse three axes)"}.get(key, "")
        raise ManifestError(f"{where}: '{key}' is true or false{meaning}, not {row[key]!r}")
    return text in ("1", "true", "yes")


def _row_output(row: dict, base: Path, where: str, default: Path, image: Path) -> Path:
    """A row's output path (``default`` where it names none), checked to be writable in its format.

    Raises:
        ManifestError: an output that is not a path, has no label-map suffix, or is DICOM for an
            image that is not.
    """
    if "output" in row:
        if not isinstance(row["output"], str):
            raise ManifestError(f"{where}: 'output' is a path")
        output = Path(row["output"]) if Path(row["output"]).is_absolute() else base / row["output"]
    else:
        output = default
    if suffix_of(output) not in WRITABLE_SUFFIXES:
        raise ManifestError(f"{where}: cannot write '{output.name}'; name outputs with one of {', '.join(WRITABLE_SUFFIXES)}")
    if suffix_of(output) == ".dcm" and not (image.is_dir() or suffix_of(image) == ".dcm"):
        raise ManifestError(f"{where}: a DICOM output ({output.name}) references the image's DICOM series, and {image.name} is not DICOM")
    return output
