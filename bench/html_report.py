"""B6 render, the HTML report: SD-1.5's written in < 1 s beyond its trace, and under 1 MB (issue 16)."""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from measure import compare_calls
from report import Row, seconds_row, unavailable, verdict
from scale import SD15_CONFIG

if TYPE_CHECKING:
    from shapetrace.records import Trace

HTML_LIMIT_SECONDS = 1.0
HTML_LIMIT_BYTES = 1_000_000


def html_report(rounds: int) -> list[Row]:
    """Seconds to render and write SD-1.5's report after its trace, and the file's size."""
    if importlib.util.find_spec("diffusers") is None:
        return [unavailable("B6", "HTML report of SD-1.5", "diffusers not installed", "< 1 s")]
    import workloads

    args, keywords = workloads.sd15_inputs()
    trace = workloads.shapetrace_call(workloads.sd15_model(SD15_CONFIG), args, keywords)()
    where = f"HTML report of SD-1.5 ({len(trace.layers)} calls), rendered and written after its trace"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "sd15.html"
        samples = compare_calls({"html": _write_call(trace, path)}, rounds)
        size = path.stat().st_size
    size_row = Row(
        "B6", "size of that report file", f"{size / 1e3:.0f} kB", "< 1 MB", verdict(size, HTML_LIMIT_BYTES, strict=True)
    )
    return [seconds_row("B6", where, samples["html"], "< 1 s", HTML_LIMIT_SECONDS), size_row]


def _write_call(trace: Trace, path: Path) -> Callable[[], object]:
    from shapetrace.render.html import trace_html

    return lambda: path.write_text(trace_html(trace), encoding="utf-8")
