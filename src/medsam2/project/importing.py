"""Seeding a project with label maps a user already has: each label file is matched to a case by
its name (as ``evaluate`` pairs ``images/`` and ``labels/``), checked against the case's image
(the same grid, or a DICOM SEG of that series) and saved as a new version."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medsam2.errors import InputError, MedSAM2Error
from medsam2.evaluation.datasets import case_stem, images_in
from medsam2.io.volume import suffix_of
from medsam2.project.sources import content_hash
from medsam2.project.store import ProjectStore, Provenance, VersionRecord


@dataclass
class ImportSummary:
    """What an import saved, and the label files that matched no case."""

    saved: list[VersionRecord] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)


def _label_files(arguments: list[str]) -> list[Path]:
    import glob

    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if any(ch in argument for ch in "*?["):
            files.extend(sorted(Path(p) for p in glob.glob(argument) if Path(p).is_file()))
        elif path.is_dir():
            folder = path / "labelsTr" if (path / "labelsTr").is_dir() else path / "labels" if (path / "labels").is_dir() else path
            files.extend(images_in(folder))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"--labels {argument}: no such file or folder")
    if not files:
        raise InputError("--labels names no label file")
    return files


def _names_beside(files: list[Path]) -> dict[str, str]:
    """Structure names from a dataset.json next to the labels' folder (nnU-Net v2 or MSD form)."""
    for candidate in {f.parent.parent / "dataset.json" for f in files} | {f.parent / "dataset.json" for f in files}:
        if candidate.is_file():
            from medsam2.evaluation.datasets import label_names

            return {str(value): name for value, name in label_names(candidate).items()}
    return {}


def import_labels(store: ProjectStore, arguments: list[str], status: str, user: str | None = None) -> ImportSummary:
    """Save each label file as a new version of the case it names.

    Raises:
        InputError: an argument naming nothing, no label file matching any case, or a label map
            that does not fit its case's image (each names the file).
    """
    from medsam2.io.readers import load_volume, read_mask

    files = _label_files(arguments)
    cases = {c.case_id: c for c in store.cases()}
    by_case, unmatched = {}, []
    for file in files:
        name = case_stem(file)
        case_id = name if name in cases else name.removesuffix("_0000") if name.removesuffix("_0000") in cases else None
        (unmatched.append(file) if case_id is None else by_case.setdefault(case_id, file))
    if not by_case:
        raise InputError(f"no label file matches a case of the project by name (cases: {', '.join(list(cases)[:5])}, ...)")
    checked = []
    for case_id, file in by_case.items():  # every file is read and checked before anything is saved
        image = load_volume(cases[case_id].image)
        if suffix_of(file) != ".dcm":  # a DICOM SEG is placed on its series by read_mask
            grid = load_volume(file).array.shape[:3]
            if grid != image.array.shape[:3]:
                raise InputError(f"{file.name} does not fit case '{case_id}': {grid} voxels (z, y, x) against the image's "
                                 f"{image.array.shape[:3]}")
        try:
            checked.append((case_id, read_mask(file, image), image, file))
        except MedSAM2Error as exc:
            raise InputError(f"{file.name} does not fit case '{case_id}': {exc}") from exc
    summary = ImportSummary(unmatched=unmatched)
    for case_id, labels, image, file in checked:
        latest = store.latest(case_id)
        provenance = Provenance(user=user, model=f"imported:{file.name}", prompts={"sha256": content_hash(file)})
        summary.saved.append(store.save_version(case_id, labels, image, status, latest.version if latest else None, provenance))
    names = _names_beside(files)
    if names:
        store.set_meta("label_names", {**store.meta("label_names", {}), **names})
    return summary

