"""What every benchmark script prints about the machine, and where the shared data lies."""

from __future__ import annotations

import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDSAM2_SHARED_DATA", REPO.parent / "shared" / "data"))


def plain_dataset(root: Path, pairs: list[tuple[Path, Path, str]], link: bool = False) -> Path:
    """A dataset in the plain layout (images/ + labels/, one name for both) from (image, label,
    name) triples, copied or, with ``link``, symlinked."""
    import shutil

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for image, label, name in pairs:
        for source, folder in ((image, "images"), (label, "labels")):
            if link:
                os.symlink(source, root / folder / name)
            else:
                shutil.copy(source, root / folder / name)
    return root


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    """One line: core count, CPU model, torch threads, the CPU flags that matter and the precision
    that ``--precision auto`` picks here (so a table says whether it was measured in bf16)."""
    from medsam2.backbones import machine_summary

    return f"{os.cpu_count()} cores, {cpu_model()}; {machine_summary()}"
