"""The cost options of `unet` and `trace` (and `--columns` of `show`), in one decorator.

`@cost_options` adds `--cost`, `--columns`, `--mode`, `--optimizer`, `--checkpointing` and
`--budget` to a command and takes them out of its keyword arguments again: the command asks
`cost_request()` for them. Any of them but `--columns` turns the cost on by itself, and so
does a `--columns` list that names a cost column. Torch-free: nothing here traces.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from shapetrace.records import CostMode, CostOptions, Optimizer

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_META_KEY = "shapetrace.cost"
SHAPE_COLUMNS = frozenset({"type", "input", "output", "change", "skip", "params"})


class ByteSize(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--budget 24GB`: a number of bytes with a unit; GB is 10**9 bytes, GiB 2**30."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?[bB]|[bB])?\s*", str(value))
        if match is None:
            self.fail(
                f"{value!r} is not a size: expected a number and a unit like 24GB or 24GiB (GB = 10**9 bytes)",
                param,
                ctx,
            )
        count = round(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
        if count < 1:
            self.fail(f"{value!r} is not a size: expected at least 1 byte", param, ctx)
        return count


class ColumnList(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`--columns flops,macs,params`: the table's columns after `#` and `layer`, by name."""

    name = "columns"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        from shapetrace.render.columns import COLUMNS

        names = tuple(part.strip() for part in str(value).split(",") if part.strip())
        unknown = [name for name in names if name not in COLUMNS]
        if unknown or not names:
            self.fail(
                f"{value!r} names no column {unknown[0] if unknown else ''!r}: expected some of {', '.join(COLUMNS)}",
                param,
                ctx,
            )
        return names


@dataclass(frozen=True, slots=True)
class CostRequest:
    """What the cost options asked for: the cost to count (None: none) and the table's columns."""

    options: CostOptions | None = None
    columns: tuple[str, ...] | None = None


def cost_options(command: F) -> F:
    """Add the cost options to a click command; the command reads them with `cost_request()`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        ctx.meta[_META_KEY] = _request(ctx, {name: kwargs.pop(name) for name in _OPTION_NAMES})
        return command(*args, **kwargs)

    options = [
        click.option("--cost", "cost", is_flag=True, help="Count FLOPs, MACs and bytes per layer and per level."),
        click.option(
            "--columns",
            type=ColumnList(),
            default=None,
            help="Table columns after # and layer, e.g. flops,macs,params,output_bytes,kernel,dtype.",
        ),
        click.option(
            "--mode",
            type=click.Choice([mode.value for mode in CostMode]),
            default=CostMode.INFERENCE.value,
            show_default=True,
            help="The estimate a --budget verdict uses: inference (eval, no_grad) or train.",
        ),
        click.option(
            "--optimizer",
            type=click.Choice([optimizer.value for optimizer in Optimizer]),
            default=Optimizer.ADAM.value,
            show_default=True,
            help="Optimizer state in the train estimate: adam (2 per parameter) or sgd (none).",
        ),
        click.option(
            "--checkpointing", is_flag=True, help="Estimate training with per-block activation checkpointing."
        ),
        click.option(
            "--budget",
            type=ByteSize(),
            default=None,
            help="Memory to fit, e.g. 24GB (10**9 bytes) or 24GiB: the verdict, largest batch and size.",
        ),
    ]
    wrapped: Any = wrapper
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped  # type: ignore[no-any-return]


_OPTION_NAMES = ("cost", "columns", "mode", "optimizer", "checkpointing", "budget")


def _request(ctx: click.Context, values: dict[str, Any]) -> CostRequest:
    columns = values["columns"]
    chosen = any(ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE for name in ("mode", "optimizer"))
    wanted = (
        values["cost"]
        or values["budget"] is not None
        or values["checkpointing"]
        or chosen
        or any(name not in SHAPE_COLUMNS for name in columns or ())
    )
    if not wanted:
        return CostRequest(None, columns)
    options = CostOptions(
        mode=CostMode(values["mode"]),
        optimizer=Optimizer(values["optimizer"]),
        checkpointing=values["checkpointing"],
        budget=values["budget"],
    )
    return CostRequest(options, columns)


def cost_request() -> CostRequest:
    """The cost options of the running command (none when it has no cost options)."""
    found = click.get_current_context().meta.get(_META_KEY)
    return found if isinstance(found, CostRequest) else CostRequest()
