"""The layers of DESIGN.md: imports point one way, and the torch-free ones run without torch.

Read from the sources (every import, at module level, in a function or under TYPE_CHECKING),
then proven by running the torch-free layers and commands with torch blocked.
"""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import shapetrace
from tests.conftest import trace_unet

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "shapetrace"

FOUNDATION = {
    "shapetrace.records",
    "shapetrace.jsonio",
    "shapetrace.jsoncost",
    "shapetrace.errors",
    "shapetrace.formatting",
    "shapetrace.extents",
    "shapetrace.sizes",
}
# With shapetrace.models: the library, tracing then analysis (the size search and fix verification too).
LIBRARY = {
    "shapetrace.api",
    "shapetrace.size_search",
    "shapetrace.minimum",
    "shapetrace.sweep",
    "shapetrace.verify",
    "shapetrace.padding",
}
# Helpers for a project's own tests: the library's traces, and the diff table a failed snapshot shows.
HELPERS = {"shapetrace.testing", "shapetrace.pytest_plugin"}
ENTRY = {"shapetrace", "shapetrace.__main__"}  # the root resolves its exports lazily, and wires Trace's views

# What each layer may import; "torch" stands for torch and every library built on it.
ALLOWED = {
    "foundation": {"foundation"},
    "tracing": {"foundation", "tracing", "torch"},
    "analysis": {"foundation", "analysis"},
    "render": {"foundation", "analysis", "render"},
    "library": {"foundation", "tracing", "analysis", "library", "torch"},
    "helpers": {"foundation", "tracing", "analysis", "render", "library", "helpers", "torch"},
    "cli": {"foundation", "tracing", "analysis", "render", "library", "cli", "entry", "torch"},
    "entry": {"foundation", "tracing", "analysis", "render", "library", "helpers", "cli", "entry", "torch"},
}
TORCH_LIBRARIES = {"torch", "torchinfo", "torchvision", "diffusers", "numpy", "sympy"}


def layer_of(module: str) -> str | None:
    """The layer a shapetrace module belongs to ("torch" for torch's world, None for the rest)."""
    top = module.split(".", maxsplit=1)[0]
    if top in TORCH_LIBRARIES:
        return "torch"
    if top != "shapetrace":
        return None  # the standard library, rich, click, graphviz: any layer may use them
    if module.startswith("shapetrace.models"):
        return "library"
    placed = {"entry": ENTRY, "foundation": FOUNDATION, "library": LIBRARY, "helpers": HELPERS}
    for layer, modules in placed.items():
        if module in modules:
            return layer
    sub_package = module.split(".")[1]
    return sub_package if sub_package in ("tracing", "analysis", "render", "cli") else "unplaced"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every import in `source`, relative ones resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from shapetrace import records` imports a module; `from shapetrace import trace`, an attribute
                found.append((node.lineno, submodule if _is_module(submodule) else base))
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, node.module] if node.module else package)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Each import of `module` that points against the layers, as 'module:line imports target (layer)'."""
    layer = layer_of(module)
    if layer == "unplaced" or layer is None:
        return [f"{module} belongs to no layer: place it in ALLOWED's map (tests/test_layers.py)"]
    found = []
    for line, target in imported_modules(source, module, is_package):
        target_layer = layer_of(target)
        if target_layer is not None and target_layer not in ALLOWED[layer]:
            found.append(f"{module}:{line} ({layer}) imports {target} ({target_layer})")
    return found


def test_imports_point_one_way() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        found += violations(source, module_name(path), path.name == "__init__.py")
    assert not found, "imports against the layers:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("shapetrace.records", "from shapetrace.render.table import trace_report", "render"),
        ("shapetrace.records", "def view():\n    import shapetrace.render.table", "render"),
        ("shapetrace.records", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch", "torch"),
        ("shapetrace.records", "from shapetrace import trace", "entry"),
        ("shapetrace.tracing.freeze", "from shapetrace.analysis.diagnosis import explain", "analysis"),
        ("shapetrace.tracing.freeze", "from ..analysis import diagnosis", "analysis"),
        ("shapetrace.analysis.diff", "from shapetrace.tracing import tracer", "tracing"),
        ("shapetrace.render.sweep_grid", "from shapetrace.models.reference import sweep_reference", "library"),
        ("shapetrace.render.images", "def f():\n    import numpy", "torch"),
        ("shapetrace.api", "from shapetrace.render import table", "render"),
        ("shapetrace.models.reference", "from shapetrace.cli import main", "cli"),
    ],
)
def test_the_check_finds_each_kind_of_backward_import(module: str, source: str, expected: str) -> None:
    (found,) = violations(source, module)
    assert found.startswith(f"{module}:") and found.endswith(f"({expected})"), found


def test_the_check_allows_the_direction_of_the_layers() -> None:
    assert not violations("from shapetrace.records import Trace\nimport rich", "shapetrace.analysis.diff")
    assert not violations("from . import placement\nimport torch", "shapetrace.cli.trace_target")
    assert violations("", "shapetrace.helpers") == [
        "shapetrace.helpers belongs to no layer: place it in ALLOWED's map (tests/test_layers.py)"
    ]


# --- with torch blocked ---------------------------------------------------------------------

BLOCK_TORCH = "import sys\nsys.modules['torch'] = None  # any `import torch` now raises ImportError\n"

IMPORT_TORCH_FREE = """
import importlib, json, pkgutil
import shapetrace, shapetrace.records, shapetrace.jsonio, shapetrace.errors, shapetrace.formatting
import shapetrace.analysis, shapetrace.render
for package in (shapetrace.analysis, shapetrace.render):
    for found in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(found.name)
assert issubclass(shapetrace.ShapetraceError, Exception)
print(json.dumps(sorted(name for name in sys.modules if name.startswith("shapetrace."))))
"""

RUN_CLI = "from shapetrace.cli import main\nmain(sys.argv[1:], prog_name='shapetrace')\n"


def _without_torch(code: str, *arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code, *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_the_torch_free_layers_import_without_torch() -> None:
    completed = _without_torch(IMPORT_TORCH_FREE)
    assert completed.returncode == 0, completed.stderr
    imported = set(json.loads(completed.stdout))
    every_render_module = {f"shapetrace.render.{path.stem}" for path in (PACKAGE / "render").glob("[!_]*.py")}
    assert every_render_module <= imported


@pytest.fixture(scope="module")
def saved_traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved")
    (folder / "a.json").write_text(trace_unet(32, (1, 2), 16).to_json(), encoding="utf-8")
    (folder / "b.json").write_text(trace_unet(32, (1, 2), 8).to_json(), encoding="utf-8")
    (folder / "broken.json").write_text(trace_unet(33, (1, 2), 8).to_json(), encoding="utf-8")
    return folder


def test_show_renders_a_saved_trace_without_torch(saved_traces: Path) -> None:
    table = _without_torch(RUN_CLI, "show", "a.json", cwd=saved_traces)
    assert (table.returncode, table.stderr) == (0, "")
    assert table.stdout.startswith("UNet · input [2, 3, 32, 32] [2]")
    assert "✓ aligned: 4 skips pair down and up" in table.stdout
    as_json = _without_torch(RUN_CLI, "show", "a.json", "--format", "json", cwd=saved_traces)
    assert (as_json.returncode, as_json.stderr) == (0, "")
    assert as_json.stdout == (saved_traces / "a.json").read_text(encoding="utf-8") + "\n"
    broken = _without_torch(RUN_CLI, "show", "broken.json", "--depth", "2", cwd=saved_traces)
    assert broken.returncode == 1 and "✗ 2 breaks (size)" in broken.stdout, broken.stderr
    for fmt in ("tree", "dot"):
        shown = _without_torch(RUN_CLI, "show", "a.json", "--format", fmt, cwd=saved_traces)
        assert (shown.returncode, shown.stderr) == (0, ""), fmt
    drawn = _without_torch(RUN_CLI, "show", "a.json", "-o", "a.svg", cwd=saved_traces)
    assert (drawn.returncode, drawn.stderr) == (0, "")
    assert "<svg" in (saved_traces / "a.svg").read_text(encoding="utf-8")


def test_help_and_diff_run_without_torch(saved_traces: Path) -> None:
    helped = _without_torch(RUN_CLI, "--help")
    assert (helped.returncode, helped.stderr) == (0, "")
    assert all(command in helped.stdout for command in ("show", "diff", "trace", "unet", "sweep"))
    differed = _without_torch(RUN_CLI, "diff", "a.json", "b.json", cwd=saved_traces)
    assert (differed.returncode, differed.stderr) == (1, "")  # 1: the shapes differ
    assert "conv_in" in differed.stdout


def test_a_command_that_traces_says_so_when_torch_is_missing(saved_traces: Path) -> None:
    # The check above must be able to fail: a command that needs torch does fail with it blocked.
    completed = _without_torch(RUN_CLI, "unet", "--size", "16", cwd=saved_traces)
    assert completed.returncode != 0
    assert "torch" in completed.stderr


# --- the package root -----------------------------------------------------------------------


def test_print_trace_shows_the_table() -> None:
    trace = trace_unet(32, (1, 2), 16)
    printed = io.StringIO()
    with redirect_stdout(printed):
        print(trace)
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("UNet · input [2, 3, 32, 32] [2]")
    assert any(line.split()[:2] == ["┃", "#"] for line in lines)  # the table's header
    assert sum(bool(re.match(r"│ +\d+ │ ups\.\d+ ", line)) for line in lines) == 6  # a row per up block, ups.0 to ups.5
    assert "✓ aligned: 4 skips pair down and up" in printed.getvalue()
    assert "LayerRecord(" not in printed.getvalue()  # not the dataclasses' repr


def test_shapetrace_error_is_exported() -> None:
    from shapetrace import ShapetraceError
    from shapetrace.errors import InternalError, TargetError, TraceFileError, UsageError

    assert "ShapetraceError" in shapetrace.__all__
    assert all(issubclass(error, ShapetraceError) for error in (UsageError, TraceFileError, TargetError, InternalError))
