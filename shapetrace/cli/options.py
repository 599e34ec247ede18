"""Options shared by several commands, each declared once.

A command takes a group of options through one decorator, which hands it one value
(`rendering`, `tracing`): adding an option to a group is one line here and one field there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from shapetrace.cli.files import check_destination
from shapetrace.cli.output import FORMATS, Rendering, choose_format
from shapetrace.cli.types import (
    FLOATING_DTYPE_NAMES,
    RANDOM_TIMESTEP,
    JsonObject,
    KeywordTensorType,
    TensorSpec,
    TensorSpecType,
    TimestepValue,
)
from shapetrace.errors import UsageError

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


@dataclass(frozen=True)
class TargetCall:
    """How to build the user's model and what to feed it: what the target options asked for."""

    init: dict[str, Any]
    """Keyword arguments for the TARGET's class or factory."""
    inputs: tuple[TensorSpec, ...]
    """The positional tensors, in order."""
    timestep: int | Literal["random"] | None
    """Timesteps t of shape [B] after the inputs: random, this value, or none."""
    keywords: dict[str, TensorSpec]
    """The keyword tensors, by name."""
    dtype: str | None = None
    """The dtype of the model's weights and of every floating input that names none (--dtype); None keeps
    the model's own, unless an input names a floating dtype."""


_TARGET_OPTIONS = [
    click.option("--init", type=JsonObject(), default=None, help="Constructor keyword arguments as a JSON object."),
    click.option(
        "--input",
        "inputs",
        type=TensorSpecType(),
        multiple=True,
        help="A positional input, e.g. 2,3,64,64 or 2,3,64,64:float16 (repeatable).",
    ),
    click.option(
        "--timestep",
        type=TimestepValue(),
        is_flag=False,
        flag_value=RANDOM_TIMESTEP,
        default=None,
        metavar="[VALUE]",
        help="Add timesteps t of shape [B] after the inputs; --timestep 500 sets their value.",
    ),
    click.option(
        "--kw",
        "keywords",
        type=KeywordTensorType(),
        multiple=True,
        help="A keyword tensor, e.g. encoder_hidden_states=1,77,768 (repeatable).",
    ),
    click.option(
        "--dtype",
        type=click.Choice(FLOATING_DTYPE_NAMES),
        default=None,
        help="The model's dtype, and that of each floating input naming none (default: the first "
        "floating dtype an input names, else the model's own).",
    ),
]


def target_options(command: F) -> F:
    """--init, --input, --timestep, --kw and --dtype, handed to `command` as `call: TargetCall`.

    Raises (when the command runs):
        UsageError: no input is given, or a keyword tensor is given twice.
    """

    @functools.wraps(command)
    def with_target(
        *args: Any,
        init: dict[str, Any] | None,
        inputs: tuple[TensorSpec, ...],
        timestep: int | Literal["random"] | None,
        keywords: tuple[tuple[str, TensorSpec], ...],
        dtype: str | None,
        **kwargs: Any,
    ) -> Any:
        if not inputs and not keywords:
            raise UsageError("no inputs given: expected --input SHAPE (e.g. --input 2,3,64,64) or --kw NAME=SHAPE")
        names = [name for name, _ in keywords]
        repeated = next((name for name in names if names.count(name) > 1), None)
        if repeated is not None:
            raise UsageError(f"--kw {repeated!r} is given twice: expected each keyword tensor once")
        call = TargetCall(init=init or {}, inputs=inputs, timestep=timestep, keywords=dict(keywords), dtype=dtype)
        return command(*args, call=call, **kwargs)

    return _with_options(with_target, _TARGET_OPTIONS)  # type: ignore[return-value]


def _with_options(command: Callable[..., Any], options: list[Callable[[Any], Any]]) -> Callable[..., Any]:
    # click lists options in the order their decorators are written, which is the reverse of applying them.
    for option in reversed(options):
        command = option(command)
    return command
