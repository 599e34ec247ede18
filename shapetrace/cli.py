"""The `shapetrace` command: parse, build or import the model, trace, render, exit.

Exit status: 0 when the trace is aligned, 1 when it found a break, 2 for bad usage.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from shapetrace.errors import ShapetraceError
from shapetrace.output import FILE_WIDTH, FORMATS, check_destination, choose_format, emit
from shapetrace.params import MAX_EXTENT, ChannelMultipliers, SpatialSize

EXIT_BREAK = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


class _UsageFailure(click.ClickException):
    """A ShapetraceError at the CLI boundary: one line, exit status 2."""

    exit_code = EXIT_USAGE


def _reported(command: F) -> F:
    """Turn shapetrace's errors into one line (a traceback only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.get("debug", False) or (click.get_current_context().find_root().params.get("debug", False))
        try:
            return command(*args, **kwargs)
        except ShapetraceError as error:
            if debug:
                raise
            raise _UsageFailure(str(error)) from None

    return wrapper  # type: ignore[return-value]


def _rendering_options(command: F) -> F:
    options = [
        click.option(
            "--device",
            type=click.Choice(["meta", "cpu", "cuda"]),
            default="meta",
            show_default=True,
            help="meta: shapes only, no weights or compute.",
        ),
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
        click.option("--first-break", is_flag=True, help="Stop at the first break."),
        click.option("--debug", is_flag=True, help="Show tracebacks."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for every command.")
@click.version_option(package_name="shapetrace")
def main(debug: bool) -> None:
    """See the tensor shapes inside a diffusion UNet and where its down and up paths break."""


@main.command()
@click.option("--size", type=SpatialSize(), default="224", show_default=True, help="Input size: 224 or HxW.")
@click.option(
    "--chs", type=ChannelMultipliers(), default="1,2,4,8", show_default=True, help="Channel multiplier per level."
)
@click.option("--n-channels", type=click.IntRange(1, 1 << 16), default=64, show_default=True, help="Base width.")
@click.option(
    "--img-channels", type=click.IntRange(1, 1 << 12), default=3, show_default=True, help="Channels of the image."
)
@click.option("--batch", type=click.IntRange(1, MAX_EXTENT), default=2, show_default=True, help="Batch size.")
@click.option(
    "--variant",
    type=click.Choice(["fixed", "as-written"]),
    default="fixed",
    show_default=True,
    help="as-written: the tutorial's up path verbatim, which misaligns.",
)
@_rendering_options
@click.pass_context
@_reported
def unet(
    ctx: click.Context,
    size: tuple[int, int],
    chs: tuple[int, ...],
    n_channels: int,
    img_channels: int,
    batch: int,
    variant: str,
    device: str,
    depth: int,
    fmt: str | None,
    output: Path | None,
    first_break: bool,
    debug: bool,
) -> None:
    """Trace the tutorial's reference UNet."""
    fmt = choose_format(fmt, output)
    check_destination(output)
    from shapetrace.reference import trace_reference

    trace = trace_reference(
        size=size,
        chs=chs,
        n_channels=n_channels,
        img_channels=img_channels,
        batch=batch,
        variant=variant,
        device=device,
        first_break=first_break,
    )
    _finish(ctx, trace, fmt, depth, output)


def _finish(ctx: click.Context, trace: Any, fmt: str, depth: int, output: Path | None) -> None:
    emit(trace, fmt, depth, output, _console())
    ctx.exit(0 if trace.ok else EXIT_BREAK)


def _console() -> Any:
    """A console for stdout; piped output is not squeezed into a default 80 columns."""
    from rich.console import Console

    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=FILE_WIDTH if piped else None)


def run() -> None:
    """Entry point for `python -m shapetrace`."""
    main(prog_name="shapetrace")


if __name__ == "__main__":
    sys.exit(run())
