"""What a layer's weights expect of its input, and stand-ins that satisfy them.

On the meta device a Conv given the wrong channel count raises only "Invalid channel
dimensions" and a ConvTranspose raises nothing at all, so the expected count is read from
the weights and the received one from the input, here, before the function runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True, slots=True)
class Expectation:
    """A function's demand on one input dimension, read from its weights."""

    argument: int
    """Position of the checked tensor in the call's arguments."""
    dim: int
    """The checked dimension of that tensor (non-negative)."""
    expected: int
    got: int


def _argument(args: Sequence[Any], kwargs: dict[str, Any], position: int, name: str) -> Any:
    if len(args) > position:
        return args[position]
    return kwargs.get(name)


def _convolution(transposed: bool, spatial: int) -> Callable[..., Expectation | None]:
    def expectation(args: Sequence[Any], kwargs: dict[str, Any]) -> Expectation | None:
        x, weight = _argument(args, kwargs, 0, "input"), _argument(args, kwargs, 1, "weight")
        if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
            return None
        groups = _argument(args, kwargs, 6, "groups") or 1  # 7th in conv and transposed conv
        if not isinstance(groups, int):
            return None
        # Weights are (out, in / groups, *k) for conv, (in, out / groups, *k) for transposed.
        expected = weight.shape[0] if transposed else weight.shape[1] * groups
        dim = 1 if x.dim() == spatial + 2 else 0
        if x.dim() <= dim:
            return None
        return Expectation(0, dim, expected, x.shape[dim])

    return expectation


def _linear(args: Sequence[Any], kwargs: dict[str, Any]) -> Expectation | None:
    x, weight = _argument(args, kwargs, 0, "input"), _argument(args, kwargs, 1, "weight")
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor) or x.dim() == 0:
        return None
    return Expectation(0, x.dim() - 1, weight.shape[-1], x.shape[-1])


def _channel_norm(*per_channel: tuple[int, str]) -> Callable[..., Expectation | None]:
    """A norm whose per-channel tensors (position, name), the first one given, fix C."""

    def expectation(args: Sequence[Any], kwargs: dict[str, Any]) -> Expectation | None:
        x = _argument(args, kwargs, 0, "input")
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            return None
        for position, name in per_channel:
            tensor = _argument(args, kwargs, position, name)
            if isinstance(tensor, torch.Tensor):
                return Expectation(0, 1, tensor.shape[0], x.shape[1])
        return None

    return expectation


def _layer_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Expectation | None:
    x = _argument(args, kwargs, 0, "input")
    normalized = _argument(args, kwargs, 1, "normalized_shape")
    if not isinstance(x, torch.Tensor) or not normalized or x.dim() == 0:
        return None
    # The common case, a single normalized dimension; others fall through to torch's error.
    if len(normalized) != 1:
        return None
    return Expectation(0, x.dim() - 1, int(normalized[0]), x.shape[-1])


def original(function: Callable[..., Any]) -> Callable[..., Any]:
    """The function itself, not a `functools.wraps` wrapper another tool (torchlens) put in its place.

    A TorchFunctionMode receives torch's own builtins even then, but Python-level functionals
    (`F.group_norm`) as whatever their module's global name holds now.
    """
    unwrapped: Callable[..., Any] = inspect.unwrap(function)
    return unwrapped


EXPECTATIONS: dict[Callable[..., Any], Callable[..., Expectation | None]] = {
    original(torch.conv1d): _convolution(transposed=False, spatial=1),
    original(torch.conv2d): _convolution(transposed=False, spatial=2),
    original(torch.conv3d): _convolution(transposed=False, spatial=3),
    original(torch.conv_transpose1d): _convolution(transposed=True, spatial=1),
    original(torch.conv_transpose2d): _convolution(transposed=True, spatial=2),
    original(torch.conv_transpose3d): _convolution(transposed=True, spatial=3),
    original(F.linear): _linear,
    original(F.group_norm): _channel_norm((2, "weight")),
    # Without running statistics (track_running_stats=False), the affine weight fixes C.
    original(F.batch_norm): _channel_norm((1, "running_mean"), (3, "weight")),
    original(F.instance_norm): _channel_norm((3, "weight")),
    original(F.layer_norm): _layer_norm,
}
"""The functions whose weights fix a channel count, and how to read it."""


def resize(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """A stand-in for `tensor` with `size` entries along `dim`: cropped, or zero-padded."""
    current = tensor.shape[dim]
    if current == size:
        return tensor
    if tensor.device.type == "meta":
        shape = list(tensor.shape)
        shape[dim] = size
        return torch.empty(shape, dtype=tensor.dtype, device="meta")
    if current > size:
        return tensor.narrow(dim, 0, size)
    padding_shape = list(tensor.shape)
    padding_shape[dim] = size - current
    padding = torch.zeros(padding_shape, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, padding], dim=dim)


def resize_like(tensor: torch.Tensor, shape: Sequence[int], keep_dim: int | None) -> torch.Tensor:
    """Crop or pad every dimension of `tensor` except `keep_dim` to match `shape`."""
    for dim, size in enumerate(shape):
        if dim != keep_dim and dim < tensor.dim():
            tensor = resize(tensor, dim, size)
    return tensor


def meta_concatenate(tensors: Sequence[torch.Tensor], dim: int, stack: bool) -> torch.Tensor:
    """torch.cat / torch.stack of aligned meta tensors, without torch's Python meta kernel.

    The first Python-implemented meta kernel in a process imports sympy (about 1.3 s here);
    the output of a concatenation is one shape computation away.
    """
    first = tensors[0]
    shape = list(first.shape)
    if stack:
        shape.insert(dim, len(tensors))
    else:
        shape[dim] = sum(t.shape[dim] for t in tensors)
    dtype = first.dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return torch.empty(shape, dtype=dtype, device="meta")
