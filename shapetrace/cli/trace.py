"""`shapetrace trace TARGET`: trace any model, with the inputs the options describe."""

from __future__ import annotations

import dataclasses

import click

from shapetrace.cli.cost_options import cost_options, cost_request
from shapetrace.cli.exit_status import ExitStatus, run_status
from shapetrace.cli.options import TargetCall, Tracing, debug_option, rendering_options, target_options, tracing_options
from shapetrace.cli.output import Rendering, emit, stdout_console


@click.command("trace")
@click.argument("target")
@target_options
@tracing_options
@rendering_options
@cost_options
@debug_option
def trace_command(target: str, call: TargetCall, tracing: Tracing, rendering: Rendering) -> ExitStatus:
    """Trace any model: TARGET is package.module:attr or path/to/file.py:attr."""
    from shapetrace.cli.trace_target import trace_target

    request = cost_request()
    trace = trace_target(
        target,
        init=call.init,
        inputs=call.inputs,
        keywords=call.keywords,
        timestep=call.timestep,
        dtype=call.dtype,
        device=tracing.device,
        first_break=tracing.first_break,
        cost=request.options,
    )
    emit(trace, dataclasses.replace(rendering, columns=request.columns), stdout_console())
    return run_status(trace)
