"""Output shapes of common ops on meta tensors, computed in Python without torch's meta kernels.

In this torch, the first Python-implemented meta kernel in a process (most elementwise ops,
convolutions, norms, pooling and matrix products on meta) imports torch._dynamo and sympy:
0.5 to 2 seconds, more than a whole trace. For the ops listed here the tracer computes the
output itself, an empty meta tensor of torch's shape and dtype, and raises where torch
raises for the mistakes a trace looks for: broadcasting, channels, sizes too small.

A shape function returns NotImplemented for every case it does not claim to reproduce
exactly (an unusual dtype, an argument torch rejects with a message of its own), and torch
runs instead. Outputs are contiguous: torch keeps the layout of a permuted input through
elementwise ops, which only matters to a later `.view()` or `.stride()`.

Keys are the objects a TorchFunctionMode receives, which are not always the ones called:
`x + y` arrives as `Tensor.add`, `x += y` as `Tensor.add_`, `2 - x` as `Tensor.__rsub__`,
`x ** 2` as `Tensor.__pow__`, `F.conv2d` as `torch.conv2d`, `F.sigmoid` as `Tensor.sigmoid`;
`F.silu`, `F.group_norm` and `F.interpolate` arrive as themselves.

Views, `.float()`, factories and `F.pad` in constant mode never reach a Python meta kernel, so
they are not listed; `F.pad` in reflect or replicate mode does, and is not covered yet.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F

__all__ = ["META_SHAPES", "broadcast_shapes", "call", "matmul_shape", "pooled_size"]

ShapeFunction = Callable[[Sequence[Any], dict[str, Any]], Any]
Shape = tuple[int, ...]

META_SHAPES: dict[Callable[..., Any], ShapeFunction] = {}
"""The functions whose meta output this module computes, keyed as they arrive; filled at the end."""

_FLOATING = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
_INTEGRAL = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})
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


def call(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """`func(*args, **kwargs)`, computed here when every tensor argument is on meta.

    Returns:
        What torch returns: the shape function's empty meta tensor, or torch's own result
        where there is no shape function, a tensor is elsewhere, or autograd is recording.

    Raises:
        RuntimeError: where torch would, for the shape mistakes the shape functions check.
    """
    shape_function = META_SHAPES.get(func)
    if shape_function is not None and _all_meta(args, kwargs) and not _needs_autograd(args, kwargs):
        output = shape_function(args, kwargs)
        if output is not NotImplemented:
            return output
    return func(*args, **kwargs)


def _all_meta(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    found = False
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            if value.device.type != "meta":
                return False
            found = True
    return found


def _needs_autograd(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """Whether torch would record a graph, which the empty outputs made here would not join."""
    if not torch.is_grad_enabled():
        return False
    return any(isinstance(value, torch.Tensor) and value.requires_grad for value in (*args, *kwargs.values()))


# --- arguments and small helpers --------------------------------------------------------


def _bind(signature: inspect.Signature, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The call's arguments by name, defaults filled; None where torch would reject the call."""
    fast = _bind_plainly(signature, args, kwargs)
    if fast is not None:
        return fast
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return bound.arguments


_PLAIN_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_PLAIN_SIGNATURES: dict[int, tuple[inspect.Signature, tuple[inspect.Parameter, ...], frozenset[str], int] | None] = {}
"""By id(signature), holding the signature itself so the id cannot be reused (Signature hashes slowly)."""


def _bind_plainly(signature: inspect.Signature, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Signature.bind for the common call, in a fraction of its time; None to let bind decide.

    A sweep binds arguments for every op of every size, and inspect's general binder was its
    largest single cost. Only signatures without *args, **kwargs or positional-only
    parameters take this path; any irregular call falls back to Signature.bind.
    """
    key = id(signature)
    if key not in _PLAIN_SIGNATURES or (_PLAIN_SIGNATURES[key] or (signature,))[0] is not signature:
        parameters = tuple(signature.parameters.values())
        plain = all(parameter.kind in _PLAIN_KINDS for parameter in parameters)
        positional = sum(parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for parameter in parameters)
        names = frozenset(parameter.name for parameter in parameters)
        _PLAIN_SIGNATURES[key] = (signature, parameters, names, positional) if plain else None
    known = _PLAIN_SIGNATURES[key]
    if known is None:
        return None
    _, parameters, names, positional = known
    if len(args) > positional or not names.issuperset(kwargs):
        return None
    values: dict[str, Any] = {}
    for index, parameter in enumerate(parameters):
        if index < len(args):
            if parameter.name in kwargs:
                return None  # given twice: bind raises the error
            values[parameter.name] = args[index]
        elif parameter.name in kwargs:
            values[parameter.name] = kwargs[parameter.name]
        elif parameter.default is not inspect.Parameter.empty:
            values[parameter.name] = parameter.default
        else:
            return None  # missing: bind raises the error
    return values


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    """The signature of an F.* Python function, or of a lambda mirroring a builtin's."""
    return inspect.signature(function)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _floating(*tensors: Any) -> bool:
    """Whether every argument is a tensor, all of one floating dtype."""
    if not all(isinstance(tensor, torch.Tensor) for tensor in tensors):
        return False
    dtypes = {tensor.dtype for tensor in tensors}
    return len(dtypes) == 1 and dtypes <= _FLOATING


def _is_tensor_operand(value: Any) -> TypeGuard[torch.Tensor]:
    """Whether `value` is a tensor of a real dtype this module knows: floating, integral or bool."""
    return isinstance(value, torch.Tensor) and value.dtype in _FLOATING | _INTEGRAL


def _same_dtype_or_none(reference: torch.Tensor, *tensors: Any) -> bool:
    return all(t is None or (isinstance(t, torch.Tensor) and t.dtype == reference.dtype) for t in tensors)


def _expand(value: Any, count: int) -> Shape | None:
    """An int, or a sequence of one or `count` ints, as `count` ints (torch's expand_param)."""
    if _is_int(value):
        return (value,) * count
    if isinstance(value, (list, tuple)) and len(value) in (1, count) and all(_is_int(item) for item in value):
        return tuple(value) * (count // len(value))
    return None


def _meta(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device="meta")


def _joined(shape: Sequence[int], separator: str = " x ") -> str:
    return separator.join(str(size) for size in shape)


# --- elementwise ------------------------------------------------------------------------

_UNARY = _signature(lambda input: None)


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
            raise RuntimeError(
                f"The size of tensor a ({size_a}) must match the size of tensor b ({size_b}) "
                f"at non-singleton dimension {dim}"
            )
        shape[dim] = size_b if size_a == 1 else size_a
    return tuple(shape)


def _float_result(input: Any) -> torch.dtype | None:
    """The dtype of sin, exp, sigmoid and the like: integers and bools give the default float."""
    if not isinstance(input, torch.Tensor):
        return None
    if input.dtype in _FLOATING:
        return input.dtype
    return torch.get_default_dtype() if input.dtype in _INTEGRAL else None


def _float_unary(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """sin, cos, exp, log, sqrt, rsqrt, sigmoid, tanh."""
    bound = _bind(_UNARY, args, kwargs)
    dtype = _float_result(bound["input"]) if bound else None
    if bound is None or dtype is None:
        return NotImplemented
    return _meta(bound["input"].shape, dtype)


def _negative(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_UNARY, args, kwargs)
    input = bound["input"] if bound else None
    # Bools are torch's to refuse, with a message of its own.
    if not _is_tensor_operand(input) or input.dtype == torch.bool:
        return NotImplemented
    return _meta(input.shape, input.dtype)


def _activation(signature: inspect.Signature) -> ShapeFunction:
    """F.silu, F.relu, F.gelu, F.mish: a floating input's shape; `inplace=True` returns the input."""

    def shape_function(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        bound = _bind(signature, args, kwargs)
        if bound is None or not _floating(bound["input"]) or bound.get("approximate", "none") not in ("none", "tanh"):
            return NotImplemented
        if bound.get("inplace"):
            return bound["input"]
        return _meta(bound["input"].shape, bound["input"].dtype)

    return shape_function


_DROPOUT = _signature(F.dropout)


def _dropout(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_DROPOUT, args, kwargs)
    if bound is None or not _floating(bound["input"]) or not _is_number(bound["p"]) or not 0 <= bound["p"] <= 1:
        return NotImplemented
    # Like torch, which hands back the input itself when it works in place or changes nothing.
    if bound["inplace"] or not bound["training"]:
        return bound["input"]
    return _meta(bound["input"].shape, bound["input"].dtype)


def _softmax(signature: inspect.Signature) -> ShapeFunction:
    """softmax and log_softmax along one dimension, cast to `dtype` first if given."""

    def shape_function(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        bound = _bind(signature, args, kwargs)
        input = bound["input"] if bound else None
        if bound is None or not _is_tensor_operand(input) or not _is_int(bound["dim"]):
            return NotImplemented
        dtype = input.dtype if bound["dtype"] is None else bound["dtype"]
        rank = max(input.dim(), 1)
        if dtype not in _FLOATING or not -rank <= bound["dim"] < rank:
            return NotImplemented  # integers without `dtype`, a dim out of range: torch's messages
        return _meta(input.shape, dtype)

    return shape_function


_MEAN = _signature(lambda input, dim=None, keepdim=False, *, dtype=None: None)


def _mean(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_MEAN, args, kwargs)
    input = bound["input"] if bound else None
    if bound is None or not _is_tensor_operand(input) or not isinstance(bound["keepdim"], bool):
        return NotImplemented
    dtype = input.dtype if bound["dtype"] is None else bound["dtype"]
    dims = _reduced_dims(bound["dim"], input.dim())
    if dtype not in _FLOATING or dims is None:
        return NotImplemented
    if bound["keepdim"]:
        return _meta([1 if dim in dims else size for dim, size in enumerate(input.shape)], dtype)
    return _meta([size for dim, size in enumerate(input.shape) if dim not in dims], dtype)


def _reduced_dims(dim: Any, ndim: int) -> set[int] | None:
    """The dimensions a reduction removes; None where torch would refuse them."""
    if dim is None or (isinstance(dim, (list, tuple)) and not dim):
        return set(range(ndim))  # no dims, None or empty, reduce them all
    dims = [dim] if _is_int(dim) else dim
    rank = max(ndim, 1)
    if not isinstance(dims, (list, tuple)) or not all(_is_int(d) and -rank <= d < rank for d in dims):
        return None
    normalized = {d % rank for d in dims}
    return normalized if len(normalized) == len(dims) else None


# --- binary, with broadcasting ------------------------------------------------------------

_BINARY_SIGNATURES = {
    "add": _signature(lambda input, other, *, alpha=None: None),
    "sub": _signature(lambda input, other, *, alpha=None: None),
    "div": _signature(lambda input, other, *, rounding_mode=None: None),
}
_PLAIN_BINARY = _signature(lambda input, other: None)


def _is_operand(value: Any) -> bool:
    return _is_tensor_operand(value) or isinstance(value, (bool, int, float))


def _common_dtype(operation: str, bound: dict[str, Any]) -> torch.dtype | None:
    """The dtype of `input <operation> other`; None for operands left to torch."""
    input, other = bound["input"], bound["other"]
    if not _is_tensor_operand(input) or not _is_operand(other):
        return None
    other_is_bool = other.dtype == torch.bool if isinstance(other, torch.Tensor) else isinstance(other, bool)
    if operation == "sub" and (input.dtype == torch.bool or other_is_bool):
        return None  # torch refuses bool subtraction before broadcasting, with its own message
    dtype = torch.result_type(input, other)
    if operation == "pow" and dtype not in _FLOATING and _is_int(other) and other < 0:
        return None  # torch's own message: integers to negative integer powers
    if operation == "div" and bound["rounding_mode"] is None and dtype not in _FLOATING:
        return torch.get_default_dtype()  # true division of integers
    return dtype


def _kernel_accepts(operation: str, bound: dict[str, Any], dtype: torch.dtype) -> bool:
    """torch's checks after broadcasting, each with a message of its own."""
    alpha = bound.get("alpha")
    if isinstance(alpha, bool) and dtype != torch.bool:
        return False  # "Boolean alpha only supported for Boolean results."
    if alpha is not None and not isinstance(alpha, int) and not (isinstance(alpha, float) and dtype in _FLOATING):
        return False  # "For integral input tensors, argument alpha must not be a floating point number."
    if operation in ("pow", "reflected pow"):
        return dtype != torch.bool  # bool powers: answered by the exponent's value, or refused
    rounding_mode = bound.get("rounding_mode")
    return rounding_mode is None or (rounding_mode in ("trunc", "floor") and dtype != torch.bool)


def _check_in_place(target: torch.Tensor, shape: Shape, dtype: torch.dtype) -> None:
    """Raise like torch where a result of this shape and dtype cannot be written into `target`."""
    if shape != tuple(target.shape):
        raise RuntimeError(f"output with shape {list(target.shape)} doesn't match the broadcast shape {list(shape)}")
    if not torch.can_cast(dtype, target.dtype):
        raise RuntimeError(
            f"result type {_TYPE_NAMES[dtype]} can't be cast to the desired output type {_TYPE_NAMES[target.dtype]}"
        )
    if any(stride == 0 and size > 1 for stride, size in zip(target.stride(), target.shape, strict=True)):
        raise RuntimeError(
            "unsupported operation: more than one element of the written-to tensor refers to a single "
            "memory location. Please clone() the tensor before performing the operation."
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
        bound = _bind(signature, args, kwargs)
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
        return input if in_place else _meta(shape, dtype)

    return shape_function


_MULTIPLY = _binary("mul")


def _reflected_division(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Tensor.__rdiv__(self, other) is `self.reciprocal() * other`: self turns float first."""
    bound = _bind(_PLAIN_BINARY, args, kwargs)
    dtype = _float_result(bound["input"]) if bound else None
    if bound is None or dtype is None:
        return NotImplemented
    return _MULTIPLY((_meta(bound["input"].shape, dtype), bound["other"]), {})


# --- convolution and linear ---------------------------------------------------------------

_CONVOLUTION = _signature(lambda input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1: None)
_TRANSPOSED_CONVOLUTION = _signature(
    lambda input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1: None
)


def _convolution(spatial: int, transposed: bool) -> ShapeFunction:
    """torch.conv{1,2,3}d and torch.conv_transpose{1,2,3}d, batched or not."""
    signature = _TRANSPOSED_CONVOLUTION if transposed else _CONVOLUTION

    def shape_function(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        bound = _bind(signature, args, kwargs)
        if bound is None or not _floating(bound["input"], bound["weight"]):
            return NotImplemented
        input, weight, bias = bound["input"], bound["weight"], bound["bias"]
        if not _same_dtype_or_none(input, bias) or weight.dim() != spatial + 2 or 0 in weight.shape:
            return NotImplemented
        parameters = _convolution_parameters(bound, spatial, transposed)
        if input.dim() not in (spatial + 1, spatial + 2) or parameters is None:
            return NotImplemented
        batched = input.shape if input.dim() == spatial + 2 else (1, *input.shape)
        _check_convolution_channels(batched, weight, bias, parameters["groups"], transposed)
        if transposed:
            if 0 in batched[2:]:
                return NotImplemented  # torch: "Only zero batch or zero channel inputs are supported"
            sizes = _transposed_convolution_sizes(batched[2:], weight.shape[2:], parameters)
            out_channels = weight.shape[1] * parameters["groups"]
        else:
            sizes = _convolution_sizes(batched[2:], weight.shape[2:], parameters)  # raises before the next check
            if 0 in batched[2:]:
                return NotImplemented
            out_channels = weight.shape[0]
        shape = (batched[0], out_channels, *sizes)
        return _meta(shape if input.dim() == spatial + 2 else shape[1:], input.dtype)

    return shape_function


def _convolution_parameters(bound: dict[str, Any], spatial: int, transposed: bool) -> dict[str, Any] | None:
    """stride, padding, dilation and output_padding per dimension, and groups; None if torch refuses."""
    parameters: dict[str, Any] = {"groups": bound["groups"], "padding": bound["padding"]}
    for name in ("stride", "dilation", "output_padding"):
        parameters[name] = _expand(bound.get(name, 0), spatial)
        if parameters[name] is None or min(parameters[name]) < (0 if name == "output_padding" else 1):
            return None
    if not _is_int(parameters["groups"]) or parameters["groups"] < 1:
        return None
    if isinstance(bound["padding"], str):
        # Only convolution takes "same" and "valid", and "same" only with stride 1.
        if transposed or bound["padding"] not in ("same", "valid"):
            return None
        return None if bound["padding"] == "same" and max(parameters["stride"]) > 1 else parameters
    parameters["padding"] = _expand(bound["padding"], spatial)
    return None if parameters["padding"] is None or min(parameters["padding"]) < 0 else parameters


def _check_convolution_channels(
    batched: Sequence[int], weight: torch.Tensor, bias: torch.Tensor | None, groups: int, transposed: bool
) -> None:
    """torch's channel checks, in torch's order: weight by groups, input channels, bias."""
    weight_shape = list(weight.shape)
    if weight.shape[0] % groups != 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
            f"but got weight of size [{weight_shape}] instead"
        )
    given = "Given transposed=1" if transposed else f"Given groups={groups}"
    expected = weight.shape[0] if transposed else weight.shape[1] * groups
    if batched[1] != expected:
        raise RuntimeError(
            f"{given}, weight of size {weight_shape}, expected input{list(batched)} to have {expected} channels, "
            f"but got {batched[1]} channels instead"
        )
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        given = "Given transposed=1, weight" if transposed else "Given weight"
        raise RuntimeError(
            f"{given} of size {weight_shape}, expected bias to be 1-dimensional with {out_channels} elements, "
            f"but got bias of size {list(bias.shape)} instead"
        )


def _convolution_sizes(sizes: Sequence[int], kernel: Sequence[int], parameters: dict[str, Any]) -> Shape:
    """A convolution's output sizes; raises like torch where the kernel outgrows the padded input."""
    if parameters["padding"] == "same":
        return tuple(sizes)
    padding = (0,) * len(sizes) if parameters["padding"] == "valid" else parameters["padding"]
    padded = [size + 2 * pad for size, pad in zip(sizes, padding, strict=True)]
    extents = [dilation * (k - 1) + 1 for k, dilation in zip(kernel, parameters["dilation"], strict=True)]
    if any(size < extent for size, extent in zip(padded, extents, strict=True)):
        raise RuntimeError(
            f"Calculated padded input size per channel: ({_joined(padded)}). Kernel size: ({_joined(extents)}). "
            "Kernel size can't be greater than actual input size"
        )
    return tuple(
        (size - extent) // stride + 1
        for size, extent, stride in zip(padded, extents, parameters["stride"], strict=True)
    )


def _transposed_convolution_sizes(sizes: Sequence[int], kernel: Sequence[int], parameters: dict[str, Any]) -> Shape:
    """A transposed convolution's output sizes; raises like torch's reference CPU path."""
    strides, paddings = parameters["stride"], parameters["padding"]
    dilations, extras = parameters["dilation"], parameters["output_padding"]
    if any(
        extra >= stride and extra >= dilation
        for extra, stride, dilation in zip(extras, strides, dilations, strict=True)
    ):
        raise RuntimeError(
            f"output padding must be smaller than either stride or dilation, but got output_padding={list(extras)}, "
            f"stride={list(strides)}, dilation={list(dilations)}"
        )
    outputs = tuple(
        (size - 1) * stride - 2 * padding + dilation * (k - 1) + extra + 1
        for size, k, stride, padding, dilation, extra in zip(
            sizes, kernel, strides, paddings, dilations, extras, strict=True
        )
    )
    # float32 on CPU (oneDNN) gives an empty tensor for a size of 0; float64 and CUDA raise.
    if min(outputs) < 1:
        raise RuntimeError(
            f"Given input size per channel: ({_joined(sizes)}). "
            f"Calculated output size per channel: ({_joined(outputs)}). Output size is too small"
        )
    return outputs


_LINEAR = _signature(lambda input, weight, bias=None: None)


def _linear(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_LINEAR, args, kwargs)
    if bound is None or not _floating(bound["input"], bound["weight"]):
        return NotImplemented
    input, weight, bias = bound["input"], bound["weight"], bound["bias"]
    if (
        input.dim() == 0
        or weight.dim() != 2
        or not _same_dtype_or_none(input, bias)
        or (bias is not None and bias.dim() > 1)
    ):
        return NotImplemented
    rows, (out_features, in_features) = math.prod(input.shape[:-1]), weight.shape
    if input.shape[-1] != in_features:
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{input.shape[-1]} and {in_features}x{out_features})"
        )
    # torch adds the bias to the (rows, out_features) product: it expands from () or (1,).
    if bias is not None and bias.dim() == 1 and bias.shape[0] not in (1, out_features):
        raise RuntimeError(
            f"The expanded size of the tensor ({out_features}) must match the existing size ({bias.shape[0]}) at "
            f"non-singleton dimension 1.  Target sizes: [{rows}, {out_features}].  Tensor sizes: [{bias.shape[0]}]"
        )
    return _meta((*input.shape[:-1], out_features), input.dtype)


# --- normalization ------------------------------------------------------------------------

_PER_CHANNEL = ("running_mean", "running_var", "weight", "bias")


_GROUP_NORM = _signature(F.group_norm)


def _group_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_GROUP_NORM, args, kwargs)
    if bound is None or not _floating(bound["input"]) or bound["input"].dim() < 2:
        return NotImplemented
    input, groups, weight, bias = bound["input"], bound["num_groups"], bound["weight"], bound["bias"]
    if not _is_int(groups) or groups < 1 or not _same_dtype_or_none(input, weight, bias):
        return NotImplemented
    if input.shape[0] * input.shape[1] // groups * math.prod(input.shape[2:]) == 1:
        return NotImplemented  # F.group_norm's own ValueError: one value per group
    channels = input.shape[1]
    if channels % groups != 0:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, "
            f"but got input of shape {list(input.shape)} and num_groups={groups}"
        )
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and (tensor.dim() != 1 or tensor.numel() != channels):
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, "
                f"but got {name} of shape {list(tensor.shape)} and input of shape {list(input.shape)}"
            )
    return _meta(input.shape, input.dtype)


def _statistics_usable(input: torch.Tensor, bound: dict[str, Any], training: bool) -> bool:
    """Per-channel tensors torch takes without a message of its own: 1-D, input's dtype, paired."""
    tensors = [bound[name] for name in _PER_CHANNEL]
    if any(t is not None and (not isinstance(t, torch.Tensor) or t.dim() != 1) for t in tensors):
        return False
    if (bound["running_mean"] is None) != (bound["running_var"] is None):
        return False
    return (training or bound["running_mean"] is not None) and _same_dtype_or_none(input, *tensors)


def _check_per_channel(bound: dict[str, Any], channels: int, repeat: int = 1) -> None:
    """torch's batch_norm check: each statistic and affine tensor holds one value per channel."""
    for name in _PER_CHANNEL:
        tensor = bound[name]
        if tensor is not None and tensor.numel() != channels:
            raise RuntimeError(f"{name} should contain {channels * repeat} elements not {tensor.numel() * repeat}")


_BATCH_NORM = _signature(F.batch_norm)


def _batch_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_BATCH_NORM, args, kwargs)
    if bound is None or not _floating(bound["input"]) or bound["input"].dim() < 2 or bound["input"].numel() == 0:
        return NotImplemented
    input, training, eps = bound["input"], bound["training"], bound["eps"]
    if not isinstance(training, bool) or not _is_number(eps) or not _statistics_usable(input, bound, training):
        return NotImplemented
    single = input.shape[0] * math.prod(input.shape[2:]) == 1
    if (training and (single or eps <= 0)) or eps < 0:
        return NotImplemented  # F.batch_norm's own ValueErrors
    _check_per_channel(bound, input.shape[1])
    return _meta(input.shape, input.dtype)


_INSTANCE_NORM = _signature(F.instance_norm)


def _instance_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_INSTANCE_NORM, args, kwargs)
    if bound is None or not _floating(bound["input"]) or bound["input"].dim() < 2 or bound["input"].numel() == 0:
        return NotImplemented
    input, use_input_stats = bound["input"], bound["use_input_stats"]
    if not isinstance(use_input_stats, bool) or not _statistics_usable(input, bound, use_input_stats):
        return NotImplemented
    if use_input_stats and math.prod(input.shape[2:]) == 1:
        return NotImplemented  # F.instance_norm's own ValueError
    # torch folds the batch into the channels and repeats the per-channel tensors batch times.
    _check_per_channel(bound, input.shape[1], repeat=input.shape[0])
    return _meta(input.shape, input.dtype)


_LAYER_NORM = _signature(F.layer_norm)


def _layer_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_LAYER_NORM, args, kwargs)
    if bound is None or not _floating(bound["input"]):
        return NotImplemented
    if not _same_dtype_or_none(bound["input"], bound["weight"], bound["bias"]):
        return NotImplemented
    input, normalized = bound["input"], bound["normalized_shape"]
    if not isinstance(normalized, (list, tuple)) or not all(_is_int(size) for size in normalized):
        return NotImplemented
    normalized = list(normalized)
    if not normalized:
        raise RuntimeError(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one element, "
            "but got normalized_shape = []"
        )
    for name in ("weight", "bias"):
        if bound[name] is not None and list(bound[name].shape) != normalized:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                f"{list(bound[name].shape)} and normalized_shape = {normalized}"
            )
    if list(input.shape[-len(normalized) :]) != normalized or input.dim() < len(normalized):
        raise RuntimeError(
            f"Given normalized_shape={normalized}, expected input with shape [*, {_joined(normalized, ', ')}], "
            f"but got input of size{list(input.shape)}"
        )
    return _meta(input.shape, input.dtype)


# --- pooling and resampling ---------------------------------------------------------------

_AVERAGE_POOL_1D = _signature(
    lambda input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True: None
)

# avg_pool2d and avg_pool3d take one more argument.
_AVERAGE_POOL = _AVERAGE_POOL_1D.replace(
    parameters=[
        *_AVERAGE_POOL_1D.parameters.values(),
        inspect.Parameter("divisor_override", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ]
)
_MAX_POOL = _signature(F.max_pool2d_with_indices)  # the same for 1, 2 and 3 dimensions


def pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: in ceil mode the last window must start inside the input."""
    reach = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    output = reach // stride + 1
    if ceil_mode and (output - 1) * stride >= size + padding:
        output -= 1
    return output


def _pooling(spatial: int, maximum: bool, with_indices: bool = False) -> ShapeFunction:
    """F.avg_pool{1,2,3}d, F.max_pool{1,2,3}d and F.max_pool{1,2,3}d_with_indices."""
    signature = _MAX_POOL if maximum else _AVERAGE_POOL_1D if spatial == 1 else _AVERAGE_POOL

    def shape_function(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        bound = _bind(signature, args, kwargs)
        window = _pooling_window(bound, spatial) if bound else None
        if bound is None or window is None:
            return NotImplemented
        input, (kernel, strides, paddings, dilations) = bound["input"], window
        sizes = input.shape[-spatial:]
        if not maximum and spatial == 3 and any(size < k for size, k in zip(sizes, kernel, strict=True)):
            raise RuntimeError(
                f"input image (T: {sizes[0]} H: {sizes[1]} W: {sizes[2]}) smaller than kernel size "
                f"(kT: {kernel[0]} kH: {kernel[1]} kW: {kernel[2]})"
            )
        outputs = tuple(
            pooled_size(size, k, stride, padding, dilation, bound["ceil_mode"])
            for size, k, stride, padding, dilation in zip(sizes, kernel, strides, paddings, dilations, strict=True)
        )
        if min(outputs) < 1:
            channels = input.shape[-spatial - 1]
            raise RuntimeError(
                f"Given input size: ({_joined((channels, *sizes), 'x')}). "
                f"Calculated output size: ({_joined((channels, *outputs), 'x')}). Output size is too small"
            )
        output = _meta((*input.shape[:-spatial], *outputs), input.dtype)
        if with_indices or bound.get("return_indices"):
            return output, _meta(output.shape, torch.int64)
        return output

    return shape_function


def _pooling_window(bound: dict[str, Any], spatial: int) -> tuple[Shape, Shape, Shape, Shape] | None:
    """Kernel, stride, padding and dilation per dimension, where torch accepts the call."""
    input, stride = bound["input"], bound["stride"]
    if not _floating(input) or input.dim() not in (spatial + 1, spatial + 2) or 0 in input.shape[-spatial - 1 :]:
        return None
    if not isinstance(bound["ceil_mode"], bool) or not isinstance(bound.get("count_include_pad", True), bool):
        return None
    divisor = bound.get("divisor_override")
    if divisor is not None and (not _is_int(divisor) or divisor == 0):
        return None
    kernel = _expand(bound["kernel_size"], spatial)
    if stride is None or (isinstance(stride, (list, tuple)) and not stride):
        stride = kernel  # the default stride is the kernel
    strides, paddings = _expand(stride, spatial), _expand(bound["padding"], spatial)
    dilations = _expand(bound.get("dilation", 1), spatial)
    if kernel is None or strides is None or paddings is None or dilations is None:
        return None
    for k, step, pad, dilation in zip(kernel, strides, paddings, dilations, strict=True):
        # Both of torch's padding limits: half the kernel, and half the dilated kernel.
        if k < 1 or step < 1 or dilation < 1 or pad < 0 or pad > k // 2 or pad > ((k - 1) * dilation + 1) // 2:
            return None
    return kernel, strides, paddings, dilations


_ADAPTIVE_POOL = _signature(F.adaptive_avg_pool2d)


def _adaptive_average_pool(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_ADAPTIVE_POOL, args, kwargs)
    if bound is None or not _floating(bound["input"]):
        return NotImplemented
    input, requested = bound["input"], bound["output_size"]
    if input.dim() not in (3, 4) or 0 in input.shape[-3:]:
        return NotImplemented
    requested = (requested, requested) if _is_int(requested) else requested
    if not isinstance(requested, (list, tuple)) or len(requested) != 2:
        return NotImplemented
    # None keeps the input's size, as in F.adaptive_avg_pool2d.
    sizes = [input.shape[-2 + dim] if size is None else size for dim, size in enumerate(requested)]
    if not all(_is_int(size) and size >= 0 for size in sizes):
        return NotImplemented
    return _meta((*input.shape[:-2], *sizes), input.dtype)


# Each mode's input ranks; all of them size the output the same way.
_INTERPOLATION_RANKS = {
    "nearest": (3, 4, 5),
    "nearest-exact": (3, 4, 5),
    "linear": (3,),
    "bilinear": (4,),
    "bicubic": (4,),
    "trilinear": (5,),
}


_INTERPOLATE = _signature(F.interpolate)


def _interpolate(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_INTERPOLATE, args, kwargs)
    if bound is None or not _floating(bound["input"]) or 0 in bound["input"].shape or bound["antialias"]:
        return NotImplemented
    input, mode = bound["input"], bound["mode"]
    if not isinstance(mode, str) or input.dim() not in _INTERPOLATION_RANKS.get(mode, ()):
        return NotImplemented
    if mode.startswith("nearest") and bound["align_corners"] is not None:
        return NotImplemented  # F.interpolate's own ValueError
    sizes = _interpolated_sizes(input.shape[2:], bound["size"], bound["scale_factor"], bound["recompute_scale_factor"])
    if sizes is None or min(sizes) < 1:
        return NotImplemented
    return _meta((*input.shape[:2], *sizes), input.dtype)


def _interpolated_sizes(sizes: Sequence[int], size: Any, scale_factor: Any, recompute: Any) -> list[int] | None:
    """F.interpolate's output sizes: `size`, or each input size times its scale, floored."""
    if (size is None) == (scale_factor is None):
        return None
    if size is not None:
        requested = [size] * len(sizes) if _is_int(size) else size
        if recompute or not isinstance(requested, (list, tuple)) or len(requested) != len(sizes):
            return None
        return list(requested) if all(_is_int(item) for item in requested) else None
    scales = [scale_factor] * len(sizes) if _is_number(scale_factor) else scale_factor
    if not isinstance(scales, (list, tuple)) or len(scales) != len(sizes) or not all(_is_number(s) for s in scales):
        return None
    # Both of torch's paths multiply in double precision and truncate, which for positive sizes floors.
    return [math.floor(size * float(scale)) for size, scale in zip(sizes, scales, strict=True)]


# --- matrix products ----------------------------------------------------------------------

_BMM = _signature(lambda input, mat2: None)
_BADDBMM = _signature(lambda input, batch1, batch2, *, beta=1, alpha=1: None)
_ATTENTION = _signature(
    lambda query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False: None
)


def matmul_shape(left: Sequence[int], right: Sequence[int]) -> Shape:
    """torch.matmul's output shape: 1-D operands act as a row or a column, batches broadcast.

    Raises:
        RuntimeError: where an operand is 0-D, the inner sizes differ or the batches do not broadcast.
    """
    if not left or not right:
        raise RuntimeError(
            f"both arguments to matmul need to be at least 1D, but they are {len(left)}D and {len(right)}D"
        )
    rows = (left[-2],) if len(left) >= 2 else ()
    columns = (right[-1],) if len(right) >= 2 else ()
    inner = right[-2] if len(right) >= 2 else right[0]
    if left[-1] != inner:
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows[0] if rows else 1}x{left[-1]} and "
            f"{inner}x{columns[0] if columns else 1})"
        )
    return (*broadcast_shapes(left[:-2], right[:-2]), *rows, *columns)


def _matmul(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_PLAIN_BINARY, args, kwargs)
    if bound is None or not _floating(bound["input"], bound["other"]):
        return NotImplemented
    return _meta(matmul_shape(bound["input"].shape, bound["other"].shape), bound["input"].dtype)


def _reflected_matmul(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Tensor.__rmatmul__(self, other) is `other @ self`."""
    bound = _bind(_PLAIN_BINARY, args, kwargs)
    return NotImplemented if bound is None else _matmul((bound["other"], bound["input"]), {})


def _check_batches(first: torch.Tensor, second: torch.Tensor) -> None:
    """bmm's check, with torch's message: batch2 must be (batch, inner, columns)."""
    expected = [first.shape[0], first.shape[2]]
    if list(second.shape[:2]) != expected:
        raise RuntimeError(
            f"Expected size for first two dimensions of batch2 tensor to be: {expected} "
            f"but got: {list(second.shape[:2])}."
        )


def _bmm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_BMM, args, kwargs)
    if bound is None or not _floating(bound["input"], bound["mat2"]):
        return NotImplemented
    first, second = bound["input"], bound["mat2"]
    for name, tensor in (("batch1", first), ("batch2", second)):
        if tensor.dim() != 3:
            raise RuntimeError(f"{name} must be a 3D tensor")
    _check_batches(first, second)
    return _meta((first.shape[0], first.shape[1], second.shape[2]), first.dtype)


def _baddbmm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = _bind(_BADDBMM, args, kwargs)
    if bound is None or not _floating(bound["input"], bound["batch1"], bound["batch2"]):
        return NotImplemented
    input, first, second = bound["input"], bound["batch1"], bound["batch2"]
    if first.dim() != 3 or second.dim() != 3 or input.dim() > 3:
        return NotImplemented  # torch's errors here are of mixed types
    if not _is_number(bound["beta"]) or not _is_number(bound["alpha"]):
        return NotImplemented
    _check_batches(first, second)
    shape = (first.shape[0], first.shape[1], second.shape[2])
    # `input` expands to the product's shape; unlike broadcasting, it never grows the product.
    for dim, size in enumerate(input.shape[::-1]):
        if size not in (1, shape[-1 - dim]):
            raise RuntimeError(
                f"The expanded size of the tensor ({shape[-1 - dim]}) must match the existing size ({size}) at "
                f"non-singleton dimension {2 - dim}.  Target sizes: {list(shape)}.  Tensor sizes: {list(input.shape)}"
            )
    return _meta(shape, input.dtype)


def _attention(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """F.scaled_dot_product_attention with equal batch dims: (..., L, E), (..., S, E), (..., S, Ev)."""
    bound = _bind(_ATTENTION, args, kwargs)
    if bound is None or not _floating(bound["query"], bound["key"], bound["value"]) or not _attention_options(bound):
        return NotImplemented
    query, key, value, mask = bound["query"], bound["key"], bound["value"], bound["attn_mask"]
    if not query.dim() == key.dim() == value.dim() >= 2 or 0 in (*query.shape, *key.shape, *value.shape):
        return NotImplemented
    if not query.shape[:-2] == key.shape[:-2] == value.shape[:-2]:
        return NotImplemented  # broadcast batches: torch's rules differ by kernel
    if key.shape[-2] != value.shape[-2]:
        return NotImplemented  # torch's CPU flash kernel reads such a value without a word; others raise
    if key.shape[-1] != query.shape[-1]:
        raise RuntimeError(
            f"scaled_dot_product_attention: query {list(query.shape)} and key {list(key.shape)} "
            "must agree on their last size"
        )
    scores = (*query.shape[:-1], key.shape[-2])  # (..., L, S)
    # torch adds the mask to the scores in place: the mask may broadcast, but not grow them.
    if mask is not None and (broadcast := broadcast_shapes(scores, mask.shape)) != scores:
        raise RuntimeError(f"output with shape {list(scores)} doesn't match the broadcast shape {list(broadcast)}")
    return _meta((*query.shape[:-1], value.shape[-1]), query.dtype)


def _attention_options(bound: dict[str, Any]) -> bool:
    """The options torch takes without a message of its own, grouped query attention aside."""
    mask, is_causal, scale, dropout = bound["attn_mask"], bound["is_causal"], bound["scale"], bound["dropout_p"]
    if bound["enable_gqa"] or not isinstance(is_causal, bool) or (is_causal and mask is not None):
        return False
    if mask is not None and (
        not isinstance(mask, torch.Tensor) or mask.dtype not in (torch.bool, bound["query"].dtype)
    ):
        return False
    return (scale is None or _is_number(scale)) and _is_number(dropout) and 0 <= dropout <= 1


# --- the table ----------------------------------------------------------------------------


def _register_elementwise() -> None:
    tensor_class = torch.Tensor
    function: Callable[..., Any]
    for name in ("sin", "cos", "exp", "log", "sqrt", "rsqrt", "sigmoid", "tanh"):
        META_SHAPES[getattr(torch, name)] = META_SHAPES[getattr(tensor_class, name)] = _float_unary
    for function in (F.silu, F.mish, F.relu):
        META_SHAPES[function] = _activation(_signature(function))
    META_SHAPES[F.gelu] = _activation(_signature(lambda input, *, approximate="none": None))
    for function in (torch.relu, tensor_class.relu):
        META_SHAPES[function] = _activation(_UNARY)
    for function in (F.softmax, F.log_softmax):
        META_SHAPES[function] = _softmax(_signature(function))
    for function in (torch.softmax, tensor_class.softmax, torch.log_softmax, tensor_class.log_softmax):
        META_SHAPES[function] = _softmax(_signature(lambda input, dim, dtype=None: None))
    META_SHAPES.update({torch.neg: _negative, tensor_class.neg: _negative, F.dropout: _dropout})
    META_SHAPES.update({torch.mean: _mean, tensor_class.mean: _mean})


def _register_binary() -> None:
    tensor_class = torch.Tensor
    for operation in ("add", "sub", "mul", "div"):
        META_SHAPES[getattr(torch, operation)] = META_SHAPES[getattr(tensor_class, operation)] = _binary(operation)
        META_SHAPES[getattr(tensor_class, operation + "_")] = _binary(operation, in_place=True)
    for function in (torch.pow, tensor_class.pow, tensor_class.__pow__):
        META_SHAPES[function] = _binary("pow")
    for function in (tensor_class.pow_, tensor_class.__ipow__):
        META_SHAPES[function] = _binary("pow", in_place=True)
    # Reflected: `2 - x` arrives as __rsub__(x, 2), `2 / x` as __rdiv__(x, 2), `2 ** x` as __rpow__(x, 2).
    META_SHAPES[tensor_class.__rsub__] = _binary("sub")
    META_SHAPES[tensor_class.__rtruediv__] = _reflected_division
    META_SHAPES[tensor_class.__rpow__] = _binary("reflected pow")
    # This torch reports `x + y` as Tensor.add and `x += y` as Tensor.add_; older ones report the operators.
    operators = {
        "add": ("__add__", "__radd__"),
        "sub": ("__sub__",),
        "mul": ("__mul__", "__rmul__"),
        "div": ("__truediv__",),
    }
    for operation, names in operators.items():
        for name in names:
            META_SHAPES[getattr(tensor_class, name)] = _binary(operation)
    for operation, name in {"add": "__iadd__", "sub": "__isub__", "mul": "__imul__", "div": "__itruediv__"}.items():
        META_SHAPES[getattr(tensor_class, name)] = _binary(operation, in_place=True)


def _register_layers() -> None:
    tensor_class = torch.Tensor
    for spatial in (1, 2, 3):
        META_SHAPES[getattr(torch, f"conv{spatial}d")] = _convolution(spatial, transposed=False)
        META_SHAPES[getattr(torch, f"conv_transpose{spatial}d")] = _convolution(spatial, transposed=True)
        META_SHAPES[getattr(F, f"avg_pool{spatial}d")] = _pooling(spatial, maximum=False)
        META_SHAPES[getattr(F, f"max_pool{spatial}d")] = _pooling(spatial, maximum=True)
        META_SHAPES[getattr(F, f"max_pool{spatial}d_with_indices")] = _pooling(spatial, maximum=True, with_indices=True)
    META_SHAPES.update(
        {
            F.linear: _linear,
            F.group_norm: _group_norm,
            F.batch_norm: _batch_norm,
            F.instance_norm: _instance_norm,
            F.layer_norm: _layer_norm,
            F.adaptive_avg_pool2d: _adaptive_average_pool,
            F.interpolate: _interpolate,
            torch.matmul: _matmul,
            tensor_class.matmul: _matmul,
            tensor_class.__matmul__: _matmul,
            tensor_class.__rmatmul__: _reflected_matmul,
            torch.bmm: _bmm,
            tensor_class.bmm: _bmm,
            torch.baddbmm: _baddbmm,
            tensor_class.baddbmm: _baddbmm,
            F.scaled_dot_product_attention: _attention,
        }
    )


_register_elementwise()
_register_binary()
_register_layers()
