"""Whether a model fits a memory budget, and the largest batch and square size that do.

Memory grows with the batch almost exactly linearly, and with the size roughly as the
number of pixels (attention's scores as its square). The search guesses from the traced
estimate, then confirms on meta: the guess and its neighbour are traced with cost, and a
guess that misses is corrected by the secant through the estimates traced so far. Whether
the model accepts a size at all is asked of the sweep's light pass, which is cheaper than a
trace. A handful of traces in all.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from shapetrace.records import MAX_EXTENT, Budget, CostMode, CostOptions, CostSummary, Trace
from shapetrace.tracing.light_pass import LightPass, first_break
from shapetrace.tracing.tracer import observe, observed

CostAt = Callable[[int, int], CostSummary | None]
"""The cost of a trace at (batch, square size); None where the forward broke there."""
ArgumentsAt = Callable[[int, int, int], tuple[Sequence[Any], dict[str, Any]]]
"""The model's (args, kwargs) at (batch, height, width), on meta."""

MAX_TRACES = 8
"""Cost traces one search may take; the best confirmed answer stands after them."""
MAX_SIZE_STEPS = 256
"""Sizes tried around a guess for one the model accepts."""


def estimate(cost: CostSummary, mode: CostMode) -> int:
    """The whole-model estimate a verdict in `mode` uses."""
    return cost.train_peak_bytes if mode == CostMode.TRAIN else cost.inference_peak_bytes


def fixed_bytes(cost: CostSummary, mode: CostMode) -> int:
    """The part of the estimate that no batch or size changes: the model and its training state."""
    state = cost.param_bytes + cost.buffer_bytes
    return state + cost.gradient_bytes + cost.optimizer_bytes if mode == CostMode.TRAIN else state


def with_budget(trace: Trace, model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> Trace:
    """The cost trace with its budget verdict, searched on `model` (on meta) with arguments like these.

    Unchanged without a budget, or when the trace broke (a broken model fits no size).
    """
    if trace.cost is None or trace.cost.options.budget is None or not trace.ok:
        return trace
    options = trace.cost.options
    assert options.budget is not None
    found = find_budget(trace, options.budget, options.mode, model, resized_arguments(args, kwargs))
    return dataclasses.replace(trace, cost=dataclasses.replace(trace.cost, budget=found))


def find_budget(trace: Trace, budget: int, mode: CostMode, model: nn.Module, arguments_at: ArgumentsAt) -> Budget:
    """The verdict for `trace`, and the largest batch and size within `budget` bytes.

    Args:
        trace: a cost trace at the batch and size the user asked for.
        budget: bytes available.
        mode: which estimate must fit.
        model: the model on meta, for the traces of the search.
        arguments_at: the model's arguments at other batches and sizes.
    """
    assert trace.cost is not None
    options = CostOptions(mode, trace.cost.options.optimizer, trace.cost.options.checkpointing)
    batch, size, axes = _batch_and_size(trace)

    def cost_at(batch: int, size: int) -> CostSummary | None:
        args, kwargs = arguments_at(batch, size, size)
        traced = observe(model, args, kwargs, cost=options)
        return traced.cost if traced.ok else None

    fits = estimate(trace.cost, mode) <= budget
    largest_batch = largest_batch_at(trace.cost, batch, size, budget, mode, cost_at)
    largest_size = largest_size_at(
        trace.cost, batch, size, budget, mode, cost_at, _acceptor(model, arguments_at, batch), axes=axes
    )
    return Budget(budget, mode, fits, largest_batch, largest_size)


def _batch_and_size(trace: Trace) -> tuple[int, int, int]:
    """The batch, the largest spatial extent and the number of spatial axes of the image input."""
    image = next((shape for shape in trace.inputs if len(shape) >= 3), None)  # a 1-D signal (B, C, L) too
    if image is None:
        first = trace.inputs[0] if trace.inputs and trace.inputs[0] else (1,)
        return first[0], 0, 0
    return image[0], max(image[2:]), len(image) - 2


def largest_batch_at(cost: CostSummary, batch: int, size: int, budget: int, mode: CostMode, cost_at: CostAt) -> int:
    """The largest batch whose estimate fits at this size; 0 when not even batch 1 does."""
    fixed = fixed_bytes(cost, mode)
    points = {batch: estimate(cost, mode)}

    def fits(candidate: int) -> bool:
        if candidate not in points:
            traced = cost_at(candidate, size)
            points[candidate] = estimate(traced, mode) if traced is not None else budget + 1
        return points[candidate] <= budget

    def guess() -> int:
        # The line through the two largest batches traced (through batch 0 and the fixed part at first).
        known = sorted(points.items())
        (low, low_bytes), (high, high_bytes) = [(0, fixed), *known][-2:]
        per_sample = max((high_bytes - low_bytes) / max(high - low, 1), 1.0)
        return max(0, min(MAX_EXTENT, math.floor(high + (budget - high_bytes) / per_sample)))

    best = 0
    for _ in range(MAX_TRACES):
        candidate = guess()
        if candidate < 1:
            return 0 if not fits(1) else max(best, 1)
        if fits(candidate):
            best = max(best, candidate)
            if candidate >= MAX_EXTENT or not fits(candidate + 1):
                return best
        elif candidate - 1 >= 1 and fits(candidate - 1):
            return max(best, candidate - 1)
    return best


def largest_size_at(
    cost: CostSummary,
    batch: int,
    size: int,
    budget: int,
    mode: CostMode,
    cost_at: CostAt,
    accepts: Callable[[int], bool],
    *,
    axes: int = 2,
) -> int:
    """The largest square size the model accepts whose estimate fits at this batch; 0 if none.

    `axes`: the input's spatial axes, over which memory grows as the size to that power.
    """
    if size < 1:
        return 0
    fixed = fixed_bytes(cost, mode)
    points: dict[int, int] = {}

    def fits(candidate: int) -> bool:
        if candidate not in points:
            traced = cost_at(batch, candidate)
            points[candidate] = estimate(traced, mode) if traced is not None else budget + 1
        return points[candidate] <= budget

    def guess(around: int, varying: int) -> int:
        # Memory beyond the fixed part grows with the pixels: scale the side by the axes-th root.
        if varying <= 0:
            return MAX_EXTENT
        scale = math.pow(max(budget - fixed, 0) / varying, 1 / max(axes, 1))
        return max(1, min(MAX_EXTENT, math.floor(around * scale)))

    best, ceiling = 0, MAX_EXTENT + 1
    candidate = _accepted_below(guess(size, estimate(cost, mode) - fixed), accepts)
    for _ in range(MAX_TRACES):
        if candidate is None or candidate >= ceiling:
            return best
        if fits(candidate):
            best = max(best, candidate)
            above = _accepted_above(candidate, accepts, ceiling)
            if above is None or not fits(above):
                return best
            best = above
            candidate = _accepted_below(max(guess(above, points[above] - fixed), above + 1), accepts)
        else:
            ceiling = candidate
            lower = guess(candidate, points[candidate] - fixed)
            candidate = _accepted_below(min(lower, candidate - 1), accepts)
    return best


def _accepted_below(size: int, accepts: Callable[[int], bool]) -> int | None:
    for candidate in range(size, max(size - MAX_SIZE_STEPS, 0), -1):
        if accepts(candidate):
            return candidate
    return None


def _accepted_above(size: int, accepts: Callable[[int], bool], ceiling: int) -> int | None:
    for candidate in range(size + 1, min(size + MAX_SIZE_STEPS, ceiling, MAX_EXTENT + 1)):
        if accepts(candidate):
            return candidate
    return None


def _acceptor(model: nn.Module, arguments_at: ArgumentsAt, batch: int) -> Callable[[int], bool]:
    """Whether the model runs at a square size without a break, by the sweep's light pass."""
    light = LightPass({id(module): name for name, module in model.named_modules()})
    answers: dict[int, bool] = {}

    def accepts(size: int) -> bool:
        if size not in answers:
            args, kwargs = arguments_at(batch, size, size)
            with observed(model, light.before, light.after):
                answers[size] = first_break(light, model, args, kwargs) == ("", "")
        return answers[size]

    return accepts


def resized_arguments(args: Sequence[Any], kwargs: dict[str, Any]) -> ArgumentsAt:
    """Arguments like `args` and `kwargs`, on meta, at another batch and spatial size.

    The first tensor with spatial dims takes the new H×W (a 1-D signal its length `height`, a
    volume `height` on every axis: the searches ask for squares); every tensor whose first dim
    is the batch takes the new batch; anything else is passed as it was.
    """
    image = next(
        (value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor) and value.dim() >= 3), None
    )
    batch = image.shape[0] if image is not None else None

    def resized(value: Any, new_batch: int, height: int, width: int) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        shape = list(value.shape)
        if value is image:
            shape[2:] = [height, width] if len(shape) == 4 else [height] * (len(shape) - 2)
        if shape and shape[0] == batch:
            shape[0] = new_batch
        return torch.empty(shape, dtype=value.dtype, device="meta")

    def arguments_at(new_batch: int, height: int, width: int) -> tuple[Sequence[Any], dict[str, Any]]:
        return (
            [resized(value, new_batch, height, width) for value in args],
            {name: resized(value, new_batch, height, width) for name, value in kwargs.items()},
        )

    return arguments_at
