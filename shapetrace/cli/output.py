"""Pick the renderer for a format, then print the result or write it to a file."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from shapetrace.errors import UsageError
from shapetrace.records import Trace
from shapetrace.render.plain import plain_console

TEXT_FORMATS = ("table", "tree", "json", "dot")
IMAGE_FORMATS = ("svg", "png", "pdf")
FORMATS = TEXT_FORMATS + IMAGE_FORMATS
_SUFFIXES = {".json": "json", ".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".pdf": "pdf", ".txt": "table"}


def choose_format(requested: str | None, path: Path | None) -> str:
    """The explicit --format, else the one -o's suffix implies, else the table."""
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


def check_destination(path: Path | None) -> None:
    """Fail before tracing when the output file cannot be written."""
    if path is None:
        return
    if not path.parent.exists():
        raise UsageError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: it is a directory, expected a file path")


def render_text(
    trace: Trace, fmt: str, depth: int, console: Console, columns: Sequence[str] | None = None
) -> str | None:
    """JSON and DOT as text; table and tree printed through `console` (returns None)."""
    if fmt == "json":
        return trace.to_json()
    if fmt == "dot":
        from shapetrace.render.dot import trace_dot

        return trace_dot(trace, depth)
    if fmt == "tree":
        from shapetrace.render.tree import trace_tree

        console.print(trace_tree(trace, depth))
    else:
        from shapetrace.render.table import trace_report

        console.print(trace_report(trace, depth, columns))
    return None


def emit(
    trace: Trace, fmt: str, depth: int, path: Path | None, console: Console, columns: Sequence[str] | None = None
) -> None:
    """Print the rendered trace, or write it to `path`; `columns` chooses the table's."""
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
    _write(path, buffer.getvalue() if text is None else text + "\n")
    console.print(f"wrote {path}")


def _write_image(trace: Trace, fmt: str, depth: int, path: Path) -> None:
    from shapetrace.render.dot import trace_dot
    from shapetrace.render.images import GraphvizMissingError, render_image

    try:
        render_image(trace_dot(trace, depth), path, fmt)
    except GraphvizMissingError as error:
        raise UsageError(str(error)) from None


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {str(path)!r}: {error.strerror}") from None
