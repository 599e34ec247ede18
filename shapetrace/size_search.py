"""The input sizes a model accepts: read from the trace's resampling records, confirmed on meta.

The analysis derives an exact rule per axis from one trace (`analysis.size_rules`); here a
handful of traces at other sizes confirm it: the nearest valid sizes it offers, a size it
refuses, and a size of another residue it accepts. Where the records cannot tell (an op the
tracer does not record, a crop, an assertion before any layer) or a probe disagrees, sizes
are probed one by one instead, square sizes around the requested one, as before.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from shapetrace.analysis.size_rules import Derived, derive_size_rule, invalid_near
from shapetrace.minimum import smallest_confirmed
from shapetrace.records import AxisRule, BreakKind, Shape, SizeRule, Trace
from shapetrace.tracing.light_pass import LightPass, first_break
from shapetrace.tracing.tracer import collector_paused, observe, observed

ArgumentsAt = Callable[[Shape], tuple[Sequence[Any], dict[str, Any]]]
"""Builds the model's (args, kwargs) for one spatial size (one extent per axis)."""

MAX_PROBES = 160  # beyond this the model follows no simple rule within reach
_SIZE_KINDS = (BreakKind.SIZE, BreakKind.ERROR, BreakKind.ORDER)
"""Breaks a size can cause; a channel break happens at every size alike."""


class ProbesUnavailable(Exception):  # noqa: N818 - a reason to skip probing, reported as unverified fixes
    """The model cannot be traced at other sizes or with fixes applied."""


class Prober:
    """Traces of one meta model at other sizes, each size traced once (light passes where they tell)."""

    def __init__(self, model: Callable[[], nn.Module], arguments_at: ArgumentsAt, *, light: bool = False) -> None:
        """`model` builds the meta model on first use (a copy, or the user's own model if on meta).

        `light`: `accepts` asks a light pass first, where no full trace at that size will be
        wanted later (a sweep's probes; a trace's are traced again to verify its fixes).
        """
        self._build: Callable[[], nn.Module] | None = model
        self._probe_lightly = light
        self._model: nn.Module | None = None
        self.arguments_at = arguments_at
        self.traces: dict[Shape, Trace] = {}
        self._light: LightPass | None = None

    @property
    def model(self) -> nn.Module:
        """The meta model, built on first use.

        Raises:
            ProbesUnavailable: the model cannot be copied to meta (probing needs it there).
        """
        if self._model is None:
            if self._build is None:
                raise ProbesUnavailable("the model could not be copied to the meta device")
            build, self._build = self._build, None
            try:
                self._model = build()
            except Exception as error:  # noqa: BLE001 - any model deepcopy may refuse; then nothing is probed
                raise ProbesUnavailable(f"the model could not be copied to the meta device: {error}") from None
        return self._model

    def trace_at(self, size: Shape) -> Trace:
        if size not in self.traces:
            args, kwargs = self.arguments_at(size)
            self.traces[size] = observed_or_interrupted(self.model, args, kwargs)
        return self.traces[size]

    def accepts(self, size: Shape) -> bool:
        """Whether the model runs at `size` without a break a size can cause.

        With `light`, a light pass answers first (cheaper than a trace): no break, or a break
        a size causes, is the answer; any other first break (a channel mismatch, which a trace
        steps over) leaves it to a full trace.
        """
        if self._probe_lightly and size not in self.traces:
            kind = self._first_break(size)
            if kind == "" or kind in _SIZE_KINDS:
                return kind == ""
        return size_aligned(self.trace_at(size))

    def _first_break(self, size: Shape) -> str:
        if self._light is None:
            self._light = LightPass({id(module): name for name, module in self.model.named_modules()})
        light, model = self._light, self.model
        args, kwargs = self.arguments_at(size)
        with collector_paused(meta=True), observed(model, light.before, light.after, with_kwargs=True):
            kind, _ = first_break(light, model, args, kwargs)
        return kind


def observed_or_interrupted(model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> Trace:
    """`observe`, raising KeyboardInterrupt again where Ctrl-C stopped it: the analysis stops too."""
    trace = observe(model, args, kwargs)
    if any(brk.kind == BreakKind.INTERRUPTED for brk in trace.breaks):
        raise KeyboardInterrupt
    return trace


def size_aligned(trace: Trace) -> bool:
    """Whether the trace ran without a break a size can cause; a forward that read values on meta
    never ran its layers, so it says nothing of its size and counts as not aligned."""
    return not any(
        brk.kind in _SIZE_KINDS or brk.kind == BreakKind.META or brk.op == "AssertionError" for brk in trace.breaks
    )


def with_size_rule(trace: Trace, prober: Prober) -> Trace:
    """The trace with its size rule, when a size broke or was floored.

    Raises:
        KeyboardInterrupt: Ctrl-C stopped a probe.
    """
    # A size break, a floored size, or an assertion (models that check their input size first).
    if not any(brk.kind in _SIZE_KINDS or brk.op == "AssertionError" for brk in trace.breaks) and not trace.warnings:
        return trace
    rule = size_rule_of(trace, prober)
    return trace if rule is None else dataclasses.replace(size_dependent(trace, rule), size_rule=rule)


def size_dependent(trace: Trace, rule: SizeRule) -> Trace:
    """The trace with its failures of no known kind turned size breaks, where the size decides them.

    A model's own check (`if h % 32: raise ValueError(...)`) or an op without a shape function
    fails with a kind the tracer cannot tell from the exception (never read from its message).
    When the rule refuses the traced size and sizes near it run, the size is what failed.
    """
    image = next((shape for shape in trace.inputs if len(shape) >= 3), None)
    if image is None or not rule.nearest or rule.accepts(tuple(image[2:])):
        return trace
    breaks = tuple(
        dataclasses.replace(brk, kind=BreakKind.SIZE) if brk.kind == BreakKind.ERROR else brk for brk in trace.breaks
    )
    return dataclasses.replace(trace, breaks=breaks)


def size_rule_of(trace: Trace, prober: Prober) -> SizeRule | None:
    """The sizes the traced model accepts, per axis, whether or not the traced size broke.

    Read from the trace's resampling records and confirmed by a few probes where every op is
    recognised; probed size by size otherwise. None when the input has no spatial axes, or no
    size within reach runs.

    Raises:
        KeyboardInterrupt: Ctrl-C stopped a probe.
    """
    image = next((shape for shape in trace.inputs if len(shape) >= 3), None)
    if image is None or any(brk.kind == BreakKind.META for brk in trace.breaks):
        return None  # no spatial input, or a forward that read values on meta: its layers never ran
    derived = derive_size_rule(trace)
    if derived is not None and _consistent(derived, trace):
        if derived.rule is None:
            return None  # no size aligns the merges: the causes say why
        if _confirmed(derived.rule, derived.requested, prober):
            rule = smallest_confirmed(derived.rule, derived.requested, prober)
            if rule is not None:
                return rule
    return find_size_rule(prober.model, prober.arguments_at, tuple(image[2:]))


def exact_size_rule(trace: Trace, prober: Prober) -> SizeRule | None:
    """The rule read from the trace's records and confirmed by probes; None where only probing could tell.

    Raises:
        KeyboardInterrupt: Ctrl-C stopped a probe.
    """
    derived = derive_size_rule(trace)
    if derived is None or derived.rule is None or not _consistent(derived, trace):
        return None
    if not _confirmed(derived.rule, derived.requested, prober):
        return None
    return smallest_confirmed(derived.rule, derived.requested, prober)


def _consistent(derived: Derived, trace: Trace) -> bool:
    """The rule must refuse the traced size exactly when the trace broke there for its size."""
    accepted = derived.rule is not None and derived.rule.accepts(derived.requested)
    return accepted == size_aligned(trace)


def _confirmed(rule: SizeRule, requested: Shape, prober: Prober) -> bool:
    """At most four traces: the nearest valid sizes (or a valid neighbour), one refused size, one of another residue."""
    accepted = [size for size in rule.nearest if size != requested]
    if not accepted:
        # The traced size is valid and the rule offers no other: probe the next sizes it accepts
        # above and below, or the rule would stand unprobed while the model's own check
        # (`if h % 8: raise`) or a map of fixed size refuses most of them.
        accepted = _next_accepted(rule.axes, requested)
    refused = invalid_near(rule.axes, rule.nearest[-1] if rule.nearest else requested)
    other = _another_residue(rule.axes, rule.nearest[-1] if rule.nearest else requested)
    if other is not None and other not in accepted:
        accepted.append(other)
    if not all(prober.accepts(size) for size in accepted):
        return False
    return refused is None or not prober.accepts(refused)


def _next_accepted(rules: tuple[AxisRule, ...], requested: Shape) -> list[Shape]:
    """The nearest sizes the rule accepts strictly above and below `requested`, every axis moved at once."""
    found = []
    for step in (1, -1):
        size = [_next_extent(rule, extent, step) for rule, extent in zip(rules, requested, strict=True)]
        if all(extent is not None for extent in size):
            found.append(tuple(extent for extent in size if extent is not None))
    return found


def _next_extent(rule: AxisRule, extent: int, step: int) -> int | None:
    reach = rule.modulus + max(0, rule.minimum - extent)  # one period past the minimum at most
    for distance in range(1, reach + 1):
        candidate = extent + step * distance
        if candidate < 1:
            return None
        if rule.accepts(candidate):
            return candidate
    return None


def _another_residue(rules: tuple[AxisRule, ...], size: Shape) -> Shape | None:
    """A valid size whose extents have other residues than `size`'s, where the rule allows one.

    A missing merge constraint shows there: a rule that wrongly accepts every size is
    caught by a size next to the one traced.
    """
    changed = list(size)
    for position, rule in enumerate(rules):
        for extent in range(size[position] + 1, size[position] + 2 * rule.modulus + 1):
            if rule.accepts(extent) and extent % rule.modulus != size[position] % rule.modulus:
                changed[position] = extent
                break
    return tuple(changed) if tuple(changed) != size else None


def find_size_rule(model: nn.Module, arguments_at: ArgumentsAt, requested: Shape) -> SizeRule | None:
    """The multiple and minimum of the sizes the model accepts near `requested`; None if none run.

    The fallback where the records cannot tell: probes square (cubic) sizes upward from the
    requested one until two valid sizes appear, and downward until one does; the gaps between
    them give the multiple, and multiples of it give the minimum.
    """
    # The sweep's light pass, hooked once for every probe: shapes only, stopping at the first break.
    light = LightPass({id(module): name for name, module in model.named_modules()})
    axes = len(requested)

    def valid(size: int) -> bool:
        return first_break(light, model, *arguments_at((size,) * axes)) == ("", "")

    with observed(model, light.before, light.after, with_kwargs=True):
        found = _search(valid, max(requested))
        if found is None:
            found = _search_below(valid, max(requested))
    if found is None:
        return None
    multiple, minimum, nearest, maximum = found
    rules = tuple(AxisRule(axis, multiple, (minimum % multiple,), minimum, maximum) for axis in range(2, 2 + axes))
    # Probed square sizes say nothing of residues a multiple misses (sizes 28, 31 and 32 all
    # valid give a multiple of 1): a guess, marked as one.
    return SizeRule(rules, tuple((size,) * axes for size in nearest), exact=False)


Found = tuple[int, int, tuple[int, ...], int | None]
"""(multiple, minimum, nearest sizes, maximum or None)."""


def _search(valid: Callable[[int], bool], requested: int) -> Found | None:
    probes = 0
    above: list[int] = []
    size = requested
    while len(above) < 2 and probes < MAX_PROBES:
        size += 1
        probes += 1
        if valid(size):
            above.append(size)
    below = next((s for s in range(requested, max(requested - MAX_PROBES // 2, 0), -1) if valid(s)), None)
    if len(above) < 2:
        return None
    found = ([below] if below is not None else []) + above
    multiple = math.gcd(*(b - a for a, b in itertools.pairwise(found)))
    minimum = next((k * multiple for k in range(1, above[0] // multiple + 1) if valid(k * multiple)), above[0])
    nearest_below = below if below is not None and below != requested else None
    nearest = tuple(s for s in (nearest_below, above[0] if below != requested else None) if s is not None)
    return multiple, minimum, nearest or (requested,), None


def _search_below(valid: Callable[[int], bool], requested: int) -> Found | None:
    """Sizes that run only below `requested`, none within reach above: a model built for one size or a few.

    `_search` found no two valid sizes above; the valid ones below, down to the first size that
    fails after them, give the largest size, the smallest, and the step between them.
    """
    low = max(requested - MAX_PROBES // 2, 0)
    largest = next((size for size in range(requested, low, -1) if valid(size)), None)
    if largest is None:
        return None
    found = [largest]
    for size in range(largest - 1, max(largest - MAX_PROBES // 2, 0), -1):
        if valid(size):
            found.append(size)
        elif found[-1] - size > 2 * (found[0] - found[-1] + 1):
            break  # well past the last valid size: the band has ended
    multiple = math.gcd(*(a - b for a, b in itertools.pairwise(found))) if len(found) > 1 else 1
    nearest = (largest,) if largest != requested else (requested,)
    return multiple, found[-1], nearest, largest
