"""Options shared by several commands, each declared once.

A command takes a group of options through one decorator, which hands it one value
(`rendering`, `tracing`): adding an option to a group is one line here and one field there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from shapetrace.cli.files import check_destination
from shapetrace.cli.output import FORMATS, Rendering, choose_format

F = TypeVar("F", bound=Callable[..., Any])

DEBUG_KEY = "shapetrace.debug"
"""Where --debug is kept in click's context meta, which a group shares with its commands."""


def _remember_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[DEBUG_KEY] = True


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    callback=_remember_debug,
    help="Show the traceback of an error.",
)
"""`--debug`, accepted by the group and by every command: `shapetrace --debug unet` = `shapetrace unet --debug`."""


def debug_requested(ctx: click.Context) -> bool:
    """True when --debug was given anywhere on the command line."""
    return bool(ctx.meta.get(DEBUG_KEY, False))


_RENDERING_OPTIONS = [
    click.option(
        "--depth",
        type=click.IntRange(1, 64),
        default=1,
        show_default=True,
        help="Display depth: 1 shows the blocks the model's forward calls.",
    ),
    click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default=None,
        help="Output format (default: table, or what -o's suffix implies).",
    ),
    click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Write to FILE instead of printing.",
    ),
]


def rendering_options(command: F) -> F:
    """--depth, --format and -o, handed to `command` as `rendering: Rendering`.

    The format is resolved (from -o's suffix) and the destination checked before the
    command runs, so a bad -o fails before any tracing.
    """

    @functools.wraps(command)
    def with_rendering(*args: Any, depth: int, fmt: str | None, output: Path | None, **kwargs: Any) -> Any:
        rendering = Rendering(format=choose_format(fmt, output), depth=depth, output=output)
        check_destination(output)
        return command(*args, rendering=rendering, **kwargs)

    return _with_options(with_rendering, _RENDERING_OPTIONS)  # type: ignore[return-value]


@dataclass(frozen=True)
class Tracing:
    """How to run a trace: what the tracing options asked for."""

    device: str
    """meta (shapes only), cpu or cuda."""
    first_break: bool
    """Stop at the first break instead of reporting every one."""


_TRACING_OPTIONS = [
    click.option(
        "--device",
        type=click.Choice(["meta", "cpu", "cuda"]),
        default="meta",
        show_default=True,
        help="meta: shapes only, no weights or compute.",
    ),
    click.option("--first-break", is_flag=True, help="Stop at the first break."),
]


def tracing_options(command: F) -> F:
    """--device and --first-break, handed to `command` as `tracing: Tracing`."""

    @functools.wraps(command)
    def with_tracing(*args: Any, device: str, first_break: bool, **kwargs: Any) -> Any:
        return command(*args, tracing=Tracing(device=device, first_break=first_break), **kwargs)

    return _with_options(with_tracing, _TRACING_OPTIONS)  # type: ignore[return-value]


def _with_options(command: Callable[..., Any], options: list[Callable[[Any], Any]]) -> Callable[..., Any]:
    # click lists options in the order their decorators are written, which is the reverse of applying them.
    for option in reversed(options):
        command = option(command)
    return command
