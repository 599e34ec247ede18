"""`shapetrace trace TARGET`: trace any model, with the inputs the options describe."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import click

from shapetrace.cli.cost_options import cost_options, cost_request
from shapetrace.cli.exit_status import ExitStatus, run_status
from shapetrace.cli.options import Tracing, debug_option, rendering_options, tracing_options
from shapetrace.cli.output import Rendering, emit, stdout_console
from shapetrace.cli.types import (
    RANDOM_TIMESTEP,
    JsonObject,
    KeywordTensorType,
    TensorSpec,
    TensorSpecType,
    TimestepValue,
)
from shapetrace.errors import UsageError


@click.command("trace")
@click.argument("target")
@click.option("--init", type=JsonObject(), default=None, help="Constructor keyword arguments as a JSON object.")
@click.option(
    "--input",
    "inputs",
    type=TensorSpecType(),
    multiple=True,
    help="A positional input, e.g. 2,3,64,64 or 2,3,64,64:float16 (repeatable).",
)
@click.option(
    "--timestep",
    type=TimestepValue(),
    is_flag=False,
    flag_value=RANDOM_TIMESTEP,
    default=None,
    metavar="[VALUE]",
    help="Add timesteps t of shape [B] after the inputs; --timestep 500 sets their value.",
)
@click.option(
    "--kw",
    "keywords",
    type=KeywordTensorType(),
    multiple=True,
    help="A keyword tensor, e.g. encoder_hidden_states=1,77,768 (repeatable).",
)
@tracing_options
@rendering_options
@cost_options
@debug_option
def trace_command(
    target: str,
    init: dict[str, Any] | None,
    inputs: tuple[TensorSpec, ...],
    timestep: int | Literal["random"] | None,
    keywords: tuple[tuple[str, TensorSpec], ...],
    tracing: Tracing,
    rendering: Rendering,
) -> ExitStatus:
    """Trace any model: TARGET is package.module:attr or path/to/file.py:attr."""
    if not inputs and not keywords:
        raise UsageError("no inputs given: expected --input SHAPE (e.g. --input 2,3,64,64) or --kw NAME=SHAPE")
    by_name = dict(keywords)
    if len(by_name) < len(keywords):
        repeated = next(name for name, _ in keywords if [key for key, _ in keywords].count(name) > 1)
        raise UsageError(f"--kw {repeated!r} is given twice: expected each keyword tensor once")
    from shapetrace.cli.trace_target import trace_target

    request = cost_request()
    trace = trace_target(
        target,
        init=init or {},
        inputs=inputs,
        keywords=by_name,
        timestep=timestep,
        device=tracing.device,
        first_break=tracing.first_break,
        cost=request.options,
    )
    emit(trace, dataclasses.replace(rendering, columns=request.columns), stdout_console())
    return run_status(trace)
