"""Shorter paths through the meter for the functions a UNet calls most.

`CostMeter.op` takes one generic path for every op: ask each argument (and each list among
them) whether it requires grad, look up the function's entry, call its formula and its rule
through their general argument handling. A handler here does the same work for one function
as its common call hands it over (conv2d's positional arguments, group_norm's `(input,
num_groups)` and keywords, attention's q, k, v): it reads the tensors where that call puts
them, asks the likeliest argument about grad first (a layer's weight), and calls the products
and rules directly. Where a call does not look as expected it answers False, having changed
nothing, and the generic path runs. The results are the generic path's: tests/test_cost_fast.py
checks the handlers against it on every cost test model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from shapetrace.tracing._torch_compat import C_LINEAR, C_SCALED_DOT_PRODUCT_ATTENTION
from shapetrace.tracing.cost import batched, products, saving
from shapetrace.tracing.cost.flops import FLOP_FORMULAS, OTHER_FLOPS

if TYPE_CHECKING:
    from shapetrace.tracing.cost.meter import CostMeter

Handler = Callable[["CostMeter", Sequence[Any], dict[str, Any], Any, int], bool]
"""(meter, args, kwargs, output, call) -> whether the op was charged (False: take the generic path)."""

_TENSOR = torch.Tensor
_PARAMETER = nn.Parameter
_TENSORS = (torch.Tensor, nn.Parameter)
_LAYER_NORM_KEYWORDS = frozenset({"weight", "bias", "eps"})
_ATTENTION_KEYWORDS = frozenset({"attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"})


def _weight_grad(meter: CostMeter, weight: torch.Tensor) -> bool:
    """Whether a layer's weight needs a gradient: a parameter answers itself (the meter never follows one)."""
    return bool(weight.requires_grad) if type(weight) is _PARAMETER else meter.requires_grad(weight)


def _convolution(*, transposed: bool) -> Handler:
    """torch.convNd as nn.ConvNd calls it: (input, weight, bias, stride, padding, dilation, groups).

    The commonest op of a UNet, so products.convolution_flops is written out.
    """

    def handler(meter: CostMeter, args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> bool:
        if kwargs or len(args) < 2 or type(output) is not _TENSOR:
            return False
        source, weight = args[0], args[1]
        if type(source) is not _TENSOR or type(weight) not in _TENSORS:
            return False
        weight_shape = weight.shape
        source_shape = source.shape
        spatial = len(weight_shape) - 2
        if spatial < 1 or len(source_shape) != spatial + 2:
            return False  # unbatched, or no convolution torch runs: the general path
        grad = _weight_grad(meter, weight) or meter.requires_grad(source) or meter.any_grad(args[2:])
        meter.track(output, grad, call)
        points = source_shape[2:] if transposed else output.shape[2:]
        meter.flops += (call, 2 * source_shape[0] * math.prod(points) * math.prod(weight_shape))
        if grad:
            meter.saving = call
            meter.save(source)
            if type(weight) is not _PARAMETER:  # a layer's own weight is the model's, never kept as saved
                meter.save(weight)
        return True

    return handler


def _linear(meter: CostMeter, args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> bool:
    """F.linear as nn.Linear calls it: (input, weight, bias)."""
    if kwargs or len(args) < 2 or type(output) is not _TENSOR:
        return False
    source, weight = args[0], args[1]
    if type(source) not in _TENSORS or type(weight) not in _TENSORS:
        return False
    weight_shape = weight.shape
    if len(weight_shape) != 2 or not source.dim():
        return False
    weight_grad = _weight_grad(meter, weight)
    # The input's gradient is asked for only where it decides something: the op needs a
    # gradient at all, or a weight the model does not hold is kept for it.
    source_grad = (not weight_grad or type(weight) is not _PARAMETER) and meter.requires_grad(source)
    grad = weight_grad or source_grad or meter.any_grad(args[2:])
    meter.track(output, grad, call)
    # products.linear_flops written out: the rows are the input's entries over its last extent.
    columns = source.shape[-1]
    rows = source.numel() // columns if columns else math.prod(source.shape[:-1])
    meter.flops += (call, 2 * rows * weight_shape[1] * weight_shape[0])
    if grad:
        # saving's linear rule, with the two answers it would ask for again.
        meter.saving = call
        if source.dim() > 2 and not source.is_contiguous():
            batched.matmul(meter, (source, weight.t()), {}, output)  # at::linear's path: matmul
            return True
        if weight_grad:
            meter.save(source)  # rows flattened for addmm: a view
        if source_grad:  # a parameter is never kept as saved
            meter.save(weight)
    return True


def _normalisation(rule: saving.Rule) -> Handler:
    """F.group_norm and F.layer_norm as torch hands them to a mode: (input, size), weight=, bias=, eps=."""

    def handler(meter: CostMeter, args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> bool:
        if len(args) != 2 or type(output) is not _TENSOR or not kwargs.keys() <= _LAYER_NORM_KEYWORDS:
            return False
        source = args[0]
        if type(source) is not _TENSOR:
            return False
        weight = kwargs.get("weight")
        grad = isinstance(weight, _TENSORS) and _weight_grad(meter, weight)
        grad = grad or meter.requires_grad(source) or meter.any_grad(args[1:]) or meter.any_grad(kwargs.values())
        meter.track(output, grad, call)
        meter.other_flops += (call, 5 * output.numel())
        if grad:
            meter.saving = call
            rule(meter, args, kwargs, output)
        return True

    return handler


def _layer_norm_rule(meter: saving.Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """saving's layer-norm rule for `(input, normalized_shape)` and keywords, without binding."""
    source, normalized_shape = args[0], args[1]
    meter.save(source)
    meter.save(kwargs.get("weight"))
    meter.save(kwargs.get("bias"))
    normalized = len(normalized_shape) if isinstance(normalized_shape, (list, tuple)) else 1
    meter.save_new(2 * math.prod(source.shape[: source.dim() - normalized]) * source.element_size())


def _elementwise(rule: saving.Rule | None) -> Handler:
    """A function of one FLOP per output element (add, mul, div, silu, gelu...) and its saving rule."""

    def handler(meter: CostMeter, args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> bool:
        if type(output) is not _TENSOR:
            return False
        grad = meter.any_grad(args) or (bool(kwargs) and meter.any_grad(kwargs.values()))
        meter.track(output, grad, call)
        meter.other_flops += (call, output.numel())
        if grad and rule is not None:
            meter.saving = call
            rule(meter, args, kwargs, output)
        return True

    return handler


def _attention(meter: CostMeter, args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> bool:
    """F.scaled_dot_product_attention(query, key, value, attn_mask=..., ...), as diffusers calls it."""
    if len(args) != 3 or type(output) is not _TENSOR or not kwargs.keys() <= _ATTENTION_KEYWORDS:
        return False
    query, key, value = args
    if type(query) is not _TENSOR or type(key) is not _TENSOR or type(value) is not _TENSOR:
        return False
    grad = meter.any_grad(args) or (bool(kwargs) and meter.any_grad(kwargs.values()))
    meter.track(output, grad, call)
    query_shape = query.shape
    flops = products.attention_flops(query_shape, key.shape, value.shape)
    meter.flops += (call, flops)
    long_enough = len(query_shape) >= 2
    meter.attention_flops[call] += flops if long_enough else 0
    meter.attention_tokens[call] = max(meter.attention_tokens[call], query_shape[-2] if long_enough else 0)
    if grad:
        meter.saving = call
        saving.fused_or_math_attention(meter, query, key, value, kwargs.get("attn_mask"), output)
    return True


def _read(meter: CostMeter, args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> bool:
    """`x.shape`, `x.dtype`, `x.device`, `x.ndim`: a property read makes no tensor, so nothing is charged."""
    return type(output) is not _TENSOR


_PROPERTIES = ("shape", "dtype", "device", "ndim", "is_cuda", "requires_grad")
"""Tensor properties a forward reads on every block: each read passes the function mode."""


def _handlers() -> dict[Callable[..., Any], Handler]:
    handlers: dict[Callable[..., Any], Handler] = {
        **{getattr(torch.Tensor, name).__get__: _read for name in _PROPERTIES},
        C_LINEAR: _linear,
        F.group_norm: _normalisation(saving.SAVES[F.group_norm]),
        F.layer_norm: _normalisation(_layer_norm_rule),
        C_SCALED_DOT_PRODUCT_ATTENTION: _attention,
    }
    for spatial in (1, 2, 3):
        handlers[getattr(torch, f"conv{spatial}d")] = _convolution(transposed=False)
        handlers[getattr(torch, f"conv_transpose{spatial}d")] = _convolution(transposed=True)
    for function, estimate in OTHER_FLOPS.items():
        if estimate == 1 and type(estimate) is int and function not in FLOP_FORMULAS:
            handlers[function] = _elementwise(saving.SAVES.get(function))
    return handlers


HANDLERS = _handlers()
"""The handler of each function that has one."""
