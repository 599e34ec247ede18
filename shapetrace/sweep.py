"""Sweep one model over many input sizes: which sizes run, and where each other size first breaks.

One full trace at the first input's own size gives the exact size rule where the records
have one (`size_search.exact_size_rule`: read from the resampling records, confirmed by a few
meta probes). From the rule's minimum on, every op's rounding repeats with the product of the
strides (the period of `analysis.size_rules`), so a size's outcome depends only on its extents
modulo that period: sizes the rule accepts run when a traced accepted size ran clean, and one
light pass per residue class gives the first break of all the others. Sizes below the minimum,
and every size of a model without an exact rule, get a light pass each (`tracing.light_pass`),
forked over the cores when there are many. A forward that reads tensor values, which meta
tensors lack, is swept on the CPU instead.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from shapetrace.analysis.chains import axes_of
from shapetrace.records import BreakKind, Outcome, SizeRule, SweepResult, Trace
from shapetrace.size_search import Prober, exact_size_rule
from shapetrace.sizes import Size, spatial_extents
from shapetrace.tracing.inputs import SizedInputs
from shapetrace.tracing.light_pass import LightPass, first_break
from shapetrace.tracing.light_sweep import size_dependent
from shapetrace.tracing.tracer import META_VALUES, observed
from shapetrace.verify import meta_copy

__all__ = ["SweepInterrupted", "sweep_model"]

Progress = Callable[[], None]
ArgumentsAt = Callable[[Size], tuple[Sequence[Any], dict[str, Any]]]

MAX_WALK = 16
"""Accepted sizes tried, smallest first, for one that runs clean; a model that breaks at every size
(a channel break) has none, and then every size gets its own light pass."""
FORK_FROM = 128  # light passes: fewer finish before forked workers would pay for their start
_CHUNK = 32  # sizes per worker task: a smooth progress bar, yet few round trips
META = torch.device("meta")


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sweep; `result` holds the sizes done before it, in order."""

    def __init__(self, result: SweepResult) -> None:
        super().__init__()
        self.result = result


def sweep_model(
    model: nn.Module,
    inputs: SizedInputs,
    sizes: Sequence[Size],
    *,
    label: str = "",
    progress: Progress | None = None,
    cpu_model: Callable[[], nn.Module] | None = None,
) -> SweepResult:
    """Whether `model` runs at each size, and where each size that does not first breaks.

    Args:
        model: the model; swept on a meta copy (or itself, when on meta), never changed.
        inputs: the call at one size; each size replaces the spatial extents of its first positional input.
        sizes: `(n,)` for every spatial axis alike, or one extent per axis (`shapetrace.sizes`).
        label: the configuration's name in the result.
        progress: called once per size done.
        cpu_model: builds the model on the CPU, for a forward that reads tensor values; by
            default the model itself when it is on the CPU.

    Returns:
        One Outcome per size, in order; a size is ok when its forward runs.

    Raises:
        ValueError: the first input has no spatial axes, or a size has another number of extents.
        SweepInterrupted: Ctrl-C; it carries the outcomes of the sizes done so far.
    """
    image = inputs.positional[0][0] if inputs.positional else ()
    if len(image) < 3:
        raise ValueError(f"the first input {list(image)} has no spatial axes: expected (batch, channels, *spatial)")
    extents = [spatial_extents(size, len(image) - 2) for size in sizes]
    outcomes: list[Outcome] = []

    def done(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if progress is not None:
            progress()

    try:
        _sweep(model, inputs, tuple(image[2:]), extents, done, cpu_model)
    except KeyboardInterrupt:
        raise SweepInterrupted(SweepResult(label, tuple(outcomes))) from None
    return SweepResult(label, tuple(size_dependent(outcomes)))  # a model's own size check: a size break


def _sweep(
    model: nn.Module,
    inputs: SizedInputs,
    requested: Size,
    sizes: list[Size],
    done: Callable[[Outcome], None],
    cpu_model: Callable[[], nn.Module] | None,
) -> None:
    """Every size's outcome, handed to `done` in order."""
    on_meta = _on_meta(model)
    meta_model = model if on_meta else meta_copy(model)
    prober = Prober(lambda: meta_model, lambda size: inputs.make(META, size), light=True)
    trace = prober.trace_at(requested)
    if inputs.timestep and _wants_float_timestep(trace):
        inputs = dataclasses.replace(inputs, timestep_dtype=torch.float32)
        prober = Prober(lambda: meta_model, lambda size: inputs.make(META, size), light=True)
        trace = prober.trace_at(requested)
    if any(brk.kind == META_VALUES for brk in trace.breaks):
        runner = cpu_model if cpu_model is not None else (None if on_meta else lambda: model)
        if runner is not None:
            cpu = torch.device("cpu")
            _light_every_size(runner(), lambda size: inputs.make(cpu, size), sizes, done, fork=False)
            return
    rule = exact_size_rule(trace, prober)
    largest = max(sizes, key=max, default=requested)
    if rule is None and largest != requested:
        # The input's own size may be too small for every level to round; the largest swept is not.
        trace = prober.trace_at(largest)
        rule = exact_size_rule(trace, prober)
    if rule is None:
        _light_every_size(meta_model, prober.arguments_at, sizes, done, fork=True)
        return
    _by_residue(meta_model, prober, trace, rule, sizes, done)


def _by_residue(
    model: nn.Module, prober: Prober, trace: Trace, rule: SizeRule, sizes: list[Size], done: Callable[[Outcome], None]
) -> None:
    """An exact rule: above a size that ran clean, one light pass per residue class; below it, one per size.

    Without a size that ran clean, every size gets its own light pass.
    """
    periods = _periods(trace, rule)
    with _hooked(model) as light:

        def outcome_at(size: Size) -> Outcome:
            return _light_outcome(light, model, prober.arguments_at, size)

        walked, floor = _clean_floor(outcome_at, prober, rule, sizes)
        if floor is not None:
            classes: dict[Size, Outcome] = {}
            for size in sizes:
                if size in walked:
                    done(walked[size])
                elif any(extent < lowest for extent, lowest in zip(size, floor, strict=True)):
                    done(outcome_at(size))
                elif rule.accepts(size):
                    done(Outcome(size))
                else:
                    key = tuple(extent % period for extent, period in zip(size, periods, strict=True))
                    if key not in classes:
                        classes[key] = outcome_at(size)
                    done(Outcome(size, classes[key].kind, classes[key].place))
            return
    # No accepted size ran clean (a channel break breaks every size): each size its own light pass.
    _light_every_size(model, prober.arguments_at, sizes, done, fork=True)


def _clean_floor(
    outcome_at: Callable[[Size], Outcome], prober: Prober, rule: SizeRule, sizes: list[Size]
) -> tuple[dict[Size, Outcome], Size | None]:
    """The smallest accepted size that runs clean, and the outcomes of the accepted sizes tried below it.

    The rule's minimum counts only the resampling ops; a layer such as GroupNorm may still refuse
    a 1x1 map above it. Every op sees extents at least as large at a larger size, so nothing that
    ran at this floor is too small above it: from there the outcome repeats with the period.
    """
    walked: dict[Size, Outcome] = {}
    for size in sorted({size for size in sizes if rule.accepts(size)}, key=sum)[:MAX_WALK]:
        walked[size] = outcome_at(size)
        if walked[size].ok:
            return walked, size
    traced = [size for size, traced in prober.traces.items() if rule.accepts(size) and traced.ok]
    return walked, min(traced, key=sum, default=None)


def _periods(trace: Trace, rule: SizeRule) -> list[int]:
    """Per axis, the product of the strides: the period with which every rounding repeats."""
    periods = {
        axis.dim: math.lcm(1, *(axis.scale(index).denominator for index in range(len(axis.nodes))))
        for axis in axes_of(trace)
    }
    return [math.lcm(periods.get(axis.axis, 1), axis.modulus) for axis in rule.axes]


def _light_every_size(
    model: nn.Module, arguments_at: ArgumentsAt, sizes: list[Size], done: Callable[[Outcome], None], *, fork: bool
) -> None:
    """No exact rule: a light pass at every size, forked over the cores when there are many."""
    workers = min(os.cpu_count() or 1, 8)
    if not fork or workers < 2 or len(sizes) < FORK_FROM or "fork" not in multiprocessing.get_all_start_methods():
        with _hooked(model) as light:
            for size in sizes:
                done(_light_outcome(light, model, arguments_at, size))
        return
    global _INHERITED  # noqa: PLW0603 - handed to forked workers, which cannot unpickle closures
    _INHERITED = (model, arguments_at)
    chunks = [sizes[start : start + _CHUNK] for start in range(0, len(sizes), _CHUNK)]
    try:
        # Leaving the block terminates the workers, Ctrl-C included; they ignore SIGINT themselves,
        # so only this process stops, with the sizes done so far.
        with multiprocessing.get_context("fork").Pool(workers, initializer=_ignore_interrupts) as pool:
            for chunk in pool.imap(_light_chunk, chunks):
                for outcome in chunk:
                    done(outcome)
    finally:
        _INHERITED = None


_INHERITED: tuple[nn.Module, ArgumentsAt] | None = None


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _light_chunk(sizes: list[Size]) -> list[Outcome]:
    assert _INHERITED is not None
    model, arguments_at = _INHERITED
    with _hooked(model) as light:
        return [_light_outcome(light, model, arguments_at, size) for size in sizes]


@contextmanager
def _hooked(model: nn.Module) -> Iterator[LightPass]:
    """The light pass, hooked once for every size it runs."""
    light = LightPass({id(module): name for name, module in model.named_modules()})
    with observed(model, light.before, light.after, with_kwargs=True):
        yield light


def _light_outcome(light: LightPass, model: nn.Module, arguments_at: ArgumentsAt, size: Size) -> Outcome:
    args, kwargs = arguments_at(size)
    kind, place = first_break(light, model, args, kwargs)
    if kind == BreakKind.INTERRUPTED:
        raise KeyboardInterrupt
    return Outcome(size, BreakKind(kind) if kind else None, place)


def _on_meta(model: nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return bool(tensors) and all(tensor.device.type == "meta" for tensor in tensors)


def _wants_float_timestep(trace: Trace) -> bool:
    """As `api.trace_inputs`: the forward failed on an integer timestep (a model that wants float t)."""
    return any(brk.kind == "error" and ("Long" in brk.message or "dtype" in brk.message) for brk in trace.breaks)
