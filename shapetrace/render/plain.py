"""Any rich renderable as plain text: no colours, no terminal, one fixed width."""

from __future__ import annotations

import io

from rich.console import Console, RenderableType

FILE_WIDTH = 140
"""Tables written to files and strings are not wrapped to a terminal."""


def plain_console(buffer: io.StringIO, width: int = FILE_WIDTH) -> Console:
    """A console that writes plain text into `buffer`."""
    return Console(file=buffer, width=width, color_system=None, legacy_windows=False, soft_wrap=False)


def plain_text(renderable: RenderableType, width: int = FILE_WIDTH) -> str:
    """What `renderable` prints, as plain text."""
    buffer = io.StringIO()
    plain_console(buffer, width).print(renderable)
    return buffer.getvalue()
