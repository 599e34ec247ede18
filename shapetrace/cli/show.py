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


@click.command()
@click.argument("trace_file", metavar="TRACE.json", type=click.Path(path_type=Path, dir_okay=False))
@rendering_options
@click.option(
    "--columns",
    type=ColumnList(),
    default=None,
    help="Table columns after # and layer, e.g. flops,macs,params,output_bytes,kernel,dtype.",
)
@debug_option
def show(trace_file: Path, rendering: Rendering, columns: tuple[str, ...] | None) -> ExitStatus:
    """Render a trace saved with --format json; the exit status is its verdict."""
    trace = load_trace(trace_file)
    emit(trace, dataclasses.replace(rendering, columns=columns), stdout_console())
    return verdict(trace)  # a trace stopped by Ctrl-C when it was made is a break here: this run was not stopped
