"""`shapetrace sweep [TARGET]`: trace a model at many sizes and show where each first breaks.

With a TARGET, the model and its inputs come from the options `trace` takes (`target_options`),
and each size replaces the spatial extents of the first --input. Without one, the reference
UNet is swept, configured by --chs, --n-channels and the rest, which a TARGET refuses.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console

from shapetrace.cli.exit_status import ExitStatus
from shapetrace.cli.files import check_destination, write_text
from shapetrace.cli.options import TargetCall, debug_option, target_options
from shapetrace.cli.output import stdout_console, sweep_format
from shapetrace.cli.types import ChannelMultipliers, SizeList
from shapetrace.cli.unet import VARIANTS
from shapetrace.errors import UsageError
from shapetrace.records import MAX_EXTENT, SweepResult
from shapetrace.sizes import Size, spatial_extents

DEFAULT_CHANNEL_MULTIPLIERS = (1, 2, 4, 8)
PROGRESS_FROM = 50  # sizes; fewer finish before a bar would be worth drawing
REFERENCE_OPTIONS = {
    "chs": "--chs",
    "n_channels": "--n-channels",
    "img_channels": "--img-channels",
    "batch": "--batch",
    "variant": "--variant",
}
"""The options that configure the reference UNet, by parameter name; a TARGET refuses them."""


def optional_target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`target_options` for a command whose TARGET is optional: `call` is None without a TARGET.

    Raises (when the command runs):
        UsageError: a target option (--input, --init, ...) is given without a TARGET.
    """
    flags = {param.name: param.opts[0] for param in _target_params()}
    with_target = target_options(command)

    @functools.wraps(with_target)
    def dispatch(*args: Any, target: str | None, **kwargs: Any) -> Any:
        if target is not None:
            return with_target(*args, target=target, **kwargs)
        context = click.get_current_context()
        given = [flag for name, flag in flags.items() if _given(context, name)]
        if given:
            raise UsageError(f"{given[0]} describes a TARGET's inputs: expected a TARGET before it, or no {given[0]}")
        rest = {name: value for name, value in kwargs.items() if name not in flags}
        return command(*args, target=None, call=None, **rest)

    return dispatch


def _target_params() -> list[click.Parameter]:
    """The parameters `target_options` declares, read from it, so an option added there is known here."""
    probe = target_options(lambda **_: None)
    return list(getattr(probe, "__click_params__", []))


def _given(context: click.Context, name: str | None) -> bool:
    source = context.get_parameter_source(name) if name else None
    return source not in (None, ParameterSource.DEFAULT)


@click.command("sweep")
@click.argument("target", required=False)
@click.option(
    "--sizes", type=SizeList(), required=True, help="START:STOP[:STEP] (inclusive) or a list: 224,225,232x240."
)
@optional_target_options
@click.option("--chs", type=ChannelMultipliers(), multiple=True, help="Reference UNet: channel multipliers; repeat.")
@click.option(
    "--n-channels", type=click.IntRange(1, 1 << 16), default=64, show_default=True, help="Reference UNet: base width."
)
@click.option(
    "--img-channels",
    type=click.IntRange(1, 1 << 12),
    default=3,
    show_default=True,
    help="Reference UNet: image channels.",
)
@click.option(
    "--batch", type=click.IntRange(1, MAX_EXTENT), default=1, show_default=True, help="Reference UNet: batch size."
)
@click.option("--variant", type=click.Choice(VARIANTS), default="fixed", show_default=True, help="Reference UNet.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "html"]),
    default=None,
    help="Default: table, or what -o's suffix implies (.json, .html).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write to FILE.")
@debug_option
def sweep_command(
    target: str | None,
    sizes: list[Size],
    call: TargetCall | None,
    chs: tuple[tuple[int, ...], ...],
    n_channels: int,
    img_channels: int,
    batch: int,
    variant: str,
    fmt: str | None,
    output: Path | None,
) -> ExitStatus:
    """Trace a model at every size and show where each first breaks.

    TARGET is package.module:attr or path/to/file.py:attr, with --input as for `trace`; each
    size replaces the first input's spatial extents. Without TARGET, the reference UNet.
    """
    fmt = sweep_format(fmt, output)
    check_destination(output)
    console = stdout_console()
    results: list[SweepResult] = []
    try:
        if target is not None and call is not None:
            _refuse_reference_options()
            spatial = _spatial_sizes(sizes, _spatial_axes(call))
            with _progress(console, len(sizes)) as advance:
                results.append(_sweep_target(target, call, spatial, advance))
        else:
            configs = list(chs) or [DEFAULT_CHANNEL_MULTIPLIERS]
            squares = _spatial_sizes(sizes, 2)
            with _progress(console, len(sizes) * len(configs)) as advance:
                from shapetrace.models.reference import sweep_reference

                for config in configs:
                    results.append(sweep_reference(squares, config, n_channels, img_channels, batch, variant, advance))
    except KeyboardInterrupt as stopped:
        partial = getattr(stopped, "result", None)
        results += [partial] if partial is not None and partial.outcomes else []
        _emit(results, fmt, output, console)
        done = sum(len(result.outcomes) for result in results)
        click.echo(f"stopped (Ctrl-C) after {done} size{'s' * (done != 1)}", err=True)
        return ExitStatus.INTERRUPTED
    _emit(results, fmt, output, console)
    aligned = all(outcome.ok for result in results for outcome in result.outcomes)
    return ExitStatus.ALIGNED if aligned else ExitStatus.BREAK


def _sweep_target(target: str, call: TargetCall, sizes: list[Size], advance: Callable[[], None]) -> SweepResult:
    from shapetrace.cli.sweep_target import sweep_target

    return sweep_target(target, call, sizes, advance)


def _refuse_reference_options() -> None:
    context = click.get_current_context()
    given = next((flag for name, flag in REFERENCE_OPTIONS.items() if _given(context, name)), None)
    if given is not None:
        raise UsageError(f"{given} configures the reference UNet: expected no {given} with a TARGET")


def _spatial_axes(call: TargetCall) -> int:
    first = call.inputs[0].shape if call.inputs else ()
    if len(first) < 3:
        shown = ",".join(map(str, first)) or "none"
        raise UsageError(f"sweep resizes the first --input, which is {shown}: expected (batch, channels, *spatial)")
    return len(first) - 2


def _spatial_sizes(sizes: list[Size], axes: int) -> list[Size]:
    try:
        return [spatial_extents(size, axes) for size in sizes]
    except ValueError as error:
        raise UsageError(f"--sizes: {error}") from None


def _emit(results: list[SweepResult], fmt: str, output: Path | None, console: Console) -> None:
    from shapetrace.render.plain import plain_text
    from shapetrace.render.sweep_grid import sweep_grid, sweep_json
    from shapetrace.render.sweep_html import sweep_html

    if fmt in ("json", "html"):
        text = sweep_json(results) if fmt == "json" else sweep_html(results)
        if output is None:
            click.echo(text)
        else:
            write_text(output, text + "\n")
    elif output is None:
        console.print(sweep_grid(results))
    else:
        write_text(output, plain_text(sweep_grid(results)))


@contextlib.contextmanager
def _progress(console: Console, total: int) -> Iterator[Callable[[], None]]:
    """A transient progress bar on terminals for long sweeps; a no-op otherwise."""
    if total < PROGRESS_FROM or not console.is_terminal:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("tracing sizes", total=total)
        yield lambda: progress.advance(task)
