"""Any rich renderable as plain text for files and pipes: no colours, no wrapping, no padding."""

from __future__ import annotations

import io
import re
from typing import IO, TextIO, cast

from rich.console import Console, RenderableType

FILE_WIDTH = 140
"""The width tables are laid out in when no terminal sets one (their columns need a width)."""

_SPACES_BEFORE_NEWLINE = re.compile(r" +((?:\x1b\[[0-9;]*m)*)\n")
"""Spaces at the end of a line, and any colour codes between them and the newline."""


class TrimmedLines:
    """A text stream that passes text on to `stream` without the spaces that end its lines.

    rich pads a table's title and caption to the table's width and a tree's lines to the
    console's: invisible on a terminal, noise in a file, a diff or a pipe. It asks its file
    for no more than this class offers: write, flush, isatty and the encoding.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._spaces = ""  # the spaces that end what came so far: they end a line if a newline follows
        self.encoding: str = getattr(stream, "encoding", None) or "utf-8"  # rich picks its box characters by it

    def write(self, text: str) -> int:
        trimmed = _SPACES_BEFORE_NEWLINE.sub(r"\1\n", self._spaces + text)
        kept = trimmed.rstrip(" ")
        self._spaces = trimmed[len(kept) :]
        self._stream.write(kept)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def as_file(self) -> IO[str]:
        """This stream, typed as the file rich's Console takes (it uses only what is above)."""
        return cast("IO[str]", self)


def stream_console(stream: TextIO, width: int = FILE_WIDTH) -> Console:
    """A console for a file or a pipe: tables laid out in `width` columns, text never wrapped,
    no line ending in spaces. Colour only as rich decides for a stream that is no terminal."""
    return Console(file=TrimmedLines(stream).as_file(), width=width, soft_wrap=True, legacy_windows=False)


def plain_console(buffer: io.StringIO, width: int = FILE_WIDTH) -> Console:
    """A console that writes plain text into `buffer`, unwrapped and unpadded."""
    return Console(
        file=TrimmedLines(buffer).as_file(), width=width, color_system=None, legacy_windows=False, soft_wrap=True
    )


def plain_text(renderable: RenderableType, width: int = FILE_WIDTH) -> str:
    """What `renderable` prints, as plain text."""
    buffer = io.StringIO()
    plain_console(buffer, width).print(renderable)
    return buffer.getvalue()
