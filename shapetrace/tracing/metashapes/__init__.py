"""Output shapes of common ops on meta tensors, computed in Python without torch's meta kernels.

In this torch, the first Python-implemented meta kernel in a process (most elementwise ops,
convolutions, norms, pooling and matrix products on meta) imports torch._dynamo and sympy:
0.5 to 2 seconds, more than a whole trace. For the ops listed here the tracer computes the
output itself, an empty meta tensor of torch's shape and dtype, and raises where torch
raises for the mistakes a trace looks for: broadcasting, channels, sizes too small. What it
raises is a ShapeMismatch (`mismatch`), torch's message and exception type with the kind of
break it is, so that a trace tells the model's mistakes from a bug of shapetrace.

A shape function returns NotImplemented for every case it does not claim to reproduce
exactly (an unusual dtype, an argument torch rejects with a message of its own), and torch
runs instead. An elementwise output keeps its inputs' dimension order, as torch's does
(`layout`: a later `.contiguous()`, `.view()` or matrix product depends on it); the other
outputs are contiguous, as torch makes them for contiguous or permuted inputs (channels-last
inputs aside).

Keys are the objects a TorchFunctionMode receives, which are not always the ones called:
`x + y` arrives as `Tensor.add`, `x += y` as `Tensor.add_`, `2 - x` as `Tensor.__rsub__`,
`x ** 2` as `Tensor.__pow__`, `F.conv2d` as `torch.conv2d`, `F.sigmoid` as `Tensor.sigmoid`;
`F.silu`, `F.group_norm` and `F.interpolate` arrive as themselves.

Views, `.float()`, factories and `F.pad` in constant mode never reach a Python meta kernel, so
they are not listed; `F.pad` in reflect, replicate or circular mode (a Conv2d's `padding_mode`)
does, and is.

Each module covers one family of ops and adds its shape functions to META_SHAPES:
`elementwise` (unary ops, activations, dropout, softmax, mean, binary ops with broadcasting),
`layers` (convolution, linear, normalization), `resampling` (pooling, interpolation) and
`products` (matrix products, attention); `arguments` binds a call's arguments for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from shapetrace.tracing.metashapes import elementwise, layers, products, resampling
from shapetrace.tracing.metashapes.arguments import ShapeTable
from shapetrace.tracing.metashapes.elementwise import broadcast_shapes
from shapetrace.tracing.metashapes.mismatch import ShapeMismatch, ValueMismatch
from shapetrace.tracing.metashapes.products import matmul_shape
from shapetrace.tracing.metashapes.resampling import pooled_size

__all__ = [
    "META_SHAPES",
    "ShapeMismatch",
    "ValueMismatch",
    "broadcast_shapes",
    "call",
    "call_torch",
    "matmul_shape",
    "pooled_size",
]

META_SHAPES: ShapeTable = {}
"""The functions whose meta output this package computes, keyed as they arrive; each module adds its own."""
elementwise.register(META_SHAPES)
layers.register(META_SHAPES)
resampling.register(META_SHAPES)
products.register(META_SHAPES)


def call(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """`func(*args, **kwargs)`, computed here when every tensor argument is on meta.

    Returns:
        What torch returns: the shape function's empty meta tensor, or torch's own result
        where there is no shape function, a tensor is elsewhere, or autograd is recording.

    Raises:
        ShapeMismatch: where torch would raise, for the mistakes the shape functions check
            (a RuntimeError, or a ValueError where torch raises that).
    """
    shape_function = META_SHAPES.get(func)
    if shape_function is not None and _all_meta(args, kwargs) and not _needs_autograd(args, kwargs):
        output = shape_function(args, kwargs)
        if output is not NotImplemented:
            return output
    return call_torch(func, args, kwargs)


def call_torch(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """`func(*args, **kwargs)`: every op the tracers hand to torch goes through this one frame.

    An exception whose innermost frame is this one was raised by torch's own (C++) op, not
    by shapetrace: `shapetrace.tracing.failures` tells the two apart by it.
    """
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
