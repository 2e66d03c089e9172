"""The package's shape: a light front door, no import cycle, every module importable on its own."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import medsam2

HEAVY = ("torch", "SimpleITK", "monai", "openvino", "fastapi")


def _modules_after(code: str) -> list[str]:
    """The heavy libraries loaded by a fresh interpreter after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


_RUN_QUIETLY = """
import contextlib, io
from medsam2.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main({argv!r})
    except SystemExit as exit:
        code = exit.code
assert code == {expected}, code
"""


@pytest.mark.parametrize(
    "argv", [[], ["segment"], ["evaluate"], ["oneprompt"], ["batch"], ["info"], ["serve"], ["train"], ["project"], ["project", "init"]]
)
def test_help_imports_nothing_heavy(argv):
    assert _modules_after(_RUN_QUIETLY.format(argv=[*argv, "--help"], expected=0)) == []


def test_package_root_and_error_path_import_nothing_heavy(tmp_path):
    # the root exports lazily, and a missing input is refused before any model code is imported
    assert _modules_after("import medsam2; from medsam2 import Box, PromptError") == []
    argv = ["segment", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--box", "0:1,1,5,5"]
    assert "torch" not in _modules_after(_RUN_QUIETLY.format(argv=argv, expected=1))


def test_lazy_root_exports_every_public_name():
    for name in medsam2.__all__:
        assert getattr(medsam2, name) is not None
    with pytest.raises(AttributeError):
        medsam2.no_such_name  # noqa: B018


def test_every_module_imports_on_its_own():
    names = [m.name for m in pkgutil.walk_packages(medsam2.__path__, "medsam2.") if not m.name.endswith("__main__")]
    assert len(names) > 60
    for name in names:
        importlib.import_module(name)


def test_no_import_cycle():
    """No group of modules imports each other round: package ``__init__`` files count as modules,
    and imports inside functions or under ``TYPE_CHECKING`` count as arrows too."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("medsam2", exclude_type_checking_imports=False, cache_dir=None)
    # a package naming its own submodules (``from pkg import sub`` in ``pkg/__init__``) is no cycle
    arrows = {m: set(graph.find_modules_directly_imported_by(m)) - {m} for m in graph.modules}
    assert _cycles(arrows) == []


def _cycles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in arrows.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(arrows):
        if module not in index:
            visit(module)
    return groups


#: rooms of one job: a module past this many lines is split before it grows further
MAX_MODULE_LINES = 450


def test_every_module_is_a_small_room():
    root = Path(medsam2.__file__).parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    assert len(sizes) > 60
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


#: the longest a function may be, docstring included: one story a reader can hold
MAX_FUNCTION_LINES = 80


def test_every_function_reads_as_one_story():
    import ast

    root = Path(medsam2.__file__).parent
    long = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(root)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_registries_own_their_vocabularies():
    """The CLI's choices are the registries' names, so a new format or family appears everywhere."""
    from medsam2.backbones.registry import BACKBONES, FAMILIES
    from medsam2.cli.dispatch import build_parser
    from medsam2.io.formats import LABEL_FORMATS, format_names

    parser = build_parser()
    segment = next(a for a in parser._subparsers._group_actions[0].choices["segment"]._actions if a.dest == "backbone")
    assert tuple(segment.choices) == tuple(BACKBONES) == tuple(FAMILIES)
    batch = parser._subparsers._group_actions[0].choices["batch"]
    formats = next(a for a in batch._actions if a.dest == "format")
    assert set(formats.choices) == set(format_names(3))
    assert set(LABEL_FORMATS) | {alias for f in LABEL_FORMATS.values() for alias in f.aliases} >= set(format_names(3))
