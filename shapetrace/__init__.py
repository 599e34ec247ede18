"""shapetrace: the tensor shapes inside a diffusion UNet, and where its down and up paths break.

Exports resolve lazily: `import shapetrace`, `shapetrace --help`, `diff` and `show` never
import torch; `shapetrace.trace` imports it on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shapetrace import records as _records

if TYPE_CHECKING:
    from shapetrace.api import run_trace, size_rule, trace, trace_sizes
    from shapetrace.errors import ShapetraceError
    from shapetrace.models.unet import UNet
    from shapetrace.padding import pad_to_valid, wrap
    from shapetrace.records import (
        Break,
        BreakSide,
        CostMode,
        CostOptions,
        LayerRecord,
        Optimizer,
        ShapeWarning,
        SizeRule,
        SkipPair,
        Trace,
    )

__version__ = "0.1.0"

_EXPORTS = {
    "trace": "shapetrace.api",
    "run_trace": "shapetrace.api",
    "trace_sizes": "shapetrace.api",
    "size_rule": "shapetrace.api",
    "UNet": "shapetrace.models.unet",
    "pad_to_valid": "shapetrace.padding",
    "wrap": "shapetrace.padding",
    "ShapetraceError": "shapetrace.errors",
    "Break": "shapetrace.records",
    "BreakSide": "shapetrace.records",
    "LayerRecord": "shapetrace.records",
    "ShapeWarning": "shapetrace.records",
    "SizeRule": "shapetrace.records",
    "SkipPair": "shapetrace.records",
    "Trace": "shapetrace.records",
    "CostMode": "shapetrace.records",
    "CostOptions": "shapetrace.records",
    "Optimizer": "shapetrace.records",
}
__all__ = [
    "Break",
    "BreakSide",
    "CostMode",
    "CostOptions",
    "LayerRecord",
    "Optimizer",
    "ShapeWarning",
    "ShapetraceError",
    "SizeRule",
    "SkipPair",
    "Trace",
    "UNet",
    "__version__",
    "pad_to_valid",
    "run_trace",
    "size_rule",
    "trace",
    "trace_sizes",
    "wrap",
]


_SUBMODULES = {"testing"}
"""Submodules reachable as attributes (`shapetrace.testing`) without importing them first."""


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"shapetrace.{name}")  # the import binds it as an attribute
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shapetrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


# How a Trace shows itself. The records sit below the renderers and import none of them;
# this root, always imported before them, wires each view to its renderer, imported on use.
def _text_view(trace: _records.Trace) -> str:
    from shapetrace.render.plain import plain_text
    from shapetrace.render.table import trace_report

    return plain_text(trace_report(trace))


def _rich_view(trace: _records.Trace) -> object:
    from shapetrace.render.table import trace_report

    return trace_report(trace)


def _svg_view(trace: _records.Trace) -> str | None:
    from shapetrace.render.dot import trace_dot
    from shapetrace.render.images import GraphvizMissingError, render_svg

    try:
        return render_svg(trace_dot(trace))
    except GraphvizMissingError:
        return None


def _html_view(trace: _records.Trace) -> str:
    from shapetrace.render.html import notebook_html

    return notebook_html(trace)


def _json_view(trace: _records.Trace, *, indent: int | None = 2) -> str:
    from shapetrace import jsonio

    return jsonio.dumps(trace, indent=indent)


def _json_reader(text: str) -> _records.Trace:
    from shapetrace import jsonio

    return jsonio.loads(text)


for _name, _view in (
    ("text", _text_view),
    ("rich", _rich_view),
    ("svg", _svg_view),
    ("html", _html_view),
    ("json", _json_view),
    ("from_json", _json_reader),
):
    _records.register_view(_name, _view)
