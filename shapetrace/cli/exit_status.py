"""The exit statuses of `shapetrace`, one meaning each, whatever the command."""

from __future__ import annotations

from enum import IntEnum

from shapetrace.records import BreakKind, Trace


class ExitStatus(IntEnum):
    """What the process's exit status tells a script."""

    ALIGNED = 0
    """The trace is aligned (or two traces have the same shapes)."""
    BREAK = 1
    """A break was found (or two traces differ)."""
    USAGE = 2
    """Bad usage: an option, a file or a TARGET shapetrace cannot use; one line says which."""
    INTERNAL = 3
    """A bug in shapetrace itself; one line asks for a report, --debug shows the traceback."""
    INTERRUPTED = 130
    """Stopped with Ctrl-C, as any program is; what was traced is printed first."""


def verdict(trace: Trace) -> ExitStatus:
    """ALIGNED or BREAK: what the trace says about the model."""
    return ExitStatus.ALIGNED if trace.ok else ExitStatus.BREAK


def run_status(trace: Trace) -> ExitStatus:
    """The verdict of a trace made just now, or INTERRUPTED when the user stopped it."""
    if any(brk.kind == BreakKind.INTERRUPTED for brk in trace.breaks):
        return ExitStatus.INTERRUPTED
    return verdict(trace)
