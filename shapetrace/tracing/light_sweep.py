"""The sweep's outcomes: one light pass (`light_pass`) per size, in this process or in forked workers.

Each size is an independent forward on meta, so a long sweep forks one worker per core (where
the platform forks), and the workers inherit the model instead of rebuilding it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import nn

from shapetrace.records import BreakKind, Outcome
from shapetrace.tracing.light_pass import LightPass, first_break
from shapetrace.tracing.tracer import collector_paused, observed


def sweep(
    model: nn.Module,
    sizes: Iterable[tuple[int, int]],
    arguments_at: Callable[[int, int], tuple[Sequence[Any], dict[str, Any]]],
    progress: Callable[[], None] | None = None,
    workers: int | None = None,
) -> list[Outcome]:
    """The outcome of every size, on one model built once (on meta).

    Long sweeps fork one worker per core (where the platform forks): each size is an
    independent forward, and the workers inherit the model instead of rebuilding it.
    """
    sizes = list(sizes)
    workers = workers or _worker_count(len(sizes))
    if workers == 1:
        return size_dependent(_sweep_serial(model, sizes, arguments_at, progress))
    global _INHERITED  # noqa: PLW0603 - handed to forked workers, which cannot unpickle closures
    _INHERITED = (model, arguments_at)
    chunks = [sizes[start : start + _CHUNK] for start in range(0, len(sizes), _CHUNK)]
    outcomes: list[Outcome] = []
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for chunk in pool.imap(_sweep_inherited, chunks):
                outcomes.extend(chunk)
                for _ in chunk if progress is not None else ():
                    progress()  # type: ignore[misc]
    finally:
        _INHERITED = None
    return size_dependent(outcomes)


def size_dependent(outcomes: list[Outcome]) -> list[Outcome]:
    """Failures of no known kind turned size breaks where other sizes run, as the full trace's probes decide.

    A model's own `raise ValueError` on its input size is an ERROR to the tracer (never read
    from its message); a trace turns it into a size break when sizes near it run. The sweep's
    sizes are such probes already: where any of them runs, the size is what failed.
    """
    if not any(outcome.kind is None for outcome in outcomes):
        return outcomes
    return [
        Outcome(outcome.size, BreakKind.SIZE, outcome.place) if outcome.kind == BreakKind.ERROR else outcome
        for outcome in outcomes
    ]


_CHUNK = 32  # sizes per task: small enough for a smooth progress bar, large enough to amortise
_INHERITED: tuple[nn.Module, Callable[[int, int], tuple[Sequence[Any], dict[str, Any]]]] | None = None


def _worker_count(sizes: int) -> int:
    if sizes < 4 * _CHUNK or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def _sweep_inherited(sizes: list[tuple[int, int]]) -> list[Outcome]:
    assert _INHERITED is not None
    model, arguments_at = _INHERITED
    return _sweep_serial(model, sizes, arguments_at, None)


def _sweep_serial(
    model: nn.Module,
    sizes: Sequence[tuple[int, int]],
    arguments_at: Callable[[int, int], tuple[Sequence[Any], dict[str, Any]]],
    progress: Callable[[], None] | None,
) -> list[Outcome]:
    """Every size in this process, the model hooked once."""
    light = LightPass({id(module): name for name, module in model.named_modules()})
    outcomes = []
    with collector_paused(meta=True), observed(model, light.before, light.after, with_kwargs=True):
        for height, width in sizes:
            args, kwargs = arguments_at(height, width)
            kind, place = first_break(light, model, args, kwargs)
            outcomes.append(Outcome((height, width), BreakKind(kind) if kind else None, place))
            if progress is not None:
                progress()
    return outcomes
