"""`shapetrace sweep`: trace the reference UNet at many sizes and show where each first breaks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from rich.console import Console

from shapetrace.cli.exit_status import ExitStatus
from shapetrace.cli.files import check_destination, write_text
from shapetrace.cli.options import debug_option
from shapetrace.cli.output import stdout_console, sweep_format
from shapetrace.cli.types import ChannelMultipliers, SizeList
from shapetrace.cli.unet import VARIANTS
from shapetrace.errors import UsageError
from shapetrace.records import MAX_EXTENT
from shapetrace.sizes import Size, spatial_extents

DEFAULT_CHANNEL_MULTIPLIERS = (1, 2, 4, 8)
PROGRESS_FROM = 50  # traces; fewer finish before a bar would be worth drawing


@click.command("sweep")
@click.option("--sizes", type=SizeList(), required=True, help="START:STOP[:STEP] (inclusive) or a list: 224,225,232.")
@click.option("--chs", type=ChannelMultipliers(), multiple=True, help="Channel multipliers; repeat to compare configs.")
@click.option("--n-channels", type=click.IntRange(1, 1 << 16), default=64, show_default=True, help="Base width.")
@click.option("--img-channels", type=click.IntRange(1, 1 << 12), default=3, show_default=True, help="Image channels.")
@click.option("--batch", type=click.IntRange(1, MAX_EXTENT), default=1, show_default=True, help="Batch size.")
@click.option("--variant", type=click.Choice(VARIANTS), default="fixed", show_default=True)
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
    sizes: list[Size],
    chs: tuple[tuple[int, ...], ...],
    n_channels: int,
    img_channels: int,
    batch: int,
    variant: str,
    fmt: str | None,
    output: Path | None,
) -> ExitStatus:
    """Trace the reference UNet at every size and show where each first breaks."""
    fmt = sweep_format(fmt, output)
    check_destination(output)
    from shapetrace.models.reference import sweep_reference
    from shapetrace.render.plain import plain_text
    from shapetrace.render.sweep_grid import sweep_grid, sweep_json
    from shapetrace.render.sweep_html import sweep_html

    console = stdout_console()
    configs = list(chs) or [DEFAULT_CHANNEL_MULTIPLIERS]
    try:
        squares = [(height, width) for height, width in (spatial_extents(size, 2) for size in sizes)]
    except ValueError as error:
        raise UsageError(f"--sizes: {error}") from None
    with _progress(console, len(sizes) * len(configs)) as advance:
        results = [
            sweep_reference(squares, config, n_channels, img_channels, batch, variant, advance) for config in configs
        ]
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
    aligned = all(outcome.ok for result in results for outcome in result.outcomes)
    return ExitStatus.ALIGNED if aligned else ExitStatus.BREAK


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
