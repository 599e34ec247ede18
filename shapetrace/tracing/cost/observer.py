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
from shapetrace.tracing.failures import noted
from shapetrace.tracing.observer import Observer
from shapetrace.tracing.recorder import Recorder
from shapetrace.tracing.values import tensors_in

_NO_FUNCTION_MODE = NoFunctionMode
BLOCK_DEPTH = 1
"""Calls of the model's own forward: the blocks checkpointing would wrap."""


class CostObserver(Observer):
    """Records shapes as Observer does, and charges each op's cost to the call it runs in."""

    def __init__(self, recorder: Recorder, first_break: bool, meter: CostMeter, *, meta: bool = True) -> None:
        super().__init__(recorder, first_break, meta=meta)
        self.meter = meter
        self.leaves_plainly = False

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        try:  # Observer.__torch_function__ written out: one frame less on every op
            output = self._dispatch(func, types, args, kwargs)
        except Exception as error:
            self.failure = noted(self.failure, func, args, kwargs, error)
            raise
        stack = self.recorder.stack
        call = stack[-1] if stack else -1
        meter = self.meter
        try:
            handler = meter.handlers.get(func)
        except TypeError:  # an unhashable stand-in another tool put in torch's place
            handler = None
        if handler is None or not handler(meter, args, kwargs, output, call):
            meter.op(func, args, kwargs, output, call)
        return output


class CheckpointingObserver(CostObserver):
    """A CostObserver that also notes each block's inputs, which checkpointing keeps.

    Only a `--checkpointing` trace needs them: the hooks of the others stay the plain Observer's.
    """

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
            return  # keyword tensors: known only now
        kwargs = rest[0] if len(rest) == 2 else {}
        if kwargs and len(stack) == BLOCK_DEPTH:
            with _NO_FUNCTION_MODE():
                self.meter.begin_call(call, tensors_in(kwargs))
