"""The `shapetrace` command: the click group, its commands, and the one error boundary.

Each command lives in a module of its own and returns its ExitStatus; the group turns that,
or whatever a command raises, into the process's exit status:

- 0 aligned, 1 a break found, 130 stopped with Ctrl-C (cli/exit_status.py);
- 2: a ShapetraceError (bad usage, a bad file or TARGET) as one line, `Error: ...`; so is
  running out of memory (MemoryError, torch's allocators), which the machine limits, not a bug;
- 3: any other exception, a bug in shapetrace (the user's model failing is a break in the
  trace, never an exception here), as one line asking for a report.

With --debug, the traceback is shown before the line; the exit status stays the same.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from shapetrace.cli.diff import diff
from shapetrace.cli.exit_status import ExitStatus
from shapetrace.cli.options import debug_option, debug_requested
from shapetrace.cli.show import show
from shapetrace.cli.sweep import sweep_command
from shapetrace.cli.trace import trace_command
from shapetrace.cli.unet import unet
from shapetrace.errors import InternalError, ShapetraceError

__all__ = ["ExitStatus", "main", "run"]

INTERNAL_ERROR = "internal error in shapetrace (please report)"


class ShapetraceGroup(click.Group):
    """A click group whose commands return exit statuses, behind one error boundary."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; exit with its status, or report what it raised."""
        try:
            status = super().invoke(ctx)
            sys.stdout.flush()  # a reader that closed the pipe early shows here, where click quiets it
        except (click.exceptions.Exit, click.ClickException, click.Abort, BrokenPipeError):
            raise  # click's own exits and usage errors say what they mean; click quiets a closed pipe
        except Exception as error:  # noqa: BLE001 - the boundary: a bug of ours is reported, never a bare traceback
            ctx.exit(int(_report(ctx, error)))
        ctx.exit(int(ExitStatus.ALIGNED if status is None else status))


def _report(ctx: click.Context, error: Exception) -> ExitStatus:
    """Print one line for `error` (after its traceback under --debug); its exit status."""
    if debug_requested(ctx):
        traceback.print_exception(error)
    if isinstance(error, ShapetraceError) and not isinstance(error, InternalError):
        click.echo(f"Error: {_one_line(str(error))}", err=True)
        return ExitStatus.USAGE
    if _ran_out_of_memory(error):
        detail = _one_line(str(error)) or type(error).__name__
        click.echo(f"Error: out of memory ({detail}): try --device meta, which traces shapes without memory", err=True)
        return ExitStatus.USAGE
    described = str(error) if isinstance(error, InternalError) else f"{type(error).__name__}: {error}"
    hint = "" if debug_requested(ctx) else " (--debug shows the traceback)"
    click.echo(f"{INTERNAL_ERROR}: {_one_line(described)}{hint}", err=True)
    return ExitStatus.INTERNAL


def _ran_out_of_memory(error: Exception) -> bool:
    if isinstance(error, MemoryError):
        return True
    if "torch" not in sys.modules:
        return False  # torch's allocators raise nothing before torch is imported; the boundary imports no torch
    from shapetrace.tracing.inputs import allocation_failed

    return allocation_failed(error)


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


@click.group(cls=ShapetraceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
@click.version_option(package_name="shapetrace")
def main() -> None:
    """See the tensor shapes inside a diffusion UNet and where its down and up paths break."""


for _command in (unet, trace_command, sweep_command, diff, show):
    main.add_command(_command)


def run() -> None:
    """Entry point for `python -m shapetrace`."""
    main(prog_name="shapetrace")


if __name__ == "__main__":
    run()
