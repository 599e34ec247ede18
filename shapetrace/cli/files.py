"""Saved traces in, rendered files out: every failure is one UsageError naming the file."""

from __future__ import annotations

from pathlib import Path

from shapetrace.errors import TraceFileError, UsageError
from shapetrace.records import Trace


def load_trace(path: Path) -> Trace:
    """The Trace in a JSON file written by `--format json`.

    Raises:
        TraceFileError: the file cannot be read, or it is not a trace this version reads.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceFileError(f"cannot read trace {str(path)!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TraceFileError(f"cannot read trace {str(path)!r}: {error}") from None
    try:
        return Trace.from_json(text)
    except TraceFileError as error:
        if str(path) in str(error):
            raise
        raise TraceFileError(f"{path}: {error}") from None


def check_destination(path: Path | None) -> None:
    """Fail before any work when the output file cannot be written.

    Raises:
        UsageError: the directory is missing (or a file), or the path is a directory.
    """
    if path is None:
        return
    if not path.parent.exists():
        raise UsageError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: {str(path.parent)!r} is a file, expected a directory")
    if path.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: it is a directory, expected a file path")


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` as UTF-8.

    Raises:
        UsageError: the file cannot be written.
    """
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {str(path)!r}: {error.strerror}") from None
