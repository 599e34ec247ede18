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

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from shapetrace import metashapes
from shapetrace.checks import meta_concatenate
from shapetrace.diagnosis import explain
from shapetrace.records import SizeRule, Trace
from shapetrace.tracer import observed

ArgumentsAt = Callable[[int, int], tuple[Sequence[Any], dict[str, Any]]]
"""Builds the model's (args, kwargs) for spatial size H×W."""

MAX_PROBES = 160  # beyond this the model follows no simple rule within reach


class _Probe(TorchFunctionMode):
    """Run a forward as cheaply as possible; raise on any disagreement, as torch would on a device."""

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in (torch.cat, torch.concat, torch.concatenate, torch.stack):
            return _concatenate(func, args, kwargs)
        return metashapes.call(func, args, kwargs)


def _concatenate(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    tensors = list(args[0] if args else kwargs.get("tensors", ()))
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    metas = tensors and all(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in tensors)
    if not metas or len({t.dim() for t in tensors}) != 1 or not isinstance(dim, int):
        return func(*args, **kwargs)
    stack = func is torch.stack
    dim %= tensors[0].dim() + (1 if stack else 0)
    first = tensors[0].shape
    for tensor in tensors[1:]:
        if any(size != first[d] for d, size in enumerate(tensor.shape) if stack or d != dim):
            raise RuntimeError(f"Sizes of tensors must match: {tuple(first)} and {tuple(tensor.shape)}")
    return meta_concatenate(tensors, dim, stack)


def runs_at(model: nn.Module, arguments_at: ArgumentsAt, height: int, width: int) -> bool:
    """True when the model's forward completes at H×W (on meta: shapes only)."""
    args, kwargs = arguments_at(height, width)
    try:
        with torch.no_grad(), _Probe():
            model(*args, **kwargs)
    except Exception:  # noqa: BLE001 - any failure means this size does not work
        return False
    return True


def find_size_rule(model: nn.Module, arguments_at: ArgumentsAt, requested: tuple[int, int]) -> SizeRule | None:
    """The multiple and minimum of the sizes the model accepts near `requested`; None if none run.

    Probes sizes upward from the requested one until two valid sizes appear, and downward
    until one does; the gaps between them give the multiple (every size skipped in between
    failed, which confirms it), and multiples of it give the minimum.
    """
    with observed(model):
        return _search(lambda size: runs_at(model, arguments_at, size, size), max(requested))


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
    return explain(dataclasses.replace(trace, size_rule=rule))


def _nearest(rule: SizeRule, extent: int) -> tuple[int, ...]:
    """The valid sizes around one extent under the rule."""
    if extent % rule.multiple == 0 and extent >= rule.minimum:
        return ()
    below = extent // rule.multiple * rule.multiple
    above = below + rule.multiple
    return tuple(size for size in (below, above) if size >= rule.minimum)
