"""Pick the renderer for a format, then print the result or write it to a file."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from shapetrace.cli.files import write_text
from shapetrace.errors import UsageError
from shapetrace.records import Trace
from shapetrace.render.plain import plain_console, stream_console

TEXT_FORMATS = ("table", "tree", "json", "dot", "html")
IMAGE_FORMATS = ("svg", "png", "pdf")
FORMATS = TEXT_FORMATS + IMAGE_FORMATS
_SUFFIXES = {
    ".json": "json",
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
    ".txt": "table",
    ".html": "html",
    ".htm": "html",
}


@dataclass(frozen=True)
class Rendering:
    """How to show a trace: what the rendering options asked for, the format resolved."""

    format: str
    """One of FORMATS."""
    depth: int
    """Display depth: 1 shows the blocks the model's forward calls."""
    output: Path | None
    """The file to write, or None to print."""
    columns: tuple[str, ...] | None = None
    """The table's columns after # and layer (--columns); None for the default table."""


def choose_format(requested: str | None, path: Path | None) -> str:
    """The explicit --format, else the one -o's suffix implies, else the table.

    Raises:
        UsageError: -o has a suffix that names no format, and --format is not given.
    """
    if requested is not None:
        return requested
    if path is not None:
        implied = _SUFFIXES.get(path.suffix.lower())
        if implied is None:
            known = ", ".join(sorted(_SUFFIXES))
            raise UsageError(
                f"cannot tell the format of {str(path)!r} from its suffix: expected one of {known}, or --format"
            )
        return implied
    return "table"


def stdout_console() -> Console:
    """A console for stdout; piped output is not squeezed into a default 80 columns, not
    wrapped, and not padded with spaces."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return stream_console(sys.stdout) if piped else Console()


def sweep_format(requested: str | None, path: Path | None) -> str:
    """The sweep's --format, else "json" or "html" where -o's suffix says so, else the grid."""
    if requested is not None:
        return requested
    implied = _SUFFIXES.get(path.suffix.lower()) if path is not None else None
    return implied if implied in ("json", "html") else "table"


def render_text(
    trace: Trace, fmt: str, depth: int, console: Console, columns: Sequence[str] | None = None
) -> str | None:
    """JSON and DOT as text; table and tree printed through `console` (returns None)."""
    if fmt == "json":
        return trace.to_json()
    if fmt == "dot":
        from shapetrace.render.dot import trace_dot

        return trace_dot(trace, depth)
    if fmt == "html":
        from shapetrace.render.html import trace_html

        return trace_html(trace, depth)
    if fmt == "tree":
        from shapetrace.render.tree import tree_report

        console.print(tree_report(trace, depth))
    else:
        from shapetrace.render.table import trace_report

        console.print(trace_report(trace, depth, columns))
    return None


def emit(trace: Trace, rendering: Rendering, console: Console) -> None:
    """Print the rendered trace, or write it to the rendering's output file.

    Raises:
        UsageError: an image format without a path, a file that cannot be written, no Graphviz.
    """
    fmt, depth, path, columns = rendering.format, rendering.depth, rendering.output, rendering.columns
    if fmt in IMAGE_FORMATS:
        if path is None:
            raise UsageError(f"--format {fmt} writes an image: give -o FILE.{fmt}")
        _write_image(trace, fmt, depth, path)
        console.print(f"wrote {path}")
        return
    if path is None:
        text = render_text(trace, fmt, depth, console, columns)
        if text is not None:
            print(text)
        return
    buffer = io.StringIO()
    file_console = plain_console(buffer)
    text = render_text(trace, fmt, depth, file_console, columns)
    write_text(path, buffer.getvalue() if text is None else text + "\n")
    console.print(f"wrote {path}")


def _write_image(trace: Trace, fmt: str, depth: int, path: Path) -> None:
    from shapetrace.render.dot import trace_dot
    from shapetrace.render.images import GraphvizMissingError, render_image

    try:
        render_image(trace_dot(trace, depth), path, fmt)
    except GraphvizMissingError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
