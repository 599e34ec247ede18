"""The memory layout of an elementwise op's output, as torch's TensorIterator chooses it.

An elementwise op does not make its output contiguous: it keeps the dimension order of its
inputs. A (B, N, C) map that is the transpose of a (B, C, N) one stays transposed through
every residual add and activation, so a later `.contiguous()` copies it (or does not, where a
permute has undone the transpose), `.view()` refuses it, and a matrix product folds it or not.
Shapes alone would miss all of that; the strides decide it (ATen's TensorIteratorBase:
`fast_set_up` when every operand is laid out alike, else `reorder_dimensions`; torch 2.13).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def elementwise_output(shape: Sequence[int], dtype: torch.dtype, operands: Sequence[Any]) -> torch.Tensor:
    """An empty meta tensor of `shape` and `dtype`, strided as torch strides the op's output."""
    tensors = [operand for operand in operands if isinstance(operand, torch.Tensor) and operand.dim()]
    if all(tensor.is_contiguous() for tensor in tensors):  # nearly always: no ordering to read
        return torch.empty(tuple(shape), dtype=dtype, device="meta")
    first = tensors[0]
    same_layout = all(
        tuple(tensor.shape) == tuple(shape) and tensor.stride() == first.stride() for tensor in tensors
    ) and _dense(first)
    strides = first.stride() if same_layout else _dense_strides(shape, _order(shape, tensors))
    return torch.empty_strided(tuple(shape), strides, dtype=dtype, device="meta")


def _dense(tensor: torch.Tensor) -> bool:
    """Non-overlapping and dense: its elements fill one block of memory, in some dimension order."""
    expected = 1
    for dim in sorted(range(tensor.dim()), key=lambda dim: (tensor.stride(dim), tensor.shape[dim])):
        if tensor.shape[dim] == 1:
            continue
        if tensor.stride(dim) != expected:
            return False
        expected *= tensor.shape[dim]
    return True


def _broadcast_strides(tensor: torch.Tensor, shape: Sequence[int]) -> list[int]:
    """The operand's strides over the output's dims: 0 where it is broadcast (or has no such dim)."""
    offset = len(shape) - tensor.dim()
    strides = [0] * len(shape)
    for dim in range(tensor.dim()):
        if not (tensor.shape[dim] == 1 and shape[offset + dim] != 1):
            strides[offset + dim] = tensor.stride(dim)
    return strides


def _order(shape: Sequence[int], tensors: Sequence[torch.Tensor]) -> list[int]:
    """The output's dims from fastest to slowest: an insertion sort over the operands' strides,
    the first operand deciding first; a broadcast dim and equal strides leave it to the next."""
    strides = [_broadcast_strides(tensor, shape) for tensor in tensors]

    def should_swap(dim0: int, dim1: int) -> int:
        for operand in strides:
            stride0, stride1 = operand[dim0], operand[dim1]
            if stride0 == 0 or stride1 == 0:
                continue
            if stride0 != stride1:
                return -1 if stride0 < stride1 else 1
            if shape[dim0] > shape[dim1]:
                return 1
        return 0

    order = list(reversed(range(len(shape))))
    for position in range(1, len(order)):
        moving = position
        for earlier in range(position - 1, -1, -1):
            comparison = should_swap(order[earlier], order[moving])
            if comparison > 0:
                order[earlier], order[moving] = order[moving], order[earlier]
                moving = earlier
            elif comparison < 0:
                break
    return order


def _dense_strides(shape: Sequence[int], order: Sequence[int]) -> tuple[int, ...]:
    """Strides of a dense tensor whose dims, fastest first, are `order`."""
    strides = [0] * len(shape)
    step = 1
    for dim in order:
        strides[dim] = step
        step *= max(shape[dim], 1)
    return tuple(strides)
