"""Matrix products: matmul and its operators, bmm, baddbmm, scaled dot-product and multi-head attention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from shapetrace.tracing.metashapes.arguments import Shape, ShapeTable, bind, floating, is_number, meta, signature_of
from shapetrace.tracing.metashapes.elementwise import broadcast_shapes
from shapetrace.tracing.metashapes.mismatch import ShapeMismatch

_MATMUL = signature_of(lambda input, other: None)
_BMM = signature_of(lambda input, mat2: None)
_BADDBMM = signature_of(lambda input, batch1, batch2, *, beta=1, alpha=1: None)
_ATTENTION = signature_of(
    lambda query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False: None
)
_MULTI_HEAD_ATTENTION = signature_of(F.multi_head_attention_forward)
_MULTI_HEAD_EXTRAS = ("bias_k", "bias_v", "key_padding_mask", "attn_mask", "static_k", "static_v")
"""Arguments that change the source length or add checks of their own: with any of them, torch runs."""


def matmul_shape(left: Sequence[int], right: Sequence[int]) -> Shape:
    """torch.matmul's output shape: 1-D operands act as a row or a column, batches broadcast.

    Raises:
        RuntimeError: where an operand is 0-D, the inner sizes differ or the batches do not broadcast.
    """
    if not left or not right:
        raise ShapeMismatch(
            f"both arguments to matmul need to be at least 1D, but they are {len(left)}D and {len(right)}D"
        )
    rows = (left[-2],) if len(left) >= 2 else ()
    columns = (right[-1],) if len(right) >= 2 else ()
    inner = right[-2] if len(right) >= 2 else right[0]
    if left[-1] != inner:
        raise ShapeMismatch(
            f"mat1 and mat2 shapes cannot be multiplied ({rows[0] if rows else 1}x{left[-1]} and "
            f"{inner}x{columns[0] if columns else 1})"
        )
    return (*broadcast_shapes(left[:-2], right[:-2]), *rows, *columns)


def _matmul(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_MATMUL, args, kwargs)
    if bound is None or not floating(bound["input"], bound["other"]):
        return NotImplemented
    return meta(matmul_shape(bound["input"].shape, bound["other"].shape), bound["input"].dtype)


def _reflected_matmul(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Tensor.__rmatmul__(self, other) is `other @ self`."""
    bound = bind(_MATMUL, args, kwargs)
    return NotImplemented if bound is None else _matmul((bound["other"], bound["input"]), {})


def _check_batches(first: torch.Tensor, second: torch.Tensor) -> None:
    """bmm's check, with torch's message: batch2 must be (batch, inner, columns)."""
    expected = [first.shape[0], first.shape[2]]
    if list(second.shape[:2]) != expected:
        raise ShapeMismatch(
            f"Expected size for first two dimensions of batch2 tensor to be: {expected} "
            f"but got: {list(second.shape[:2])}."
        )


def _bmm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_BMM, args, kwargs)
    if bound is None or not floating(bound["input"], bound["mat2"]):
        return NotImplemented
    first, second = bound["input"], bound["mat2"]
    for name, tensor in (("batch1", first), ("batch2", second)):
        if tensor.dim() != 3:
            raise ShapeMismatch(f"{name} must be a 3D tensor")
    _check_batches(first, second)
    return meta((first.shape[0], first.shape[1], second.shape[2]), first.dtype)


def _baddbmm(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    bound = bind(_BADDBMM, args, kwargs)
    if bound is None or not floating(bound["input"], bound["batch1"], bound["batch2"]):
        return NotImplemented
    input, first, second = bound["input"], bound["batch1"], bound["batch2"]
    if first.dim() != 3 or second.dim() != 3 or input.dim() > 3:
        return NotImplemented  # torch's errors here are of mixed types
    if not is_number(bound["beta"]) or not is_number(bound["alpha"]):
        return NotImplemented
    _check_batches(first, second)
    shape = (first.shape[0], first.shape[1], second.shape[2])
    # `input` expands to the product's shape; unlike broadcasting, it never grows the product.
    for dim, size in enumerate(input.shape[::-1]):
        if size not in (1, shape[-1 - dim]):
            raise ShapeMismatch(
                f"The expanded size of the tensor ({shape[-1 - dim]}) must match the existing size ({size}) at "
                f"non-singleton dimension {2 - dim}.  Target sizes: {list(shape)}.  Tensor sizes: {list(input.shape)}"
            )
    return meta(shape, input.dtype)


def _attention(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """F.scaled_dot_product_attention with equal batch dims: (..., L, E), (..., S, E), (..., S, Ev)."""
    bound = bind(_ATTENTION, args, kwargs)
    if bound is None or not floating(bound["query"], bound["key"], bound["value"]) or not _attention_options(bound):
        return NotImplemented
    query, key, value, mask = bound["query"], bound["key"], bound["value"], bound["attn_mask"]
    if not query.dim() == key.dim() == value.dim() >= 2 or 0 in (*query.shape, *key.shape, *value.shape):
        return NotImplemented
    if not query.shape[:-2] == key.shape[:-2] == value.shape[:-2]:
        return NotImplemented  # broadcast batches: torch's rules differ by kernel
    if key.shape[-2] != value.shape[-2]:
        return NotImplemented  # torch's CPU flash kernel reads such a value without a word; others raise
    if key.shape[-1] != query.shape[-1]:
        raise ShapeMismatch(
            f"scaled_dot_product_attention: query {list(query.shape)} and key {list(key.shape)} "
            "must agree on their last size"
        )
    scores = (*query.shape[:-1], key.shape[-2])  # (..., L, S)
    # torch adds the mask to the scores in place: the mask may broadcast, but not grow them.
    if mask is not None and (broadcast := broadcast_shapes(scores, mask.shape)) != scores:
        raise ShapeMismatch(f"output with shape {list(scores)} doesn't match the broadcast shape {list(broadcast)}")
    if query.dim() == 4:
        # The fused kernels (CPU flash, CUDA flash and efficient) lay the output out as (B, L, heads, Ev),
        # so that the usual `.transpose(1, 2).reshape(B, L, -1)` that joins the heads is a view.
        batch, heads, length, _ = query.shape
        return meta((batch, length, heads, value.shape[-1]), query.dtype).transpose(1, 2)
    return meta((*query.shape[:-1], value.shape[-1]), query.dtype)


def _attention_options(bound: dict[str, Any]) -> bool:
    """The options torch takes without a message of its own, grouped query attention aside."""
    mask, is_causal, scale, dropout = bound["attn_mask"], bound["is_causal"], bound["scale"], bound["dropout_p"]
    if bound["enable_gqa"] or not isinstance(is_causal, bool) or (is_causal and mask is not None):
        return False
    if mask is not None and (
        not isinstance(mask, torch.Tensor) or mask.dtype not in (torch.bool, bound["query"].dtype)
    ):
        return False
    return (scale is None or is_number(scale)) and is_number(dropout) and 0 <= dropout <= 1


def _multi_head_attention(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """F.multi_head_attention_forward (what nn.MultiheadAttention calls on meta), plain case only.

    Sequence first: query (L, N, E), key and value (S, N, E), or each without N. Returns the
    output (L, N, E) and the weights (N, L, S), (N, heads, L, S) or None, as torch does.
    """
    bound = bind(_MULTI_HEAD_ATTENTION, args, kwargs)
    if bound is None or bound["add_zero_attn"] or bound["use_separate_proj_weight"] or bound["is_causal"]:
        return NotImplemented
    if any(bound[name] is not None for name in _MULTI_HEAD_EXTRAS):
        return NotImplemented
    query, key, value = bound["query"], bound["key"], bound["value"]
    if not floating(query, key, value) or not query.dim() == key.dim() == value.dim() in (2, 3):
        return NotImplemented
    embed, heads = bound["embed_dim_to_check"], bound["num_heads"]
    in_weight, in_bias = bound["in_proj_weight"], bound["in_proj_bias"]
    out_weight, out_bias = bound["out_proj_weight"], bound["out_proj_bias"]
    weights = [tensor for tensor in (in_weight, in_bias, out_weight, out_bias) if tensor is not None]
    dropout = bound["dropout_p"]
    consistent = (
        isinstance(embed, int)
        and isinstance(heads, int)
        and heads > 0
        and embed % heads == 0
        and query.shape[-1] == embed
        and key.shape == value.shape
        and key.shape[-1] == embed  # a context of another width is a cross-attention mistake
        and key.shape[1:-1] == query.shape[1:-1]  # the same batch
        and isinstance(in_weight, torch.Tensor)
        and tuple(in_weight.shape) == (3 * embed, embed)
        and (in_bias is None or tuple(in_bias.shape) == (3 * embed,))
        and isinstance(out_weight, torch.Tensor)
        and tuple(out_weight.shape) == (embed, embed)
        and (out_bias is None or tuple(out_bias.shape) == (embed,))
        and all(isinstance(tensor, torch.Tensor) and tensor.dtype == query.dtype for tensor in weights)
        and key.dtype == value.dtype == query.dtype
        and is_number(dropout)
        and 0 <= dropout <= 1
    )
    if not consistent or 0 in (*query.shape, *key.shape):
        return NotImplemented  # torch's own assertion or error says what is wrong
    output = meta(query.shape, query.dtype)
    if not bound["need_weights"]:
        return output, None
    length, source = query.shape[0], key.shape[0]
    batch = (query.shape[1],) if query.dim() == 3 else ()
    per_head = () if bound["average_attn_weights"] else (heads,)
    return output, meta((*batch, *per_head, length, source), query.dtype)


def register(table: ShapeTable) -> None:
    """Add this module's shape functions to `table`, keyed as the ops arrive."""
    tensor_class = torch.Tensor
    table.update(
        {
            torch.matmul: _matmul,
            tensor_class.matmul: _matmul,
            tensor_class.__matmul__: _matmul,
            tensor_class.__rmatmul__: _reflected_matmul,
            torch.bmm: _bmm,
            tensor_class.bmm: _bmm,
            torch.baddbmm: _baddbmm,
            tensor_class.baddbmm: _baddbmm,
            F.scaled_dot_product_attention: _attention,
            F.multi_head_attention_forward: _multi_head_attention,
        }
    )
