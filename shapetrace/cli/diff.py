"""`shapetrace diff BEFORE AFTER`: the layers and skips that changed between two saved traces."""

from __future__ import annotations

from pathlib import Path

import click

from shapetrace.cli.exit_status import ExitStatus
from shapetrace.cli.files import load_trace
from shapetrace.cli.options import debug_option
from shapetrace.cli.output import stdout_console


@click.command()
@click.argument("before", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("after", type=click.Path(path_type=Path, dir_okay=False))
@debug_option
def diff(before: Path, after: Path) -> ExitStatus:
    """Show the layers whose shapes differ between two JSON traces, and the skips that changed."""
    from shapetrace.analysis.diff import diff_traces
    from shapetrace.render.diff_table import diff_table

    difference = diff_traces(load_trace(before), load_trace(after))
    if difference.same:
        click.echo(f"{before} and {after} have the same shapes and skips")
        return ExitStatus.ALIGNED
    stdout_console().print(diff_table(difference, before.name, after.name))
    return ExitStatus.BREAK
