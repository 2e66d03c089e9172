"""The label-map formats medsam2 writes, by name: one entry owns each format's name, suffix, the
dimensions it holds and whether it needs a DICOM input. The command line's choices (``segment``,
``evaluate``, ``batch``), the server's ``?format=`` and the docs all read this table. Light: no
SimpleITK, no torch.

:func:`medsam2.io.writers.save_mask` writes each of them, picked by the output's suffix (and, for
``.dcm``, by :attr:`LabelFormat.dicom_kind`).
"""

from __future__ import annotations

from dataclasses import dataclass

from medsam2.errors import UsageError


@dataclass(frozen=True)
class LabelFormat:
    """One label-map format.

    Attributes:
        name: what ``--format`` and ``?format=`` take.
        suffix: the file name's ending (lower case, ``.nii.gz`` and ``.seg.nrrd`` whole).
        dims: the dimensions it holds (2, 3 or both).
        dicom_kind: "dicom-seg" or "rtstruct" for the DICOM formats (the input must be a DICOM
            series: the output references it), else None.
        help: what a user gets, for ``--help`` and the docs.
        aliases: other names accepted for it (older spellings).
    """

    name: str
    suffix: str
    dims: tuple[int, ...]
    dicom_kind: str | None
    help: str
    aliases: tuple[str, ...] = ()

    @property
    def needs_dicom_input(self) -> bool:
        return self.dicom_kind is not None


LABEL_FORMATS: dict[str, LabelFormat] = {
    f.name: f
    for f in (
        LabelFormat("nii.gz", ".nii.gz", (2, 3), None, "compressed NIfTI label map"),
        LabelFormat("nii", ".nii", (2, 3), None, "NIfTI label map"),
        LabelFormat("nrrd", ".nrrd", (2, 3), None, "NRRD label map"),
        LabelFormat("mha", ".mha", (2, 3), None, "MetaImage label map"),
        LabelFormat("png", ".png", (2,), None, "8- or 16-bit PNG label map (2D inputs)"),
        LabelFormat(
            "seg-nrrd", ".seg.nrrd", (3,), None, "a 3D Slicer segmentation with named, coloured segments (NAME.seg.nrrd)",
            aliases=("seg.nrrd",),
        ),
        LabelFormat("dicom-seg", ".dcm", (3,), "dicom-seg", "a DICOM Segmentation (NAME.dcm) referencing the input series"),
        LabelFormat("rtstruct", ".dcm", (3,), "rtstruct", "an RT Structure Set (NAME.dcm): one ROI per object, closed contours per slice"),
    )
}

#: the DICOM kinds a ``.dcm`` output can be
DICOM_KINDS: tuple[str, ...] = tuple(f.dicom_kind for f in LABEL_FORMATS.values() if f.dicom_kind)

#: ``segment``/``evaluate --format``: auto (the output's suffix picks it), or the formats a suffix alone does not say
EXPLICIT_FORMATS: tuple[str, ...] = ("auto", *(f.name for f in LABEL_FORMATS.values() if f.aliases or f.dicom_kind))


def label_format(name: str) -> LabelFormat:
    """The format called ``name`` (or one of its aliases); a one-line UsageError naming the others."""
    for candidate in LABEL_FORMATS.values():
        if name == candidate.name or name in candidate.aliases:
            return candidate
    raise UsageError(f"unknown format '{name}'; choose one of {', '.join(LABEL_FORMATS)}")


def format_names(dims: int | None = None, *, aliases: bool = True) -> tuple[str, ...]:
    """The names (and, with ``aliases``, the older spellings) of the formats holding ``dims``
    dimensions (any when None), in the table's order."""
    names: list[str] = []
    for f in LABEL_FORMATS.values():
        if dims is None or dims in f.dims:
            names.append(f.name)
            if aliases:
                names.extend(f.aliases)
    return tuple(names)
