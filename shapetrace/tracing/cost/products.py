"""FLOPs of matrix products, counted as torch.utils.flop_counter.FlopCounterMode counts them.

FlopCounterMode counts at dispatch level: only `mm`, `addmm`, `bmm`, `baddbmm`, convolutions
and fused attention kernels have formulas (2 FLOPs per multiply-add). A function such as
`matmul` or `einsum` costs what the kernels it lowers to cost, so each formula here follows
ATen's lowering: a matrix-vector product (`mv`, `dot`) and an elementwise product (`mul`) count 0.
Attention counts its two products as the fused kernels' formula does (on meta and on CUDA; the
CPU flash kernel has no formula, so FlopCounterMode counts 0 there).
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

Shape = Sequence[int]


def mm_flops(rows: int, inner: int, columns: int, batch: int = 1) -> int:
    """`mm`/`bmm`: 2 FLOPs per multiply-add."""
    return 2 * batch * rows * inner * columns


def matmul_flops(left: Shape, right: Shape) -> int:
    """torch.matmul as ATen lowers it: vector products count 0, folded batches `mm`, the rest `bmm`.

    A batch of matrices times a vector folds onto `mv` (0) when the batch is contiguous, as the
    outputs of layers are; a vector times a batch of matrices is a `bmm` of one-row matrices.
    """
    left_dims, right_dims = len(left), len(right)
    if left_dims == 0 or right_dims in (0, 1):
        return 0  # dot, mv, or a batch folded onto mv
    if left_dims == 1:
        return mm_flops(1, left[0], right[-1], math.prod(right[:-2]))
    if right_dims == 2:
        return mm_flops(math.prod(left[:-1]), left[-1], right[1])  # mm, or the batch folded into rows
    batch = broadcast(left[:-2], right[:-2])
    return mm_flops(left[-2], left[-1], right[-1], math.prod(batch))


def linear_flops(input_shape: Shape, weight: Shape) -> int:
    """F.linear: addmm on the flattened rows (or matmul, which counts the same)."""
    if len(weight) != 2 or not input_shape:
        return 0
    return mm_flops(math.prod(input_shape[:-1]), weight[1], weight[0])


def convolution_flops(input_shape: Shape, weight: Shape, output: Shape, *, transposed: bool) -> int:
    """Every output point (input point, when transposed) times the whole filter; bias ignored."""
    spatial = len(weight) - 2
    if spatial < 1 or len(output) < spatial:
        return 0
    batch = input_shape[0] if len(input_shape) == spatial + 2 else 1  # unbatched input: batch 1
    points = input_shape[-spatial:] if transposed else output[-spatial:]
    return 2 * batch * math.prod(points) * math.prod(weight)


def attention_flops(query: Shape, key: Shape, value: Shape) -> int:
    """Scores (q @ kᵀ) and weighted values (p @ v): the fused kernels' formula, with GQA's heads."""
    if min(len(query), len(key), len(value)) < 2:
        return 0
    batch = math.prod(query[:-2])
    query_length, key_length = query[-2], key[-2]
    return mm_flops(query_length, query[-1], key_length, batch) + mm_flops(query_length, key_length, value[-1], batch)


def multi_head_attention_flops(
    query: Shape,
    key: Shape,
    projections: Sequence[Shape],
    out_weight: Shape,
    heads: int,
    extra_keys: int,
) -> tuple[int, int]:
    """F.multi_head_attention_forward: (all FLOPs, the attention products' share).

    Args:
        query, key: (L, N, E) and (S, N, kdim), or unbatched (L, E) and (S, kdim).
        projections: the weights applied to query, key and value, in order.
        out_weight: the output projection's weight.
        heads: the number of heads.
        extra_keys: key positions added after projection (bias_k, add_zero_attn).
    """
    length, batch = query[0], (query[1] if len(query) == 3 else 1)
    source = key[0]
    embed = out_weight[1] if len(out_weight) == 2 else query[-1]
    rows = (length, source, source)
    total = sum(mm_flops(row * batch, weight[1], weight[0]) for row, weight in zip(rows, projections, strict=False))
    head_dim = embed // max(heads, 1)
    keys = source + extra_keys
    attention = 2 * mm_flops(length, head_dim, keys, batch * heads)
    total += attention + mm_flops(length * batch, embed, out_weight[0] if len(out_weight) == 2 else embed)
    return total, attention


def einsum_flops(equation: str, shapes: Sequence[Shape]) -> int:
    """torch.einsum as ATen contracts it: operands left to right, each pair by `bmm` or `mul`.

    A contraction dimension of size 1 on one side is summed away first, and a pair with nothing
    left to contract is a `mul` (0).
    """
    parsed = _parse_einsum(equation, shapes)
    if parsed is None or len(shapes) < 2:
        return 0
    operands, output = parsed
    sizes = [dict(zip(labels, shape, strict=True)) for labels, shape in zip(operands, shapes, strict=True)]
    contracted = [label for label in dict.fromkeys("".join(operands)) if label not in output]
    last_use = {label: max(i for i, labels in enumerate(operands) if label in labels) for label in contracted}
    result = {label: size for label, size in sizes[0].items() if label in output or last_use[label] > 0}
    total = 0
    for position in range(1, len(operands)):
        operand = sizes[position]
        summed = [
            label
            for label in contracted
            if last_use[label] == position and result.get(label, 1) != 1 and operand.get(label, 1) != 1
        ]
        kept = [label for label in dict.fromkeys([*result, *operand]) if label in output or last_use[label] > position]
        if summed:
            total += _pair_flops(result, operand, summed, kept)
        result = {label: max(result.get(label, 1), operand.get(label, 1)) for label in kept}
    return total


def einsum_groups(equation: str, shapes: Sequence[Shape]) -> tuple[list[list[int]], list[list[int]]] | None:
    """For a two-operand einsum, the dims of each operand that ATen's bmm reshape merges.

    sumproduct_pair permutes the left operand to (both, left only, summed) and the right one to
    (both, summed, right only), each group in ATen's label order: the output's labels, then the
    contracted ones, upper case before lower case. A `mul` merges nothing; None where it does not parse.
    """
    parsed = _parse_einsum(equation, shapes)
    if parsed is None or len(shapes) != 2:
        return None
    (left_labels, right_labels), output = parsed
    contracted = sorted(set(left_labels + right_labels) - set(output), key=lambda label: (label.islower(), label))
    left_sizes = dict(zip(left_labels, shapes[0], strict=True))
    right_sizes = dict(zip(right_labels, shapes[1], strict=True))
    both, left_only, right_only, summed = [], [], [], []
    for label in [*output, *contracted]:
        on_left, on_right = left_sizes.get(label, 1) != 1, right_sizes.get(label, 1) != 1
        if label in contracted:
            if on_left and on_right:
                summed.append(label)
        elif on_left and on_right:
            both.append(label)
        elif on_left:
            left_only.append(label)
        elif on_right:
            right_only.append(label)
    if not summed:
        return [], []  # a mul of broadcast views
    left_groups = [[left_labels.index(label) for label in group] for group in (both, left_only, summed)]
    right_groups = [[right_labels.index(label) for label in group] for group in (both, summed, right_only)]
    return left_groups, right_groups


def _pair_flops(left: dict[str, int], right: dict[str, int], summed: Sequence[str], kept: Sequence[str]) -> int:
    """ATen's sumproduct_pair: one bmm over the dims both keep, each side's own dims, the summed ones."""

    def sizes(on_left: bool, on_right: bool) -> int:
        return math.prod(
            max(left.get(label, 1), right.get(label, 1))
            for label in kept
            if (left.get(label, 1) != 1) == on_left and (right.get(label, 1) != 1) == on_right
        )

    return mm_flops(
        sizes(True, False), math.prod(left[label] for label in summed), sizes(False, True), sizes(True, True)
    )


def _parse_einsum(equation: str, shapes: Sequence[Shape]) -> tuple[list[str], str] | None:
    """Each operand's labels and the output's, the ellipsis spelled out; None where it does not parse."""
    text = equation.replace(" ", "")
    inputs_text, arrow, output_text = text.partition("->")
    operands = inputs_text.split(",")
    if len(operands) != len(shapes):
        return None
    spare = iter(label for label in string.ascii_uppercase + string.ascii_lowercase if label not in text)
    ellipsis_dims = max(
        (
            len(shape) - len(labels.replace("...", ""))
            for labels, shape in zip(operands, shapes, strict=True)
            if "..." in labels
        ),
        default=0,
    )
    ellipsis = "".join(next(spare) for _ in range(max(ellipsis_dims, 0)))
    expanded = []
    for written, shape in zip(operands, shapes, strict=True):
        labels = written
        if "..." in written:
            own = len(shape) - len(written.replace("...", ""))
            labels = written.replace("...", ellipsis[len(ellipsis) - own :] if own else "")
        if len(labels) != len(shape) or len(set(labels)) != len(labels):
            return None  # a malformed equation or a diagonal: no formula
        expanded.append(labels)
    if arrow:
        output = output_text.replace("...", ellipsis)
    else:
        counts = "".join(expanded)
        output = ellipsis + "".join(sorted(label for label in set(counts) - set(ellipsis) if counts.count(label) == 1))
    return expanded, output


def broadcast(left: Shape, right: Shape) -> tuple[int, ...]:
    length = max(len(left), len(right))
    padded_left = (1,) * (length - len(left)) + tuple(left)
    padded_right = (1,) * (length - len(right)) + tuple(right)
    return tuple(max(a, b) for a, b in zip(padded_left, padded_right, strict=True))
