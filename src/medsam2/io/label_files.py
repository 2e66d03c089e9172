"""Label maps that viewers open with their structures' names and colours.

* ITK-SNAP reads a label description file (``Segmentation > Import Label Descriptions``): one line
  per label with its colour, opacity, visibility and name. medsam2 writes ``NAME.label.txt`` beside
  every label map it writes.
* 3D Slicer opens a ``.seg.nrrd`` as a segmentation with named, coloured segments
  (:mod:`medsam2.io.seg_nrrd`; ``save_mask`` writes it for that suffix).
"""

from __future__ import annotations

import os
from pathlib import Path

from medsam2.io.atomic import atomic_write
from medsam2.io.seg_nrrd import LabelEntry, label_entries
from medsam2.io.volume import IMAGE_SUFFIXES, suffix_of
from medsam2.io.writers import ONE_OBJECT_2D_VALUE

__all__ = [
    "LabelEntry", "check_output_path_text", "label_entries", "label_file_path", "read_itksnap_labels", "stored_entries",
    "write_label_file",
]

LABEL_FILE_SUFFIX = ".label.txt"


def stored_entries(entries: list[LabelEntry], output: Path) -> list[LabelEntry]:
    """The entries as the file at ``output`` stores them: a 2D image holds one object as 255
    (:func:`medsam2.io.writers.two_d_values`)."""
    if suffix_of(output) in IMAGE_SUFFIXES and len(entries) == 1 and entries[0].value <= 255:
        return [LabelEntry(ONE_OBJECT_2D_VALUE, entries[0].name, entries[0].colour)]
    return entries


def label_file_path(label_map: Path) -> Path:
    """``liver.nii.gz`` -> ``liver.label.txt`` (beside it)."""
    name = label_map.name
    suffix = suffix_of(label_map)
    stem = name[: len(name) - len(suffix)] if suffix and name.lower().endswith(suffix) else Path(name).stem
    return label_map.with_name(stem + LABEL_FILE_SUFFIX)


def _quoted(name: str) -> str:
    return name.replace('"', "'").replace("\n", " ")


def itksnap_label_text(entries: list[LabelEntry]) -> str:
    """ITK-SNAP's label description format: IDX R G B A VIS MSH "LABEL", background first."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File (written by medsam2)",
        "# Fields: IDX -R- -G- -B- -A-- VIS MSH LABEL",
        "#    IDX: label value; R, G, B: colour 0..255; A: opacity 0..1",
        "#    VIS: visible (0 or 1); MSH: shown in the 3D mesh (0 or 1); LABEL: name",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    for entry in entries:
        r, g, b = entry.colour
        lines.append(f'{entry.value:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{_quoted(entry.name)}"')
    return "\n".join(lines) + "\n"


def write_label_file(path: str | os.PathLike, entries: list[LabelEntry], overwrite: bool = False) -> Path:
    """Write an ITK-SNAP label description file atomically.

    Raises:
        OutputError: the file exists without ``overwrite`` or cannot be written.
    """
    out = Path(path)
    check_output_path_text(out, overwrite)
    text = itksnap_label_text(entries)
    return atomic_write(out, lambda tmp: tmp.write_text(text), ".txt", overwrite=overwrite)


def check_output_path_text(path: Path, overwrite: bool) -> None:
    """The checks of :func:`check_output_path` for a text file beside a label map."""
    from medsam2.errors import OutputError

    if path.is_dir():
        raise OutputError(f"{path} is a folder; it cannot hold the label description")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")


def read_itksnap_labels(path: str | os.PathLike) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """{value: (name, colour)} from an ITK-SNAP label description file (background included)."""
    import shlex

    found: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = shlex.split(line)
        found[int(fields[0])] = (fields[7], (int(fields[1]), int(fields[2]), int(fields[3])))
    return found
