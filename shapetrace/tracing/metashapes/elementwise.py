"""Elementwise ops: unary functions, activations, dropout, softmax, mean, and binary ops with broadcasting.

Keys include the methods and operators that `x + y`, `x += y` or `2 - x` arrive as; in-place
forms return their input itself, as torch does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from shapetrace.records import BreakKind
from shapetrace.tracing.metashapes.arguments import (
    FLOATING,
    INTEGRAL,
    Shape,
    ShapeFunction,
    ShapeTable,
    bind,
    floating,
    is_int,
    is_number,
    is_tensor_operand,
    meta,
    signature_of,
)
from shapetrace.tracing.metashapes.layout import elementwise_output
from shapetrace.tracing.metashapes.mismatch import ShapeMismatch

_UNARY = signature_of(lambda input: None)


def broadcast_shapes(left: Sequence[int], right: Sequence[int]) -> Shape:
    """The shape two operands broadcast to.

    Raises:
        RuntimeError: torch's message, naming the rightmost dimension where the sizes disagree.
    """
    ndim = max(len(left), len(right))
    padded_left = (1,) * (ndim - len(left)) + tuple(left)
    padded_right = (1,) * (ndim - len(right)) + tuple(right)
    shape = [0] * ndim
    for dim in reversed(range(ndim)):
        size_a, size_b = padded_left[dim], padded_right[dim]
        if 1 not in (size_a, size_b) and size_a != size_b:
            raise ShapeMismatch(
                f"The size of tensor a ({size_a}) must match the size of tensor b ({size_b}) "
                f"at non-singleton dimension {dim}"
            )
        shape[dim] = size_b if size_a == 1 else size_a
    return tuple(shape)


def _float_result(input: Any) -> torch.dtype | None:
    """The dtype of sin, exp, sigmoid and the like: integers and bools give the default float."""
    if not isinstance(input, torch.Tensor):
        return None
    if input.dtype in FLOATING:
        return input.dtype
    return torch.get_default_dtype() if input.dtype in INTEGRAL else None


def _float_unary(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """sin, cos, exp, log, sqrt, rsqrt, sigmoid, tanh."""
    bound = bind(_UNARY, args, kwargs)
    dtype = _float_result(bound["input"]) if bound else None
    if bound is None or dtype is None:
        return NotImplemented
    return elementwise_output(bound["input"].shape, dtype, (bound["input"],))


def _negative(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_UNARY, args, kwargs)
    input = bound["input"] if bound else None
    # Bools are torch's to refuse, with a message of its own.
    if not is_tensor_operand(input) or input.dtype == torch.bool:
        return NotImplemented
    return elementwise_output(input.shape, input.dtype, (input,))


def _activation(signature: inspect.Signature) -> ShapeFunction:
    """F.silu, F.relu, F.gelu, F.mish: a floating input's shape; `inplace=True` returns the input."""

    def shape_function(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        bound = bind(signature, args, kwargs)
        if bound is None or not floating(bound["input"]) or bound.get("approximate", "none") not in ("none", "tanh"):
            return NotImplemented
        if bound.get("inplace"):
            return bound["input"]
        return elementwise_output(bound["input"].shape, bound["input"].dtype, (bound["input"],))

    return shape_function


_DROPOUT = signature_of(F.dropout)


def _dropout(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_DROPOUT, args, kwargs)
    if bound is None or not floating(bound["input"]) or not is_number(bound["p"]) or not 0 <= bound["p"] <= 1:
        return NotImplemented
    # Like torch, which hands back the input itself when it works in place or changes nothing.
    if bound["inplace"] or not bound["training"]:
        return bound["input"]
    return elementwise_output(bound["input"].shape, bound["input"].dtype, (bound["input"],))


def _softmax(signature: inspect.Signature) -> ShapeFunction:
    """softmax and log_softmax along one dimension, cast to `dtype` first if given."""

    def shape_function(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        bound = bind(signature, args, kwargs)
        input = bound["input"] if bound else None
        if bound is None or not is_tensor_operand(input) or not is_int(bound["dim"]):
            return NotImplemented
        dtype = input.dtype if bound["dtype"] is None else bound["dtype"]
        rank = max(input.dim(), 1)
        if dtype not in FLOATING or not -rank <= bound["dim"] < rank:
            return NotImplemented  # integers without `dtype`, a dim out of range: torch's messages
        return meta(input.shape, dtype)

    return shape_function


_MEAN = signature_of(lambda input, dim=None, keepdim=False, *, dtype=None: None)


def _mean(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_MEAN, args, kwargs)
    input = bound["input"] if bound else None
    if bound is None or not is_tensor_operand(input) or not isinstance(bound["keepdim"], bool):
        return NotImplemented
    dtype = input.dtype if bound["dtype"] is None else bound["dtype"]
    dims = _reduced_dims(bound["dim"], input.dim())
    if dtype not in FLOATING or dims is None:
        return NotImplemented
    if bound["keepdim"]:
        return meta([1 if dim in dims else size for dim, size in enumerate(input.shape)], dtype)
    return meta([size for dim, size in enumerate(input.shape) if dim not in dims], dtype)


def _reduced_dims(dim: Any, ndim: int) -> set[int] | None:
    """The dimensions a reduction removes; None where torch would refuse them."""
    if dim is None or (isinstance(dim, (list, tuple)) and not dim):
        return set(range(ndim))  # no dims, None or empty, reduce them all
    dims = [dim] if is_int(dim) else dim
    rank = max(ndim, 1)
    if not isinstance(dims, (list, tuple)) or not all(is_int(d) and -rank <= d < rank for d in dims):
        return None
    normalized = {d % rank for d in dims}
    return normalized if len(normalized) == len(dims) else None


# --- binary, with broadcasting ------------------------------------------------------------

_TYPE_NAMES = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.bool: "Bool",
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
}
"""torch's names for dtypes in its messages."""

_BINARY_SIGNATURES = {
    "add": signature_of(lambda input, other, *, alpha=None: None),
    "sub": signature_of(lambda input, other, *, alpha=None: None),
    "div": signature_of(lambda input, other, *, rounding_mode=None: None),
}
_PLAIN_BINARY = signature_of(lambda input, other: None)


def _is_operand(value: Any) -> bool:
    return is_tensor_operand(value) or isinstance(value, (bool, int, float))


def _common_dtype(operation: str, bound: dict[str, Any]) -> torch.dtype | None:
    """The dtype of `input <operation> other`; None for operands left to torch."""
    input, other = bound["input"], bound["other"]
    if not is_tensor_operand(input) or not _is_operand(other):
        return None
    other_is_bool = other.dtype == torch.bool if isinstance(other, torch.Tensor) else isinstance(other, bool)
    if operation == "sub" and (input.dtype == torch.bool or other_is_bool):
        return None  # torch refuses bool subtraction before broadcasting, with its own message
    dtype = torch.result_type(input, other)
    if operation == "pow" and dtype not in FLOATING and is_int(other) and other < 0:
        return None  # torch's own message: integers to negative integer powers
    if operation == "div" and bound["rounding_mode"] is None and dtype not in FLOATING:
        return torch.get_default_dtype()  # true division of integers
    return dtype


def _kernel_accepts(operation: str, bound: dict[str, Any], dtype: torch.dtype) -> bool:
    """torch's checks after broadcasting, each with a message of its own."""
    alpha = bound.get("alpha")
    if isinstance(alpha, bool) and dtype != torch.bool:
        return False  # "Boolean alpha only supported for Boolean results."
    if alpha is not None and not isinstance(alpha, int) and not (isinstance(alpha, float) and dtype in FLOATING):
        return False  # "For integral input tensors, argument alpha must not be a floating point number."
    if operation in ("pow", "reflected pow"):
        return dtype != torch.bool  # bool powers: answered by the exponent's value, or refused
    rounding_mode = bound.get("rounding_mode")
    return rounding_mode is None or (rounding_mode in ("trunc", "floor") and dtype != torch.bool)


def _check_in_place(target: torch.Tensor, shape: Shape, dtype: torch.dtype) -> None:
    """Raise like torch where a result of this shape and dtype cannot be written into `target`."""
    if shape != tuple(target.shape):
        raise ShapeMismatch(f"output with shape {list(target.shape)} doesn't match the broadcast shape {list(shape)}")
    if not torch.can_cast(dtype, target.dtype):
        raise ShapeMismatch(
            f"result type {_TYPE_NAMES[dtype]} can't be cast to the desired output type {_TYPE_NAMES[target.dtype]}",
            BreakKind.ERROR,  # a dtype, not a shape
        )
    if any(stride == 0 and size > 1 for stride, size in zip(target.stride(), target.shape, strict=True)):
        raise ShapeMismatch(
            "unsupported operation: more than one element of the written-to tensor refers to a single "
            "memory location. Please clone() the tensor before performing the operation.",
            BreakKind.ERROR,  # a memory layout, not a shape
        )


def _shares_memory(target: torch.Tensor, other: Any) -> bool:
    """Whether `other` views `target`'s storage: torch checks their overlap by address."""
    if not isinstance(other, torch.Tensor) or other is target:
        return False
    return (target._base if target._base is not None else target) is (other._base if other._base is not None else other)


def _binary(operation: str, in_place: bool = False) -> ShapeFunction:
    """add, sub, mul, div, pow: functions, methods, operators and in-place forms."""
    signature = _BINARY_SIGNATURES.get(operation, _PLAIN_BINARY)

    def shape_function(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        bound = bind(signature, args, kwargs)
        dtype = _common_dtype(operation, bound) if bound else None
        if bound is None or dtype is None:
            return NotImplemented
        input, other = bound["input"], bound["other"]
        # torch's order: broadcasting, then writing in place, then the kernel's own checks.
        shape = broadcast_shapes(input.shape, other.shape if isinstance(other, torch.Tensor) else ())
        if in_place:
            if _shares_memory(input, other):
                return NotImplemented
            _check_in_place(input, shape, dtype)
        if not _kernel_accepts(operation, bound, dtype):
            return NotImplemented
        return input if in_place else elementwise_output(shape, dtype, (input, other))

    return shape_function


_MULTIPLY = _binary("mul")


def _reflected_division(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Tensor.__rdiv__(self, other) is `self.reciprocal() * other`: self turns float first."""
    bound = bind(_PLAIN_BINARY, args, kwargs)
    dtype = _float_result(bound["input"]) if bound else None
    if bound is None or dtype is None:
        return NotImplemented
    return _MULTIPLY((meta(bound["input"].shape, dtype), bound["other"]), {})


def register(table: ShapeTable) -> None:
    """Add this module's shape functions to `table`, keyed as the ops arrive."""
    _register_unary(table)
    _register_binary(table)


def _register_unary(table: ShapeTable) -> None:
    tensor_class = torch.Tensor
    function: Callable[..., Any]
    for name in ("sin", "cos", "exp", "log", "sqrt", "rsqrt", "sigmoid", "tanh"):
        table[getattr(torch, name)] = table[getattr(tensor_class, name)] = _float_unary
    for function in (F.silu, F.mish, F.relu):
        table[function] = _activation(signature_of(function))
    table[F.gelu] = _activation(signature_of(lambda input, *, approximate="none": None))
    for function in (torch.relu, tensor_class.relu):
        table[function] = _activation(_UNARY)
    for function in (F.softmax, F.log_softmax):
        table[function] = _softmax(signature_of(function))
    for function in (torch.softmax, tensor_class.softmax, torch.log_softmax, tensor_class.log_softmax):
        table[function] = _softmax(signature_of(lambda input, dim, dtype=None: None))
    table.update({torch.neg: _negative, tensor_class.neg: _negative, F.dropout: _dropout})
    table.update({torch.mean: _mean, tensor_class.mean: _mean})


def _register_binary(table: ShapeTable) -> None:
    tensor_class = torch.Tensor
    for operation in ("add", "sub", "mul", "div"):
        table[getattr(torch, operation)] = table[getattr(tensor_class, operation)] = _binary(operation)
        table[getattr(tensor_class, operation + "_")] = _binary(operation, in_place=True)
    for function in (torch.pow, tensor_class.pow, tensor_class.__pow__):
        table[function] = _binary("pow")
    for function in (tensor_class.pow_, tensor_class.__ipow__):
        table[function] = _binary("pow", in_place=True)
    # Reflected: `2 - x` arrives as __rsub__(x, 2), `2 / x` as __rdiv__(x, 2), `2 ** x` as __rpow__(x, 2).
    table[tensor_class.__rsub__] = _binary("sub")
    table[tensor_class.__rtruediv__] = _reflected_division
    table[tensor_class.__rpow__] = _binary("reflected pow")
    # This torch reports `x + y` as Tensor.add and `x += y` as Tensor.add_; older ones report the operators.
    operators = {
        "add": ("__add__", "__radd__"),
        "sub": ("__sub__",),
        "mul": ("__mul__", "__rmul__"),
        "div": ("__truediv__",),
    }
    for operation, names in operators.items():
        for name in names:
            table[getattr(tensor_class, name)] = _binary(operation)
    for operation, name in {"add": "__iadd__", "sub": "__isub__", "mul": "__imul__", "div": "__itruediv__"}.items():
        table[getattr(tensor_class, name)] = _binary(operation, in_place=True)
