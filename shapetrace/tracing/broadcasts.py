"""Elementwise ops whose operands do not broadcast: which dims disagree, read from their shapes.

torch says only "The size of tensor a (144) must match the size of tensor b (160) at
non-singleton dimension 1", and its words are no interface: nothing here reads them. Where a
custom layer multiplies a feature map by a per-channel weight, that is a channel mismatch;
where it adds a fixed-size map, a size mismatch. The observer turns both into breaks with both
operands' shapes and producers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from shapetrace.extents import has_channel_dim

ELEMENTWISE = frozenset(
    {
        "add",
        "radd",
        "iadd",
        "sub",
        "rsub",
        "isub",
        "mul",
        "rmul",
        "imul",
        "div",
        "rdiv",
        "idiv",
        "truediv",
        "rtruediv",
        "itruediv",
        "true_divide",
        "floordiv",
        "rfloordiv",
        "floor_divide",
        "pow",
        "rpow",
        "maximum",
        "minimum",
    }
)
"""Binary ops (by `operation_name`) whose tensor operands broadcast against each other."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Two tensor arguments that do not broadcast."""

    first: int
    """Position of the first tensor among the arguments."""
    second: int
    dims: tuple[int, ...]
    """The dims of the broadcast result where both have sizes other than 1 and they differ."""
    rank: int
    """The broadcast result's rank."""

    def channels(self, image_rank: int | None) -> bool:
        """Only dim 1 of a feature map (B, C, *spatial) disagrees: a channel count.

        `image_rank`: the dims of the model's image input; 3-D tensors are feature maps only
        in a model of 1-D signals, and token sequences (B, N, C) elsewhere (`has_channel_dim`).
        """
        return self.dims == (1,) and has_channel_dim(self.rank, image_rank)


def mismatch(func: Callable[..., Any], args: Sequence[Any]) -> Mismatch | None:
    """The two operands of a failed elementwise op and where they disagree; None for other ops.

    None too where the operands broadcast: the op failed for another reason.
    """
    if operation_name(func) not in ELEMENTWISE:
        return None
    positions = [i for i, argument in enumerate(args) if isinstance(argument, torch.Tensor)]
    if len(positions) < 2:
        return None
    first, second = args[positions[0]], args[positions[1]]
    rank = max(first.dim(), second.dim())
    left, right = _aligned(first.shape, rank), _aligned(second.shape, rank)
    dims = tuple(d for d in range(rank) if left[d] != right[d] and 1 not in (left[d], right[d]))
    return Mismatch(positions[0], positions[1], dims, rank) if dims else None


def operation_name(func: Any) -> str:
    """ "mul" for Tensor.mul, Tensor.__mul__, torch.mul and Tensor.mul_ alike."""
    return str(getattr(func, "__name__", "function")).strip("_")


def _aligned(shape: torch.Size, rank: int) -> tuple[int, ...]:
    return (1,) * (rank - len(shape)) + tuple(shape)


def reference_size(reference: torch.Tensor, received: torch.Tensor, dim: int) -> int:
    """The size `reference` has at `received`'s dim `dim`, dims aligned from the right as broadcasting does."""
    return _aligned(reference.shape, received.dim())[dim]
