"""The user guide builds, and the README and DESIGN stay short and free of issue numbers."""

import re
import subprocess
import sys
from pathlib import Path

# a user doc names no issue: "issue 20", "issues 3", "#34"
ISSUE_NUMBER = re.compile(r"\bissues? \d+|#\d{2}\b")


def _repo_root() -> Path:
    """The first folder above this file that holds mkdocs.yml (the test may move into tests/docs/)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "mkdocs.yml").is_file():
            return parent
    raise FileNotFoundError(f"no mkdocs.yml in any folder above {here}")


ROOT = _repo_root()


def _user_docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_mkdocs_build_strict(tmp_path):
    """Every page in the nav builds, with every link between pages and every anchor valid."""
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_and_design_are_short_and_name_no_issue():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    design = (ROOT / "DESIGN.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 300, "README.md is the short user guide: details go to docs/"
    assert len(design.splitlines()) < 250, "DESIGN.md is the architecture today: history goes to CHANGELOG.md"

    # the two commands that work on a fresh machine come first
    first_block = re.search(r"```[^\n]*\n(.*?)```", readme, re.S)
    assert first_block is not None, "README.md has no code block"
    assert "make demo" in first_block.group(1) and "make test" in first_block.group(1)

    found = []
    for path in _user_docs():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ISSUE_NUMBER.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "user docs name issue numbers (history goes to CHANGELOG.md):\n" + "\n".join(found)
