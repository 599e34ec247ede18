"""The Observer of a cost trace: the plain Observer's hooks and mode, with a meter beside them.

A subclass, so that a trace without `--cost` runs the plain Observer's per-op path untouched.
Every op must pass the mode to be counted, so torch's leaves never run outside it here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from shapetrace.tracing._torch_compat import NoFunctionMode
from shapetrace.tracing.cost.meter import CostMeter
from shapetrace.tracing.observer import Observer, tensors_in
from shapetrace.tracing.recorder import Recorder

_NO_FUNCTION_MODE = NoFunctionMode
BLOCK_DEPTH = 1
"""Calls of the model's own forward: the blocks checkpointing would wrap."""


class CostObserver(Observer):
    """Records shapes as Observer does, and charges each op's cost to the call it runs in."""

    def __init__(self, recorder: Recorder, first_break: bool, meter: CostMeter, *, meta: bool = True) -> None:
        super().__init__(recorder, first_break, meta=meta)
        self.meter = meter
        self.leaves_plainly = False

    def before(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        super().before(module, args)
        recorder = self.recorder
        # The model is call 0 on the stack: a block is the second entry.
        if len(recorder.stack) == BLOCK_DEPTH + 1 and recorder.calls[-1].module is module:
            with _NO_FUNCTION_MODE():
                self.meter.begin_call(recorder.stack[-1], tensors_in(args))

    def after(self, module: nn.Module, args: tuple[Any, ...], *rest: Any) -> None:
        recorder = self.recorder
        stack = recorder.stack
        call = stack[-1] if stack and recorder.calls[stack[-1]].module is module else None
        super().after(module, args, *rest)
        if call is None:
            return
        kwargs, output = rest if len(rest) == 2 else ({}, rest[-1])
        with _NO_FUNCTION_MODE():
            if kwargs and len(stack) == BLOCK_DEPTH:
                self.meter.begin_call(call, tensors_in(kwargs))
            self.meter.end_call(call, output, tensors_in)

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        output = super().__torch_function__(func, types, args, kwargs)
        self.meter.op(func, args, kwargs, output, self.recorder.current)
        return output
