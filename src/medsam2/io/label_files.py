"""Label maps that viewers open with their structures' names and colours.

* ITK-SNAP reads a label description file (``Segmentation > Import Label Descriptions``): one line
  per label with its colour, opacity, visibility and name. medsam2 writes ``NAME.label.txt`` beside
  every label map it writes.
* 3D Slicer opens a ``.seg.nrrd`` as a segmentation with named, coloured segments: a NRRD label map
  whose header holds ``SegmentN_Name``, ``SegmentN_Color``, ``SegmentN_LabelValue``, ... fields
  (Slicer's segmentation storage format, one layer).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsam2.errors import UsageError
from medsam2.io.atomic import atomic_write
from medsam2.io.guard import itk_messages
from medsam2.io.volume import IMAGE_SUFFIXES, Volume, check_labels, check_output_path, suffix_of, two_d_values

SEG_NRRD_SUFFIX = ".seg.nrrd"
LABEL_FILE_SUFFIX = ".label.txt"


@dataclass(frozen=True)
class LabelEntry:
    """One structure of a label map: the value stored in the file, its name and colour (0..255 RGB)."""

    value: int
    name: str
    colour: tuple[int, int, int]


def label_entries(labels: dict[int, str | None]) -> list[LabelEntry]:
    """Entries for {label: name or None}, coloured as medsam2's montages colour them."""
    from medsam2.montage import label_colour

    return [LabelEntry(int(value), name or f"label {value}", label_colour(int(value))) for value, name in sorted(labels.items())]


def stored_entries(entries: list[LabelEntry], labels: np.ndarray, output: Path) -> list[LabelEntry]:
    """The entries as the file at ``output`` stores them: a one-object 2D image holds 0/255."""
    if suffix_of(output) in IMAGE_SUFFIXES and len(entries) == 1:
        stored = np.unique(two_d_values(check_labels(labels)))
        value = int(stored[stored > 0][0]) if (stored > 0).any() else entries[0].value
        return [LabelEntry(value, entries[0].name, entries[0].colour)]
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


def save_seg_nrrd(
    labels: np.ndarray, reference: Volume, path: str | os.PathLike, entries: list[LabelEntry], overwrite: bool = False
) -> Path:
    """Write a 3D Slicer segmentation (``.seg.nrrd``): the label map in the reference's geometry
    with one named, coloured segment per entry (one layer; ``SegmentN_LabelValue`` is the label).

    Raises:
        UsageError: the name does not end with ``.seg.nrrd``, or labels out of 0..65535.
        OutputError: the output exists (without ``overwrite``), is an input or cannot be written.
    """
    out = Path(path)
    if not out.name.lower().endswith(SEG_NRRD_SUFFIX):
        raise UsageError(f"a 3D Slicer segmentation is named NAME{SEG_NRRD_SUFFIX}; got {out.name}")
    array = check_labels(labels, reference.shape)
    check_output_path(out, [reference.source] if reference.source else [], overwrite)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(reference.spacing)
    image.SetOrigin(reference.origin)
    image.SetDirection(reference.direction)
    image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    image.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for index, entry in enumerate(entries):
        present = np.argwhere(array == entry.value)
        if present.size:
            (k0, j0, i0), (k1, j1, i1) = present.min(axis=0), present.max(axis=0)
            extent = f"{i0} {i1} {j0} {j1} {k0} {k1}"
        else:
            extent = "0 -1 0 -1 0 -1"
        r, g, b = (c / 255.0 for c in entry.colour)
        fields = {
            "ID": f"Segment_{entry.value}",
            "Name": entry.name,
            "NameAutoGenerated": "0",
            "Color": f"{r:.6f} {g:.6f} {b:.6f}",
            "ColorAutoGenerated": "0",
            "LabelValue": str(entry.value),
            "Layer": "0",
            "Extent": extent,
            "Tags": "Segmentation.Status:completed|",
        }
        for key, value in fields.items():
            image.SetMetaData(f"Segment{index}_{key}", value)

    def write(tmp: Path) -> None:
        with itk_messages():
            sitk.WriteImage(image, str(tmp), useCompression=True)

    return atomic_write(out, write, ".nrrd", overwrite=overwrite)
