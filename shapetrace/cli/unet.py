"""`shapetrace unet`: trace the tutorial's reference UNet."""

from __future__ import annotations

import dataclasses

import click

from shapetrace.cli.cost_options import cost_options, cost_request
from shapetrace.cli.exit_status import ExitStatus, run_status
from shapetrace.cli.options import Tracing, debug_option, rendering_options, tracing_options
from shapetrace.cli.output import Rendering, emit, stdout_console
from shapetrace.cli.types import FLOATING_DTYPE_NAMES, ChannelMultipliers, SpatialSize
from shapetrace.records import MAX_EXTENT

VARIANTS = ("fixed", "as-written")


@click.command()
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
    type=click.Choice(VARIANTS),
    default="fixed",
    show_default=True,
    help="as-written: the tutorial's up path verbatim, which misaligns.",
)
@click.option(
    "--dtype",
    type=click.Choice(FLOATING_DTYPE_NAMES),
    default="float32",
    show_default=True,
    help="The dtype of the weights and of the image.",
)
@tracing_options
@rendering_options
@cost_options
@debug_option
def unet(
    size: tuple[int, int],
    chs: tuple[int, ...],
    n_channels: int,
    img_channels: int,
    batch: int,
    variant: str,
    dtype: str,
    tracing: Tracing,
    rendering: Rendering,
) -> ExitStatus:
    """Trace the tutorial's reference UNet."""
    from shapetrace.models.reference import trace_reference

    request = cost_request()
    trace = trace_reference(
        size=size,
        chs=chs,
        n_channels=n_channels,
        img_channels=img_channels,
        batch=batch,
        variant=variant,
        dtype=dtype,
        device=tracing.device,
        first_break=tracing.first_break,
        cost=request.options,
    )
    emit(trace, dataclasses.replace(rendering, columns=request.columns), stdout_console())
    return run_status(trace)
