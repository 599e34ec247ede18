"""What autograd saves for backward, per function, read off torch's derivative formulas.

A trace runs under no_grad, so nothing is saved for real: each rule names the tensors the
function's backward node would keep in training, given which of its inputs require grad
(`Saver.requires_grad`). The meter counts each storage once and leaves parameters out, as
`torch.autograd.graph.saved_tensors_hooks` would see them (tests/test_cost.py checks the sum
against those hooks on real CPU forwards). Tensors the backward keeps that are not an input
or the output (a norm's mean and rstd, attention's logsumexp, pooling indices) are `save_new`.
A function without a rule saves nothing: views, copies, sums, concatenation, resampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from shapetrace.tracing._torch_compat import C_LINEAR, C_SCALED_DOT_PRODUCT_ATTENTION
from shapetrace.tracing.cost import batched, recurrent, saving_norms
from shapetrace.tracing.metashapes.arguments import bind, signature_of


class Saver(Protocol):
    """The meter's side of a rule."""

    def requires_grad(self, tensor: torch.Tensor) -> bool: ...

    def save(self, tensor: Any) -> None:
        """Keep `tensor`'s storage (ignored for None, non-tensors and parameters)."""

    def save_new(self, nbytes: int) -> None:
        """Keep a new tensor of `nbytes` that the forward made for its backward."""


Rule = Callable[[Saver, Sequence[Any], dict[str, Any], Any], None]


def _first(args: Sequence[Any], kwargs: dict[str, Any], name: str = "input") -> Any:
    return args[0] if args else kwargs.get(name, kwargs.get("self"))


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _input(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    saver.save(args[0] if args else _first(args, kwargs))


def _input_and_its_size(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    source = args[0] if args else _first(args, kwargs)
    saver.save(source)
    if isinstance(source, torch.Tensor):
        saver.save_new(_bytes(source))


def _output(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    saver.save(output)


def _input_and_output(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """A norm or extremum over dims (torch.norm, std, amax): its input, and the reduced result."""
    saver.save(_first(args, kwargs))
    saver.save(output)


def _normalize(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """F.normalize, `x / x.norm(dim).clamp_min(eps)`: the input, the norm and its clamp, both reduced."""
    source = _first(args, kwargs)
    if not isinstance(source, torch.Tensor) or not source.dim():
        return
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 1)
    extent = source.shape[dim] if isinstance(dim, int) and -source.dim() <= dim < source.dim() else 0
    saver.save(source)
    if extent:
        saver.save_new(2 * (source.numel() // extent) * source.element_size())


def _mask(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """masked_fill(input, mask, value): the mask."""
    saver.save(args[1] if len(args) > 1 else kwargs.get("mask"))


def _operands(first: int, second: int) -> Rule:
    """A product keeps each operand for the other's gradient (mul, div's numerator, mm, bmm)."""

    def rule(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
        operands = [*args, *kwargs.values()]
        if len(operands) <= max(first, second):
            return
        left, right = operands[first], operands[second]
        if isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor):
            if saver.requires_grad(left):
                saver.save(right)
            if saver.requires_grad(right):
                saver.save(left)

    return rule


def _division(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    operands = [*args, *kwargs.values()]
    if len(operands) < 2 or not isinstance(operands[1], torch.Tensor):
        return  # divided by a Python number: nothing to keep
    numerator, denominator = operands[0], operands[1]
    if isinstance(numerator, torch.Tensor) and saver.requires_grad(numerator):
        saver.save(denominator)
    if saver.requires_grad(denominator):
        saver.save(numerator)
        saver.save(denominator)


def _power(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    saver.save(_first(args, kwargs))
    exponent = args[1] if len(args) > 1 else kwargs.get("exponent")
    if isinstance(exponent, torch.Tensor) and saver.requires_grad(exponent):
        saver.save(exponent)
        saver.save(output)


def _convolution(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    saver.save(args[0] if args else _first(args, kwargs))
    weight = args[1] if len(args) > 1 else kwargs.get("weight")
    if type(weight) is not nn.Parameter:  # a layer's own weight is the model's, never kept as saved
        saver.save(weight)


def _linear(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    source, weight = _first(args, kwargs), args[1] if len(args) > 1 else kwargs.get("weight")
    if not isinstance(source, torch.Tensor) or not isinstance(weight, torch.Tensor):
        return
    if source.dim() > 2 and not source.is_contiguous():
        batched.matmul(saver, (source, weight.t()), {}, output)  # at::linear's path: matmul
        return
    if saver.requires_grad(weight):
        saver.save(source)  # rows flattened for addmm: a view
    if saver.requires_grad(source):
        saver.save(weight)


def _max_pool(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    saver.save(_first(args, kwargs))
    pooled = output[0] if isinstance(output, (tuple, list)) else output
    if isinstance(pooled, torch.Tensor):
        saver.save_new(pooled.numel() * 8)  # the int64 indices of the maxima


def _adaptive_average(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    size = args[1] if len(args) > 1 else kwargs.get("output_size")
    if size not in (1, (1, 1), [1, 1]):  # an output of 1×1 is a mean, which keeps nothing
        saver.save(_first(args, kwargs))


def _dropout(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    source = _first(args, kwargs)
    probability = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
    training = args[2] if len(args) > 2 else kwargs.get("training", True)
    if training and probability > 0 and isinstance(source, torch.Tensor):
        saver.save_new(_bytes(source))  # the mask, of the input's dtype on the CPU


def _padding(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    if mode != "constant":
        saver.save(_first(args, kwargs))


def _where(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    saver.save(_first(args, kwargs, "condition"))


def _indexed(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """`x[index]` with tensors in the index (aten.index): backward keeps the index tensors, not `x`."""
    index = args[1] if len(args) > 1 else None
    for part in index if isinstance(index, (tuple, list)) else (index,):
        if isinstance(part, torch.Tensor):
            saver.save(part)


def _index_select(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    saver.save(args[2] if len(args) > 2 else kwargs.get("index"))


def _gather(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    saver.save(args[2] if len(args) > 2 else kwargs.get("index"))
    saver.save(_first(args, kwargs))


def _embedding(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    saver.save(_first(args, kwargs))  # the indices


_ATTENTION = signature_of(
    lambda query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False: None
)


def _scaled_dot_product(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    bound = bind(_ATTENTION, args, kwargs)
    if bound is None or not isinstance(output, torch.Tensor):
        return
    fused_or_math_attention(saver, bound["query"], bound["key"], bound["value"], bound["attn_mask"], output)


def fused_or_math_attention(saver: Saver, query: Any, key: Any, value: Any, mask: Any, output: torch.Tensor) -> None:
    """What attention's backward keeps, by the kernel its inputs' rank would pick."""
    if query.dim() >= 4:
        # A fused kernel: q, k, v, the mask, the output and the float32 logsumexp of each query row.
        for tensor in (query, key, value, mask, output):
            saver.save(tensor)
        saver.save_new(math.prod(query.shape[:-1]) * 4)
        return
    # The math path: the scaled query and key, the attention weights, and the values.
    attention = math.prod(query.shape[:-1]) * key.shape[-2] * query.element_size()
    saver.save_new(_bytes(query) + _bytes(key) + attention)
    saver.save(value)


_MULTI_HEAD = signature_of(F.multi_head_attention_forward)


def _multi_head(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """nn.MultiheadAttention's path: the projections' inputs and outputs, the attention, its output."""
    bound = bind(_MULTI_HEAD, args, kwargs)
    if bound is None or not isinstance(bound["query"], torch.Tensor):
        return
    query, key = bound["query"], bound["key"]
    length, embed, element = query.shape[0], query.shape[-1], query.element_size()
    batch = query.shape[1] if query.dim() == 3 else 1
    source = key.shape[0]
    heads = bound["num_heads"]
    rows = length * batch
    saver.save(query) if query.is_contiguous() else saver.save_new(_bytes(query))
    saver.save_new((rows + 2 * source * batch) * embed * element)  # q, k and v projected
    if bound["need_weights"]:
        saver.save_new(rows * embed * element)  # the scaled query
        saver.save_new(batch * heads * length * source * element)  # the attention weights
    else:
        saver.save_new(batch * heads * length * 4 + rows * embed * element)  # logsumexp, output
    saver.save_new(rows * embed * element)  # the heads joined, the output projection's input


SAVES: dict[Callable[..., Any], Rule] = {
    C_LINEAR: _linear,
    F.group_norm: saving_norms.group_norm,
    F.layer_norm: saving_norms.layer_norm,
    F.batch_norm: saving_norms.batch_norm,
    F.instance_norm: saving_norms.instance_norm,
    F.dropout: _dropout,
    F.pad: _padding,
    F.embedding: _embedding,
    F.adaptive_avg_pool2d: _adaptive_average,
    C_SCALED_DOT_PRODUCT_ATTENTION: _scaled_dot_product,
    F.multi_head_attention_forward: _multi_head,
    torch.where: _where,
    torch.Tensor.__getitem__: _indexed,
    F.normalize: _normalize,
    torch.linalg.vector_norm: _input_and_output,
    torch.matmul: batched.matmul,
    torch.Tensor.matmul: batched.matmul,
    torch.Tensor.__matmul__: batched.matmul,
    torch.Tensor.__rmatmul__: batched.reflected_matmul,
    torch.functional.einsum: batched.einsum,
    torch.Tensor.__pow__: _power,
}
for _spatial in (1, 2, 3):
    SAVES[getattr(torch, f"conv{_spatial}d")] = _convolution
    SAVES[getattr(torch, f"conv_transpose{_spatial}d")] = _convolution
    SAVES[getattr(F, f"avg_pool{_spatial}d")] = _input
    SAVES[getattr(F, f"max_pool{_spatial}d")] = _max_pool
    SAVES[getattr(F, f"max_pool{_spatial}d_with_indices")] = _max_pool
_ACTIVATIONS: tuple[Callable[..., Any], ...] = (
    F.silu,
    F.gelu,
    F.mish,
    F.leaky_relu,
    F.elu,
    F.softplus,
    F.hardswish,
    F.relu6,
    F.hardtanh,
    F.selu,
    F.celu,
    F.hardsigmoid,
    F.glu,
    torch.prelu,  # F.prelu itself: and its weight, a parameter
)
for _activation in _ACTIVATIONS:
    SAVES[_activation] = _input
for _activation in (F.softsign, F.logsigmoid):
    SAVES[_activation] = _input_and_its_size  # and an intermediate of the input's size
for _activation in (F.relu, F.softmax, F.log_softmax, F.sigmoid, F.tanh):
    SAVES[_activation] = _output
for _owner in (torch, torch.Tensor):
    for _name in ("sin", "cos", "log", "abs", "clamp", "clip", "clamp_min", "clamp_max", "var", "erf", "square"):
        SAVES[getattr(_owner, _name)] = _input
    for _name in ("std", "norm", "amax", "amin"):
        SAVES[getattr(_owner, _name)] = _input_and_output
    SAVES[_owner.masked_fill] = _mask
    for _name in ("relu", "sigmoid", "tanh", "exp", "sqrt", "rsqrt", "softmax", "log_softmax", "reciprocal"):
        SAVES[getattr(_owner, _name)] = _output
    SAVES[_owner.pow] = _power
    for _name in ("mul", "mm", "bmm"):
        SAVES[getattr(_owner, _name)] = _operands(0, 1)
    SAVES[_owner.addmm] = _operands(1, 2)
    SAVES[_owner.baddbmm] = _operands(1, 2)
    SAVES[_owner.div] = _division
for _function in recurrent.RECURRENT:
    SAVES[_function] = recurrent.make_rule(_function)
for _owner in (torch, torch.Tensor):
    SAVES[_owner.index_select] = _index_select
    SAVES[_owner.gather] = _gather
for _name in ("relu_", "sigmoid_", "tanh_", "exp_"):
    SAVES[getattr(torch.Tensor, _name)] = _output
for _name in ("__mul__", "__rmul__", "mul_", "__imul__"):
    SAVES[getattr(torch.Tensor, _name)] = _operands(0, 1)
for _name in ("__truediv__", "div_", "__itruediv__"):
    SAVES[getattr(torch.Tensor, _name)] = _division
