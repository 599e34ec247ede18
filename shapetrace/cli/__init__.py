"""The `shapetrace` command: parse, build or import the model, trace, render, exit.

Exit status: 0 when the trace is aligned, 1 when it found a break, 2 for bad usage.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from shapetrace.cli.cost_options import cost_options, cost_request
from shapetrace.cli.output import FORMATS, check_destination, choose_format, emit
from shapetrace.cli.types import ChannelMultipliers, SizeList, SpatialSize
from shapetrace.errors import ShapetraceError
from shapetrace.records import MAX_EXTENT
from shapetrace.render.plain import FILE_WIDTH

EXIT_BREAK = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as for any program stopped by Ctrl-C

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
@cost_options
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
    from shapetrace.models.reference import trace_reference

    trace = trace_reference(
        size=size,
        chs=chs,
        n_channels=n_channels,
        img_channels=img_channels,
        batch=batch,
        variant=variant,
        device=device,
        first_break=first_break,
        cost=cost_request().options,
    )
    _finish(ctx, trace, fmt, depth, output)


@main.command("trace")
@click.argument("target")
@click.option("--init", "init_json", default=None, help="Constructor keyword arguments as a JSON object.")
@click.option(
    "--input",
    "input_specs",
    multiple=True,
    metavar="SHAPE[:DTYPE]",
    help="A positional input, e.g. 2,3,64,64 or 2,3,64,64:float16 (repeatable).",
)
@click.option(
    "--timestep",
    is_flag=False,
    flag_value="random",
    default=None,
    metavar="[VALUE]",
    help="Add timesteps t of shape [B] after the inputs; --timestep 500 sets their value.",
)
@click.option(
    "--kw",
    "keyword_specs",
    multiple=True,
    metavar="NAME=SHAPE[:DTYPE]",
    help="A keyword tensor, e.g. encoder_hidden_states=1,77,768 (repeatable).",
)
@_rendering_options
@cost_options
@click.pass_context
@_reported
def trace_command(
    ctx: click.Context,
    target: str,
    init_json: str | None,
    input_specs: tuple[str, ...],
    timestep: str | None,
    keyword_specs: tuple[str, ...],
    device: str,
    depth: int,
    fmt: str | None,
    output: Path | None,
    first_break: bool,
    debug: bool,
) -> None:
    """Trace any model: TARGET is package.module:attr or path/to/file.py:attr."""
    fmt = choose_format(fmt, output)
    check_destination(output)
    from shapetrace.cli.trace_target import trace_target

    trace = trace_target(
        target,
        init_json=init_json,
        input_specs=input_specs,
        timestep=timestep,
        keyword_specs=keyword_specs,
        device=device,
        first_break=first_break,
        cost=cost_request().options,
    )
    _finish(ctx, trace, fmt, depth, output)


@main.command()
@click.argument("before", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("after", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
@_reported
def diff(ctx: click.Context, before: Path, after: Path, debug: bool) -> None:
    """Show the layers whose shapes differ between two JSON traces, and the skips that changed."""
    from shapetrace.analysis.diff import diff_traces
    from shapetrace.render.diff_table import diff_table

    traces = [_load(path) for path in (before, after)]
    difference = diff_traces(*traces)
    if difference.same:
        click.echo(f"{before} and {after} have the same shapes and skips")
        ctx.exit(0)
    _console().print(diff_table(difference, before.name, after.name))
    ctx.exit(EXIT_BREAK)


def _load(path: Path) -> Any:
    """The Trace in a JSON file; errors name the file."""
    from shapetrace.errors import TraceFileError
    from shapetrace.records import Trace

    try:
        return Trace.from_json(_read(path))
    except TraceFileError as error:
        if str(path) in str(error):
            raise
        raise TraceFileError(f"{path}: {error}") from None


def _read(path: Path) -> str:
    from shapetrace.errors import TraceFileError

    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceFileError(f"cannot read trace {str(path)!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TraceFileError(f"cannot read trace {str(path)!r}: {error}") from None


@main.command("sweep")
@click.option("--sizes", type=SizeList(), required=True, help="START:STOP[:STEP] (inclusive) or a list: 224,225,232.")
@click.option("--chs", type=ChannelMultipliers(), multiple=True, help="Channel multipliers; repeat to compare configs.")
@click.option("--n-channels", type=click.IntRange(1, 1 << 16), default=64, show_default=True, help="Base width.")
@click.option("--img-channels", type=click.IntRange(1, 1 << 12), default=3, show_default=True, help="Image channels.")
@click.option("--batch", type=click.IntRange(1, MAX_EXTENT), default=1, show_default=True, help="Batch size.")
@click.option("--variant", type=click.Choice(["fixed", "as-written"]), default="fixed", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write to FILE.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
@_reported
def sweep_command(
    ctx: click.Context,
    sizes: list[tuple[int, int]],
    chs: tuple[tuple[int, ...], ...],
    n_channels: int,
    img_channels: int,
    batch: int,
    variant: str,
    fmt: str,
    output: Path | None,
    debug: bool,
) -> None:
    """Trace the reference UNet at every size and show where each first breaks."""
    check_destination(output)
    from shapetrace.models.reference import sweep_reference
    from shapetrace.render.plain import plain_text
    from shapetrace.render.sweep_grid import sweep_grid, sweep_json

    console = _console()
    configs = list(chs) or [(1, 2, 4, 8)]
    with _progress(console, len(sizes) * len(configs)) as advance:
        results = [
            sweep_reference(sizes, config, n_channels, img_channels, batch, variant, advance) for config in configs
        ]
    if fmt == "json":
        text = sweep_json(results)
        if output is None:
            click.echo(text)
        else:
            _write_text(output, text + "\n")
    elif output is None:
        console.print(sweep_grid(results))
    else:
        _write_text(output, plain_text(sweep_grid(results)))
    ctx.exit(0 if all(outcome.ok for result in results for outcome in result.outcomes) else EXIT_BREAK)


@contextlib.contextmanager
def _progress(console: Any, total: int) -> Iterator[Callable[[], None]]:
    """A transient progress bar on terminals for long sweeps; a no-op otherwise."""
    if total < 50 or not console.is_terminal:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("tracing sizes", total=total)
        yield lambda: progress.advance(task)


def _write_text(path: Path, text: str) -> None:
    from shapetrace.errors import UsageError

    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {str(path)!r}: {error.strerror}") from None


def _finish(ctx: click.Context, trace: Any, fmt: str, depth: int, output: Path | None) -> None:
    emit(trace, fmt, depth, output, _console(), columns=cost_request().columns)
    if any(brk.kind == "interrupted" for brk in trace.breaks):
        ctx.exit(EXIT_INTERRUPTED)  # the user stopped it: what was traced is printed above
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
    run()
