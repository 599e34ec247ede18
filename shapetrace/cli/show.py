"""`shapetrace show TRACE.json`: render a saved trace (a CI artifact, say) without torch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from shapetrace.cli.cost_options import ColumnList
from shapetrace.cli.exit_status import ExitStatus, verdict
from shapetrace.cli.files import load_trace
from shapetrace.cli.options import debug_option, rendering_options
from shapetrace.cli.output import Rendering, emit, stdout_console
from shapetrace.errors import UsageError


@click.command()
@click.argument("trace_file", metavar="TRACE.json", type=click.Path(path_type=Path, dir_okay=False))
@rendering_options
@click.option(
    "--columns",
    type=ColumnList(),
    default=None,
    help="Table columns after # and layer, e.g. flops,macs,params,output_bytes,kernel,dtype.",
)
@click.option("--cost", is_flag=True, help="Show the cost the trace was saved with (traced with --cost).")
@debug_option
def show(trace_file: Path, rendering: Rendering, columns: tuple[str, ...] | None, cost: bool) -> ExitStatus:
    """Render a trace saved with --format json; the exit status is its verdict."""
    trace = load_trace(trace_file)
    if cost and trace.cost is None:
        # A saved trace holds no model to count: the cost is made when tracing, not here.
        raise UsageError(f"{str(trace_file)!r} has no cost: it was traced without --cost; trace it again with --cost")
    emit(trace, dataclasses.replace(rendering, columns=columns), stdout_console())
    return verdict(trace)  # a trace stopped by Ctrl-C when it was made is a break here: this run was not stopped
