"""What a batched product (matmul, einsum) keeps for backward: its operands, or copies of them.

ATen lowers both to `mm` or `bmm` on 2-D or 3-D reshapes of the operands, and autograd keeps
those reshapes. A reshape is a view of the operand (its storage, maybe kept already) when
the dims it merges are laid out one after another in memory, and a new copy otherwise: the
query of `q @ k.transpose(-1, -2)` with heads split off a (B, N, C) projection is copied, a
contiguous one is not. The strides decide, read off the tensors themselves.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from shapetrace.tracing.cost import products

if TYPE_CHECKING:
    from shapetrace.tracing.cost.saving import Saver


def mergeable(tensor: torch.Tensor, dims: Sequence[int]) -> bool:
    """Whether `dims` of `tensor`, in this order, flatten into one dim without a copy."""
    kept = [dim for dim in dims if tensor.shape[dim] != 1]
    strides, sizes = tensor.stride(), tensor.shape
    return all(strides[first] == strides[second] * sizes[second] for first, second in itertools.pairwise(kept))


def _keep(saver: Saver, tensor: torch.Tensor, groups: Sequence[Sequence[int]], expanded: int = 0) -> None:
    """Keep the reshape of `tensor` that merges each group of dims: a view, or a copy."""
    if expanded:
        saver.save_new(expanded * tensor.element_size())  # broadcast batches are materialised
    elif all(mergeable(tensor, group) for group in groups):
        saver.save(tensor)
    else:
        saver.save_new(tensor.numel() * tensor.element_size())


def matmul(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """torch.matmul and `@`: mm on the folded rows, or bmm on reshaped, broadcast batches."""
    operands = [*args, *kwargs.values()]
    if len(operands) < 2 or not all(isinstance(operand, torch.Tensor) for operand in operands[:2]):
        return
    left, right = operands[0], operands[1]
    keep_left, keep_right = saver.requires_grad(right), saver.requires_grad(left)
    if left.dim() <= 2 and right.dim() <= 2:
        left_groups: list[list[int]] = []
        right_groups: list[list[int]] = []
        left_copy = right_copy = 0
    elif right.dim() <= 2 and (keep_left or mergeable(left, range(left.dim() - 1))):
        # Folded into mm: ATen folds whenever the matrix needs a gradient, copying rows that
        # do not merge (a smaller tensor in backward than a broadcast matrix), else only when
        # they merge without a copy (`should_fold`, torch 2.13).
        left_groups, right_groups, left_copy, right_copy = [list(range(left.dim() - 1))], [], 0, 0
    elif left.dim() <= 2 and (keep_right or mergeable(right.mT, range(right.dim() - 1))):
        # The same with the matrix on the left: the batch's transpose is folded.
        if keep_right:
            _keep(saver, right.mT, [list(range(right.dim() - 1))])
        if keep_left:
            saver.save(left)
        return
    else:
        batch = products.broadcast(left.shape[:-2], right.shape[:-2])
        left_groups = [list(range(left.dim() - 2))]
        right_groups = [list(range(right.dim() - 2))]
        left_copy = _expanded(left, batch)
        right_copy = _expanded(right, batch)
    if keep_left:
        _keep(saver, left, left_groups, left_copy)
    if keep_right:
        _keep(saver, right, right_groups, right_copy)


def reflected_matmul(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """Tensor.__rmatmul__(self, other) is `other @ self`."""
    operands = [*args, *kwargs.values()]
    if len(operands) >= 2:
        matmul(saver, (operands[1], operands[0]), {}, output)


def _expanded(tensor: torch.Tensor, batch: Sequence[int]) -> int:
    """Entries of the copy bmm's operand needs when `tensor`'s batch dims are broadcast to `batch`
    and flattened into one; 0 where the broadcast flattens as a view (a matrix broadcast over
    every batch dim has stride 0 in all of them)."""
    own = tuple(tensor.shape[:-2]) if tensor.dim() >= 2 else ()
    padded = (1,) * (len(batch) - len(own)) + own
    if tuple(padded) == tuple(batch):
        return 0
    own_strides = tuple(tensor.stride()[:-2]) if tensor.dim() >= 2 else ()
    strides = (0,) * (len(batch) - len(own)) + own_strides
    # Broadcast dims have stride 0; the flattening is a view when each kept dim steps over the next.
    expanded = [
        (0 if size == 1 and wanted != 1 else stride, wanted)
        for size, stride, wanted in zip(padded, strides, batch, strict=True)
    ]
    kept = [(stride, size) for stride, size in expanded if size != 1]
    if all(first[0] == second[0] * second[1] for first, second in itertools.pairwise(kept)):
        return 0
    matrix = tensor.shape[-2:] if tensor.dim() >= 2 else tensor.shape
    return math.prod(batch) * math.prod(matrix)


def einsum(saver: Saver, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> None:
    """Two-operand torch.einsum: each operand permuted to (both, own, summed) dims, then reshaped."""
    equation = args[0] if args else kwargs.get("equation")
    operands = list(args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if not isinstance(equation, str) or len(operands) != 2:
        return
    if not all(isinstance(operand, torch.Tensor) for operand in operands):
        return
    groups = products.einsum_groups(equation, [tuple(operand.shape) for operand in operands])
    if groups is None:
        return
    left, right = operands
    if saver.requires_grad(right):
        _keep(saver, left, groups[0])
    if saver.requires_grad(left):
        _keep(saver, right, groups[1])
