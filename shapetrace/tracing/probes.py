"""The input sizes a model accepts, found by running it at other sizes on the meta device.

No formula for any one architecture: the model itself is run (shapes only, no compute) at
sizes around the requested one, and the valid ones reveal the multiple H and W must be and
the smallest that works. Square sizes are probed; the rule is then applied to H and W.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from shapetrace.records import SizeRule, Trace
from shapetrace.tracing.light_pass import LightPass, first_break
from shapetrace.tracing.tracer import observed

ArgumentsAt = Callable[[int, int], tuple[Sequence[Any], dict[str, Any]]]
"""Builds the model's (args, kwargs) for spatial size H×W."""

MAX_PROBES = 160  # beyond this the model follows no simple rule within reach


def find_size_rule(model: nn.Module, arguments_at: ArgumentsAt, requested: tuple[int, int]) -> SizeRule | None:
    """The multiple and minimum of the sizes the model accepts near `requested`; None if none run.

    Probes sizes upward from the requested one until two valid sizes appear, and downward
    until one does; the gaps between them give the multiple (every size skipped in between
    failed, which confirms it), and multiples of it give the minimum.
    """
    # The sweep's light pass, hooked once for every probe: shapes only, stopping at the first break.
    light = LightPass({id(module): name for name, module in model.named_modules()})
    with observed(model, light.before, light.after, with_kwargs=True):
        return _search(lambda size: first_break(light, model, *arguments_at(size, size)) == ("", ""), max(requested))


def _search(valid: Callable[[int], bool], requested: int) -> SizeRule | None:
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
    exact = below is None or below % multiple == above[0] % multiple
    nearest_below = below if below is not None and below != requested else None
    nearest = tuple(s for s in (nearest_below, above[0] if below != requested else None) if s is not None)
    return SizeRule(multiple=multiple, minimum=minimum, nearest=nearest, exact=exact)


def with_size_rule(trace: Trace, model: nn.Module, arguments_at: ArgumentsAt) -> Trace:
    """The trace with its size rule and size-break fixes, when a size broke or was floored."""
    # A size break, a floored size, or an assertion (models that check their input size first).
    if not any(brk.kind == "size" or brk.op == "AssertionError" for brk in trace.breaks) and not trace.warnings:
        return trace
    spatial = next((shape[2:] for shape in trace.inputs if len(shape) == 4), None)
    if spatial is None:
        return trace
    try:
        rule = find_size_rule(model, arguments_at, (spatial[0], spatial[1]))
    except KeyboardInterrupt:
        return trace  # Ctrl-C during the search: the trace is still worth printing
    if rule is None:
        return trace
    if spatial[0] != spatial[1]:
        nearest = sorted({size for extent in spatial for size in _nearest(rule, extent)})
        rule = dataclasses.replace(rule, nearest=tuple(nearest))
    return dataclasses.replace(trace, size_rule=rule)


def _nearest(rule: SizeRule, extent: int) -> tuple[int, ...]:
    """The valid sizes around one extent under the rule."""
    if extent % rule.multiple == 0 and extent >= rule.minimum:
        return ()
    below = extent // rule.multiple * rule.multiple
    above = below + rule.multiple
    return tuple(size for size in (below, above) if size >= rule.minimum)
