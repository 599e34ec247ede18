"""The hooks' and the function mode's side of a trace: what each call and each op tells the Recorder.

Module hooks mark where calls begin and end; the TorchFunctionMode sees what hooks cannot:
the merges (`torch.cat`, `stack`, `+`) and the functions whose weights fix a channel count.
After a break it hands the next layer a stand-in of the shape that layer expects, so one
run reports every independent break. `tracer.py` installs all this and removes it again.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from shapetrace.records import BreakSide, SideRole
from shapetrace.tracing import broadcasts, metashapes
from shapetrace.tracing._torch_compat import NoFunctionMode, function_mode_depth, pop_function_mode, push_function_mode
from shapetrace.tracing.failures import FailedOp, error_name, is_internal, noted, witnessed
from shapetrace.tracing.geometry import RESAMPLING_FUNCTIONS, RESAMPLING_MODULES, function_resampling
from shapetrace.tracing.joins import Joins, side_role
from shapetrace.tracing.leaves import runs_plainly
from shapetrace.tracing.merges import (
    ADDITIONS,
    CONCATENATIONS,
    EXPECTATIONS,
    Expectation,
    channel_mismatch,
    concatenation,
    original,
    resize,
)
from shapetrace.tracing.recorder import MODEL_INPUT, PendingBreak, Recorder, Tag
from shapetrace.tracing.values import tensors_in


class StopTracing(Exception):  # noqa: N818 - a signal to unwind the forward, not an error
    """Raised inside the forward to stop at the first break (--first-break)."""


def provenance_rank(tensor: torch.Tensor, output: torch.Tensor) -> tuple[bool, int]:
    """How strongly a function's output comes from this input: first one of the output's own
    shape, then the largest. Attention makes its output the shape of its queries, whichever of
    the queries or a longer context (77 text tokens over an 8×8 map) holds more elements."""
    return tensor.shape == output.shape, tensor.numel()


class Observer(Joins, TorchFunctionMode):
    """The hooks and the function mode of one trace, sharing one Recorder."""

    def __init__(self, recorder: Recorder, first_break: bool, *, meta: bool = True) -> None:
        """`meta`: the forward runs on the meta device, where ops need shape functions.

        On a real device torch computes every op anyway, so calls skip the shape functions,
        and torch's own leaves run outside the mode (`shapetrace.leaves`).
        """
        super().__init__()
        self.recorder = recorder
        self.first_break = first_break
        self.stop_pending = False
        self.call: Callable[[Callable[..., Any], Sequence[Any], dict[str, Any]], Any] = (
            metashapes.call if meta else metashapes.call_torch
        )
        self.leaves_plainly = not meta
        self.suspended_at = -1
        """The call during which the mode is off the stack, or -1."""
        self.failure: FailedOp | None = None
        """The last op seen raising: what `failures.failure_kind` classifies a failed forward by."""
        self.bug: Exception | None = None
        """shapetrace's own error in a post-hook while the forward failed, which torch would only warn about."""

    # --- module hooks -----------------------------------------------------------------

    def before(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        # A global pre-hook sees positional arguments only; keyword tensors join at the end.
        recorder = self.recorder
        if id(module) not in recorder.names:
            return  # a module from outside the traced model
        # The hooks run inside the forward, under the mode: without this, each `.shape`
        # they read would be one more trip through __torch_function__.
        with NoFunctionMode():
            recorder.begin(module, tensors_in(args))
            if self.stop_pending:
                raise StopTracing  # the broken merge's consumer is known now: stop here
            if self.leaves_plainly and self.suspended_at < 0 and runs_plainly(module, args):
                self._suspend(recorder.stack[-1])

    def after(self, module: nn.Module, args: tuple[Any, ...], *rest: Any) -> None:
        # (kwargs, output) normally; torch's exception path calls global always-call hooks
        # without kwargs, as (module, args, output).
        kwargs, output = rest if len(rest) == 2 else ({}, rest[-1])
        # always_call hooks also run when the forward raised; then there is no output.
        if output is not None or sys.exc_info()[0] is None:
            self._after(module, args, kwargs, output, raised=False)
            return
        # The forward is failing. torch would turn an exception raised here into a warning, so
        # a bug of shapetrace's own is kept for the tracer to raise, and nothing more is recorded.
        unwinding = sys.exc_info()[1]
        if self.bug is not None or (unwinding is not None and is_internal(unwinding)):
            return
        try:
            self._after(module, args, kwargs, output, raised=True)
        except Exception as bug:  # noqa: BLE001 - raised by our own bookkeeping: kept, not lost
            self.bug = bug

    def _after(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any, raised: bool
    ) -> None:
        recorder = self.recorder
        if id(module) not in recorder.names:
            return
        if self.suspended_at >= 0 and self.suspended_at == recorder.current:
            # A leaf that ran without the mode: recorded before the mode returns to the stack.
            try:
                if raised:
                    self._witness(module, args, kwargs)
                if kwargs:
                    recorder.add_inputs(tensors_in(kwargs))
                recorder.end(tensors_in(output), raised)
            finally:
                self._resume()
            return
        with NoFunctionMode():
            if kwargs:
                recorder.add_inputs(tensors_in(kwargs))
            recorder.end(tensors_in(output), raised)

    def _witness(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The op that raised in a leaf that ran without the mode, as the mode would have seen it."""
        error = sys.exc_info()[1]
        if error is not None and (self.failure is None or self.failure.error is not error):
            self.failure = witnessed(module.forward, args, kwargs, error)

    def _suspend(self, call: int) -> None:
        """Take the mode off the stack while `call` runs (only where it is on top)."""
        if function_mode_depth() == 0:
            return
        top = pop_function_mode()
        if top is not self:  # the forward entered a mode of its own: leave the stack alone
            push_function_mode(top)
            return
        self.suspended_at = call

    def _resume(self) -> None:
        push_function_mode(self)
        self.suspended_at = -1

    def __exit__(self, *exc_info: Any) -> None:
        # A BaseException (Ctrl-C) skips torch's always-call hooks: put the mode back so
        # that leaving it pops this mode and nothing else.
        if self.suspended_at >= 0:
            self._resume()
        super().__exit__(*exc_info)  # type: ignore[no-untyped-call]

    def fail(self, error: BaseException, kind: str) -> None:
        """Record the exception that stopped the forward as a break at the innermost call."""
        recorder = self.recorder
        failed = [call.index for call in recorder.calls if call.status == "failed"]
        leaf = recorder.unwind()
        if failed:
            leaf = max(leaf, *failed)
        sides: tuple[BreakSide, ...] = ()
        if leaf >= 0:
            call = recorder.calls[leaf]
            sides = tuple(
                BreakSide(SideRole.INPUT, shape, producer)
                for shape, producer in zip(call.inputs, call.producers, strict=True)
            )
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        recorder.breaks.append(PendingBreak(leaf, kind, error_name(error), -1, sides, detail=detail))

    # --- function mode ----------------------------------------------------------------

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        try:
            return self._dispatch(func, types, args, kwargs or {})
        except Exception as error:
            self.failure = noted(self.failure, func, args, kwargs or {}, error)
            raise

    def _dispatch(self, func: Callable[..., Any], types: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        try:
            joins = func in CONCATENATIONS
            addition = func in ADDITIONS
            checked = func in EXPECTATIONS
        except TypeError:  # an unhashable stand-in another tool put in torch's place
            joins, addition, checked = False, False, False
        if joins:
            merge = concatenation(func, args, kwargs)
            return self._plain(func, args, kwargs) if merge is None else self._concatenate(func, merge)
        if addition:
            return self._add(func, args, kwargs)
        if checked:
            return self._checked(func, args, kwargs)
        if func is torch.arange and _wants_meta(kwargs) and not any(isinstance(a, torch.Tensor) for a in args):
            return _meta_arange(args, kwargs)
        if getattr(func, "__wrapped__", None) is not None and (unwrapped := _known_original(func)) is not func:
            return self.__torch_function__(unwrapped, types, args, kwargs)  # a functional another tool wrapped
        return self._plain(func, args, kwargs)

    def _derive(self, output: torch.Tensor, args: Sequence[Any]) -> None:
        """A plain function's output keeps the producer of its largest tagged input of its own shape,
        else of its largest tagged input (`provenance_rank`)."""
        recorder = self.recorder
        if recorder.tag_of(output) is not None:
            return  # in place, or a view returned as the same object
        best: Tag | None = None
        best_rank = (False, -1)
        for argument in args:
            for tensor in argument if isinstance(argument, (list, tuple)) else (argument,):
                if isinstance(tensor, torch.Tensor):
                    tag = recorder.tag_of(tensor)
                    if tag is not None and (rank := provenance_rank(tensor, output)) > best_rank:
                        best, best_rank = tag, rank
        if best is not None:
            recorder.inherit(output, best)

    def _checked(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        found = channel_mismatch(func, args, kwargs)
        if found is None or len(args) <= found.argument:
            return self._plain(func, args, kwargs)
        return self._stand_in(func, found, args, kwargs)

    def _stand_in(
        self, func: Callable[..., Any], found: Expectation, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Any:
        """Report a channel break (once per tensor) and run `func` on a stand-in of the expected size."""
        recorder = self.recorder
        received = args[found.argument]
        tag = recorder.tag_of(received)
        if tag is None:
            tag = recorder.set_tag(received, MODEL_INPUT)
        if tag.bad < 0:
            tag.bad = len(recorder.breaks)
            self._channel_break(func, found, received, tag)
        stand_in = resize(received, found.dim, found.expected)
        arguments = list(args)
        arguments[found.argument] = stand_in
        output = self.call(func, arguments, kwargs)
        if func in RESAMPLING_FUNCTIONS:
            self._record_resampling(func, arguments, kwargs, output)
        if isinstance(output, torch.Tensor):
            recorder.inherit(output, tag, bad=-1, merge=-1, downstream=True)
        return output

    def _channel_break(self, func: Callable[..., Any], found: Expectation, received: torch.Tensor, tag: Tag) -> None:
        recorder = self.recorder
        merge = recorder.merges[tag.merge] if tag.merge >= 0 else None
        if merge is not None and merge.dim == found.dim and sum(p.shape[found.dim] for p in merge.parts) == found.got:
            parts = merge.parts
            sides = tuple(BreakSide(side_role(p, parts), p.shape, p.producer, p.shape[found.dim]) for p in parts)
            layer = merge.target
        else:
            sides = (BreakSide(SideRole.INPUT, tuple(received.shape), tag.producer, found.got),)
            layer = -1
        name = broadcasts.operation_name(func)
        brk = PendingBreak(recorder.current, "channels", name, found.dim, sides, (found.expected,), layer=layer)
        recorder.breaks.append(brk)
        if self.first_break:
            raise StopTracing

    def _plain(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Any other op: torch (or a meta shape function), its outputs keeping their producer."""
        try:
            output = self.call(func, args, kwargs)
        except RuntimeError as error:
            mismatch = broadcasts.mismatch(func, args)
            output = None if mismatch is None else self._broadcast_break(func, args, kwargs, mismatch, error)
            if output is None:
                raise
            return output
        if _resamples(func):
            self._record_resampling(func, args, kwargs, output)
        if self.recorder.in_opaque_leaf:
            return output  # per-op Python work inside torch's leaves is what slows real-device traces
        if isinstance(output, torch.Tensor):
            self._derive(output, args)
        elif isinstance(output, (tuple, list)):
            for item in output:  # (attention, None) from nn.MultiheadAttention's fused path
                if isinstance(item, torch.Tensor):
                    self._derive(item, args)
        return output

    def _record_resampling(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], output: Any
    ) -> None:
        """The geometry of a pool, strided conv or interpolation, unless a resampling module records it."""
        recorder = self.recorder
        if recorder.stack and isinstance(recorder.calls[recorder.stack[-1]].module, RESAMPLING_MODULES):
            return  # read from the module's attributes once the forward is over
        with NoFunctionMode():
            record = function_resampling(func, args, kwargs, output, recorder.current, len(recorder.calls))
        if record is not None:
            recorder.resamplings.append(record)

    def _broadcast_break(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        mismatch: broadcasts.Mismatch,
        error: RuntimeError,
    ) -> Any:
        """An elementwise op whose operands do not broadcast, e.g. a custom norm's per-channel weight.

        The tagged operand (a feature map) is what the layer received; the other (a weight, or a
        map of fixed size) says what it expected. Returns the op's result on a stand-in, or None
        when neither operand is a tensor the trace knows.
        """
        recorder = self.recorder
        tags = [recorder.tag_of(args[mismatch.first]), recorder.tag_of(args[mismatch.second])]
        position, other = (
            (mismatch.first, mismatch.second) if tags[0] is not None else (mismatch.second, mismatch.first)
        )
        received, reference = args[position], args[other]
        tag = recorder.tag_of(received)
        if tag is None or received.dim() != mismatch.rank:
            return None
        if mismatch.channels(recorder.image_rank):
            expected = broadcasts.reference_size(reference, received, 1)
            return self._stand_in(func, Expectation(position, 1, expected, received.shape[1]), args, kwargs)
        reference_tag = recorder.tag_of(reference)
        consequence = reference_tag is not None and (reference_tag.downstream or reference_tag.bad >= 0)
        if tag.bad < 0 and not consequence:  # not a stand-in's size meeting the original: one break, not two
            tag.bad = len(recorder.breaks)
            sides = tuple(
                BreakSide(SideRole.INPUT, tuple(t.shape), recorder.producer_of(t)) for t in (received, reference)
            )
            detail = str(error).strip().splitlines()[0]
            brk = PendingBreak(recorder.current, "size", error_name(error), -1, sides, detail=detail)
            recorder.breaks.append(brk)
            self.stop_pending = self.first_break
        stand_in = received
        for dim in mismatch.dims:
            stand_in = resize(stand_in, dim, broadcasts.reference_size(reference, received, dim))
        arguments = list(args)
        arguments[position] = stand_in
        output = self.call(func, arguments, kwargs)
        if isinstance(output, torch.Tensor):
            recorder.inherit(output, tag, bad=-1, merge=-1, downstream=True)
        return output


def _known_original(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function a wrapper wraps, where the mode or the shape functions know it; else `func`."""
    unwrapped = original(func)
    known = unwrapped in CONCATENATIONS or unwrapped in ADDITIONS or unwrapped in EXPECTATIONS
    return unwrapped if known or unwrapped in metashapes.META_SHAPES else func


def _resamples(func: Callable[..., Any]) -> bool:
    """Whether `func` is a pool, strided conv or interpolation whose geometry the trace records."""
    try:
        return func in RESAMPLING_FUNCTIONS
    except TypeError:  # an unhashable stand-in another tool put in torch's place
        return False


def _wants_meta(kwargs: dict[str, Any]) -> bool:
    device = kwargs.get("device")
    if device is None:
        return False
    try:
        return torch.device(device).type == "meta"
    except (RuntimeError, TypeError):
        return False  # not a device: torch.arange says so itself


def _meta_arange(args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    """torch.arange on meta from its arguments alone (torch's own meta kernel imports sympy)."""
    if len(args) == 1 and "end" not in kwargs:
        values = {"end": args[0]}
    else:
        values = dict(zip(("start", "end", "step"), args, strict=False))
    values.update({key: kwargs[key] for key in ("start", "end", "step") if key in kwargs})
    start, end, step = values.get("start", 0), values["end"], values.get("step", 1)
    length = max(0, math.ceil((end - start) / step))
    integral = all(isinstance(n, int) for n in (start, end, step))
    dtype = kwargs.get("dtype") or (torch.int64 if integral else torch.get_default_dtype())
    return torch.empty(length, dtype=dtype, device="meta")
