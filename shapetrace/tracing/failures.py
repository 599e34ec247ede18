"""Whose failure is it: the model's (a break, and which kind) or shapetrace's own (a bug).

Both tracers (the Observer and the sweep's light pass) ask here, and nowhere else:

- `is_internal(error)`: raised by shapetrace's own tracing code, not by the model or by
  torch on the model's behalf. Its innermost frame is in `shapetrace.tracing`, and it is
  neither a ShapeMismatch (a shape function raising torch's error on purpose) nor torch's
  own error surfacing through `metashapes.call_torch`, the one frame where the tracers hand
  an op to torch. Such an error becomes an InternalError, never a break.
- `failure_kind(error, failed)`: the BreakKind of a real model failure, from the exception's
  type and from the checks the shape functions make, never from its message.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from shapetrace.errors import InternalError
from shapetrace.records import BreakKind
from shapetrace.tracing.metashapes import META_SHAPES, ShapeMismatch, call_torch
from shapetrace.tracing.values import tensors_in

__all__ = ["FailedOp", "error_name", "failure_kind", "internal_error", "is_internal", "noted", "witnessed"]

_TRACING = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_CALL_SITES = frozenset({call_torch.__code__})

VALUE_READS = frozenset(
    {
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.numpy,
        torch.Tensor.__bool__,
        torch.Tensor.__int__,
        torch.Tensor.__float__,
        torch.Tensor.__index__,
        torch.Tensor.__format__,
        torch.allclose,
        torch.equal,
        torch.repeat_interleave,
        torch.Tensor.repeat_interleave,
    }
)
"""Ops that need a tensor's values (`.item()`, `if tensor:`, `int(t)`, a count of repeats):
on meta they fail, each in its own words, because meta tensors have none."""


@dataclasses.dataclass(frozen=True, slots=True)
class FailedOp:
    """An op a TorchFunctionMode saw raise: the function, its arguments, and the exception."""

    func: Callable[..., Any]
    args: Sequence[Any]
    kwargs: dict[str, Any]
    error: BaseException


def noted(
    current: FailedOp | None,
    func: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    error: BaseException,
) -> FailedOp:
    """The failed op to keep: the first (innermost) op this exception passed through."""
    if current is not None and current.error is error:
        return current
    return FailedOp(func, args, kwargs, error)


def is_internal(error: BaseException) -> bool:
    """Whether shapetrace's own tracing code raised `error` (a bug), rather than the model or torch.

    KeyboardInterrupt is never a bug: Ctrl-C lands wherever the interpreter happens to be.
    """
    if not isinstance(error, Exception) or isinstance(error, ShapeMismatch):
        return False
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    code = traceback.tb_frame.f_code
    return os.path.abspath(code.co_filename).startswith(_TRACING) and code not in _TORCH_CALL_SITES


def internal_error(error: BaseException) -> InternalError:
    """The InternalError to raise for a bug of shapetrace's (`raise internal_error(e) from e`)."""
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return InternalError(f"{type(error).__name__}: {detail}" if detail else type(error).__name__)


def error_name(error: BaseException) -> str:
    """The exception type a break names: torch's own for a ShapeMismatch (RuntimeError, ValueError)."""
    return error.torch_type.__name__ if isinstance(error, ShapeMismatch) else type(error).__name__


def failure_kind(error: BaseException, failed: FailedOp | None) -> BreakKind:
    """The kind of break a model's failure is.

    Args:
        error: what stopped the forward (not a bug of shapetrace's: see `is_internal`).
        failed: the op the tracer's function mode saw raise, if it saw one.

    Returns:
        INTERRUPTED for Ctrl-C; a ShapeMismatch's own kind; META where an op needed values (or
        a kernel) meta tensors lack; for torch's own error from an op with a shape function,
        the kind that function gives on meta stand-ins of the op's arguments; else ERROR.
    """
    if isinstance(error, KeyboardInterrupt):
        return BreakKind.INTERRUPTED
    if isinstance(error, ShapeMismatch):
        return error.kind
    if failed is None or failed.error is not error:
        return BreakKind.ERROR
    tensors = tensors_in((failed.args, failed.kwargs))
    if any(tensor.device.type == "meta" for tensor in tensors) and (
        failed.func in VALUE_READS or isinstance(error, NotImplementedError)
    ):
        # A value read, or an op whose output size depends on values (nonzero, a boolean mask):
        # torch has no meta kernel for it.
        return BreakKind.META
    return _kind_on_meta(failed)


def _kind_on_meta(failed: FailedOp) -> BreakKind:
    """What the op's shape function says of the same call on meta stand-ins: the kind torch's error is."""
    shape_function = META_SHAPES.get(failed.func)
    tensors = tensors_in((failed.args, failed.kwargs))
    if shape_function is None or any(tensor.layout != torch.strided for tensor in tensors):
        return BreakKind.ERROR
    try:
        shape_function(_on_meta(failed.args), _on_meta(failed.kwargs))
    except ShapeMismatch as mismatch:
        return mismatch.kind
    return BreakKind.ERROR  # the shape function accepts the call, or leaves it to torch


def _on_meta(value: Any) -> Any:
    """The same arguments with each tensor replaced by an empty meta tensor of its shape, strides and dtype."""
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        items = [_on_meta(item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {key: _on_meta(item) for key, item in value.items()}
    return value


def witnessed(
    forward: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], error: BaseException
) -> FailedOp | None:
    """Which op of `forward` raises, found by running it again under a mode that watches each op.

    For one of torch's leaves that raised while running outside the tracer's mode (on a real
    device, `shapetrace.tracing.leaves`): run again on the same inputs, in evaluation mode and
    without gradients as the trace leaves it, such a leaf changes nothing. Whatever the run
    raises is only looked at, never passed on; the op found is filed under `error`.
    """
    witness = _Witness()
    try:
        with witness:
            forward(*args, **kwargs)
    except Exception:  # noqa: BLE001 - only the op that raised is wanted
        pass
    if witness.failed is None:
        return None
    func, op_args, op_kwargs = witness.failed
    return FailedOp(func, op_args, op_kwargs, error)


class _Witness(TorchFunctionMode):
    """Runs every op as it is and remembers the first that raises."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: tuple[Callable[..., Any], Sequence[Any], dict[str, Any]] | None = None

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        try:
            return func(*args, **kwargs)
        except Exception:
            if self.failed is None:
                self.failed = (func, args, kwargs)
            raise
