"""FLOPs of each function a forward calls, keyed by the objects a TorchFunctionMode receives.

FLOP_FORMULAS holds the functions FlopCounterMode counts (convolutions, linear, matrix products,
einsum, attention), so that a trace's `flops` equal its total. OTHER_FLOPS estimates the rest,
kept apart in `other_flops`: 1 per output element for elementwise ops, 5 per element for a
normalisation, 5 for a softmax, the window per output element for pooling, 2 per spatial dim
per output element for linear interpolation (16 for bicubic) and 0 for nearest, copies and views.
ATTENTION gives attention's quadratic products and its query length, for the levels of the U.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from shapetrace.tracing._torch_compat import C_LINEAR, C_SCALED_DOT_PRODUCT_ATTENTION
from shapetrace.tracing.cost import products
from shapetrace.tracing.cost.recurrent import RECURRENT, recurrent_flops, recurrent_other_flops
from shapetrace.tracing.metashapes.arguments import bind, signature_of

Formula = Callable[[Sequence[Any], dict[str, Any], Any], int]
AttentionFormula = Callable[[Sequence[Any], dict[str, Any]], tuple[int, int]]

_CONVOLUTION = signature_of(lambda input, weight, *rest, **options: None)
_MULTI_HEAD_ATTENTION = signature_of(F.multi_head_attention_forward)
_ATTENTION = signature_of(
    lambda query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False: None
)


def _shape(value: Any) -> Sequence[int]:
    return value.shape if isinstance(value, torch.Tensor) else ()


def _argument(args: Sequence[Any], kwargs: dict[str, Any], position: int, name: str) -> Any:
    return args[position] if len(args) > position else kwargs.get(name)


def _convolution(*, transposed: bool) -> Formula:
    def formula(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
        weight = _argument(args, kwargs, 1, "weight")
        return products.convolution_flops(
            _shape(_argument(args, kwargs, 0, "input")), _shape(weight), _shape(output), transposed=transposed
        )

    return formula


def _linear(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    return products.linear_flops(
        _shape(_argument(args, kwargs, 0, "input")), _shape(_argument(args, kwargs, 1, "weight"))
    )


def _product(first: int, second: int, *names: str) -> Formula:
    """A two-operand product whose operands sit at `first` and `second` (mm, bmm, addmm, matmul)."""

    def formula(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
        left = _shape(_argument(args, kwargs, first, names[0]))
        right = _shape(_argument(args, kwargs, second, names[1]))
        return products.matmul_flops(left, right)

    return formula


def _reflected_matmul(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    """Tensor.__rmatmul__(self, other) is `other @ self`."""
    return products.matmul_flops(_shape(_argument(args, kwargs, 1, "other")), _shape(args[0] if args else None))


def _einsum(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    equation = args[0] if args else kwargs.get("equation")
    operands = list(args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])  # torch.einsum("ij,jk", [a, b])
    if not isinstance(equation, str) or not all(isinstance(operand, torch.Tensor) for operand in operands):
        return 0
    return products.einsum_flops(equation, [tuple(operand.shape) for operand in operands])


def _tensordot(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    """torch.tensordot reshapes both sides to matrices and multiplies them with mm."""
    left = _shape(_argument(args, kwargs, 0, "a"))
    dims = _argument(args, kwargs, 2, "dims")
    dims = 2 if dims is None else dims
    if isinstance(dims, int):
        contracted = [len(left) - dims + i for i in range(dims)]
    elif isinstance(dims, (list, tuple)) and len(dims) == 2:
        contracted = [d % len(left) for d in (dims[0] if isinstance(dims[0], (list, tuple)) else [dims[0]])]
    else:
        return 0
    inner = math.prod(left[d] for d in contracted)
    rows = math.prod(size for d, size in enumerate(left) if d not in contracted)
    columns = math.prod(_shape(output)) // max(rows, 1)
    return products.mm_flops(rows, inner, columns)


def _attention_shapes(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[Sequence[int], ...] | None:
    bound = bind(_ATTENTION, args, kwargs)
    if bound is None:
        return None
    return _shape(bound["query"]), _shape(bound["key"]), _shape(bound["value"])


def _scaled_dot_product(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    shapes = _attention_shapes(args, kwargs)
    return 0 if shapes is None else products.attention_flops(*shapes)


def _scaled_dot_product_attention(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[int, int]:
    shapes = _attention_shapes(args, kwargs)
    if shapes is None or len(shapes[0]) < 2:
        return 0, 0
    return products.attention_flops(*shapes), shapes[0][-2]


def _multi_head(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[int, int, int]:
    """(all FLOPs, attention's share, query length) of F.multi_head_attention_forward."""
    bound = bind(_MULTI_HEAD_ATTENTION, args, kwargs)
    if bound is None:
        return 0, 0, 0
    query, key = _shape(bound["query"]), _shape(bound["key"])
    embed = query[-1] if query else 0
    if bound["use_separate_proj_weight"]:
        weights = [_shape(bound[name]) for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
    else:
        weights = [(embed, embed)] * 3
    extra = (bound["bias_k"] is not None) + bool(bound["add_zero_attn"])
    total, attention = products.multi_head_attention_flops(
        query, key, weights, _shape(bound["out_proj_weight"]), bound["num_heads"], extra
    )
    return total, attention, query[0] if query else 0


FLOP_FORMULAS: dict[Callable[..., Any], Formula] = {
    C_LINEAR: _linear,
    torch.functional.einsum: _einsum,
    torch.tensordot: _tensordot,
    C_SCALED_DOT_PRODUCT_ATTENTION: _scaled_dot_product,
    F.multi_head_attention_forward: lambda args, kwargs, output: _multi_head(args, kwargs)[0],
    torch.Tensor.__rmatmul__: _reflected_matmul,
}
for _spatial in (1, 2, 3):
    FLOP_FORMULAS[getattr(torch, f"conv{_spatial}d")] = _convolution(transposed=False)
    FLOP_FORMULAS[getattr(torch, f"conv_transpose{_spatial}d")] = _convolution(transposed=True)
for _owner in (torch, torch.Tensor):
    FLOP_FORMULAS[_owner.matmul] = _product(0, 1, "input", "other")
    FLOP_FORMULAS[_owner.mm] = _product(0, 1, "input", "mat2")
    FLOP_FORMULAS[_owner.bmm] = _product(0, 1, "input", "mat2")
    FLOP_FORMULAS[_owner.addmm] = _product(1, 2, "mat1", "mat2")
    FLOP_FORMULAS[_owner.baddbmm] = _product(1, 2, "batch1", "batch2")
FLOP_FORMULAS[torch.Tensor.__matmul__] = _product(0, 1, "input", "other")
for _recurrent in RECURRENT:
    FLOP_FORMULAS[_recurrent] = recurrent_flops

ATTENTION: dict[Callable[..., Any], AttentionFormula] = {
    C_SCALED_DOT_PRODUCT_ATTENTION: _scaled_dot_product_attention,
    F.multi_head_attention_forward: lambda args, kwargs: _multi_head(args, kwargs)[1:],
}


# --- estimates of the rest --------------------------------------------------------------


Estimate = Formula | int
"""An estimate of other FLOPs: a function of the call, or FLOPs per output element."""


def _per_input_element(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    source = _argument(args, kwargs, 0, "input")
    return source.numel() if isinstance(source, torch.Tensor) else 0


def _pooling(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    first = output[0] if isinstance(output, (tuple, list)) else output
    kernel = _argument(args, kwargs, 1, "kernel_size")
    if not isinstance(first, torch.Tensor):
        return 0
    spatial = first.dim() - 2 if first.dim() > 2 else 1
    window: int = math.prod(kernel) if isinstance(kernel, (list, tuple)) else (kernel or 1) ** spatial
    return first.numel() * window


def _interpolation(args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> int:
    mode = _argument(args, kwargs, 3, "mode") or "nearest"
    if not isinstance(output, torch.Tensor) or "nearest" in mode or mode == "area":
        return 0
    points: int = output.numel()
    if mode == "bicubic":
        return 16 * points
    corners: int = 2 ** max(output.dim() - 2, 1)
    return corners * points


_ELEMENTWISE = (
    "add",
    "sub",
    "mul",
    "div",
    "true_divide",
    "pow",
    "neg",
    "abs",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "reciprocal",
    "relu",
    "clamp",
    "clip",
    "maximum",
    "minimum",
    "where",
    "square",
    "erf",
)
_OPERATORS = (
    "add",
    "sub",
    "mul",
    "truediv",
    "pow",
    "neg",
    "abs",
    "radd",
    "rsub",
    "rmul",
    "rtruediv",
    "rpow",
    "iadd",
    "isub",
    "imul",
    "itruediv",
)
_ACTIVATIONS = (
    F.silu,
    F.gelu,
    F.mish,
    F.relu,
    F.leaky_relu,
    F.elu,
    F.softplus,
    F.hardswish,
    F.sigmoid,
    F.tanh,
    F.relu6,
    F.hardtanh,
    F.selu,
    F.celu,
    F.hardsigmoid,
    F.softsign,
    F.logsigmoid,
    F.glu,
    torch.prelu,
)
_NORMS = (F.group_norm, F.layer_norm, F.batch_norm, F.instance_norm)

OTHER_FLOPS: dict[Callable[..., Any], Estimate] = dict.fromkeys(_ACTIVATIONS, 1)
for _name in _ELEMENTWISE:
    for _function in (
        getattr(torch, _name, None),
        getattr(torch.Tensor, _name, None),
        getattr(torch.Tensor, _name + "_", None),
    ):
        if _function is not None:
            OTHER_FLOPS[_function] = 1
for _name in _OPERATORS:
    OTHER_FLOPS[getattr(torch.Tensor, f"__{_name}__")] = 1
for _function in (*_NORMS, F.softmax, F.log_softmax, torch.softmax, torch.Tensor.softmax, torch.log_softmax):
    OTHER_FLOPS[_function] = 5
for _function in (
    torch.mean,
    torch.Tensor.mean,
    torch.sum,
    torch.Tensor.sum,
    F.adaptive_avg_pool2d,
    torch.norm,
    torch.Tensor.norm,
    torch.linalg.vector_norm,
):
    OTHER_FLOPS[_function] = _per_input_element
for _spatial in (1, 2, 3):
    for _kind in ("avg", "max"):
        OTHER_FLOPS[getattr(F, f"{_kind}_pool{_spatial}d")] = _pooling
    OTHER_FLOPS[getattr(F, f"max_pool{_spatial}d_with_indices")] = _pooling
OTHER_FLOPS[F.interpolate] = _interpolation
OTHER_FLOPS[F.normalize] = 3  # a square and a sum per element for the norm, then a division
for _recurrent in RECURRENT:
    OTHER_FLOPS[_recurrent] = recurrent_other_flops
