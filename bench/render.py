"""B6 render: the table, the DOT text and the SVG of a trace of about 500 calls; SD-1.5's HTML report."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from html_report import html_report
from measure import compare_calls
from report import Row, seconds_row, unavailable

if TYPE_CHECKING:
    from shapetrace.records import Trace

TEXT_LIMIT_SECONDS = 0.3
SVG_LIMIT_SECONDS = 2.0
LEVELS = 12
"""The reference UNet with 12 levels of multiplier 1 makes 505 calls; its input must be a multiple of 2**11."""
TABLE_WIDTH = 120


def render(rounds: int) -> list[Row]:
    trace = _large_trace()
    every_call = max(layer.depth for layer in trace.layers) + 1
    from shapetrace.analysis.placement import BLOCK_DEPTH

    with tempfile.TemporaryDirectory() as directory:
        contenders = {
            "table": _table_call(trace, every_call),
            "dot": _dot_call(trace, every_call),
            "svg": _svg_call(trace, every_call, Path(directory)),
            "table default": _table_call(trace, BLOCK_DEPTH),
            "svg default": _svg_call(trace, BLOCK_DEPTH, Path(directory)),
        }
        if shutil.which("dot") is None:
            contenders = {name: call for name, call in contenders.items() if not name.startswith("svg")}
        samples = compare_calls(contenders, rounds)
    where = f"{len(trace.layers)} calls"
    rows = [
        seconds_row("B6", f"table, every call a row ({where})", samples["table"], "< 0.3 s", TEXT_LIMIT_SECONDS),
        seconds_row("B6", f"DOT, every call a node ({where})", samples["dot"], "< 0.3 s", TEXT_LIMIT_SECONDS),
    ]
    if "svg" not in samples:
        return [
            *rows,
            unavailable("B6", "SVG through dot", "graphviz dot not installed", "< 2 s"),
            *html_report(rounds),
        ]
    return [
        *rows,
        seconds_row("B6", f"SVG through dot, every call a node ({where})", samples["svg"], "< 2 s", SVG_LIMIT_SECONDS),
        seconds_row("B6", f"table at the default depth {BLOCK_DEPTH} ({where})", samples["table default"]),
        seconds_row("B6", f"SVG at the default depth {BLOCK_DEPTH} ({where})", samples["svg default"]),
        *html_report(rounds),
    ]


def _large_trace() -> Trace:
    import workloads

    from shapetrace.models.unet import UNet

    model = workloads.reference_model(UNet, "meta", chs=(1,) * LEVELS)
    return workloads.shapetrace_call(model, workloads.reference_inputs(2 ** (LEVELS - 1), 1, "meta"))()


def _table_call(trace: Trace, depth: int) -> Callable[[], object]:
    from rich.console import Console

    from shapetrace.render.table import trace_report

    def table() -> object:
        # Rendered to text, as the CLI does: building the Table object alone defers the work.
        buffer = io.StringIO()
        console = Console(file=buffer, width=TABLE_WIDTH, color_system=None, legacy_windows=False)
        console.print(trace_report(trace, depth))
        return buffer.getvalue()

    return table


def _dot_call(trace: Trace, depth: int) -> Callable[[], object]:
    from shapetrace.render.dot import trace_dot

    return lambda: trace_dot(trace, depth)


def _svg_call(trace: Trace, depth: int, directory: Path) -> Callable[[], object]:
    from shapetrace.render.dot import trace_dot
    from shapetrace.render.images import render_image

    source = trace_dot(trace, depth)
    return lambda: render_image(source, directory / f"trace_{depth}.svg", "svg")
