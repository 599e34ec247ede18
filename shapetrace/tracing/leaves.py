"""torch's own leaf modules that may run outside the function mode on a real device.

Every op a module's forward makes costs a trip through the TorchFunctionMode, and on a
real device most ops run inside torch's own leaves (Conv2d, GroupNorm, SiLU, Linear). Their
forwards make no merges, so the only thing the mode would learn there is a channel
mismatch; that is read here, before the module runs, by the mode's own checks. A leaf whose
input disagrees keeps the mode, which then reports the break and hands on a stand-in.

Leaves are recognised by their forward function, so a subclass that keeps torch's forward
(`NonDynamicallyQuantizableLinear`) qualifies and one that overrides it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shapetrace.tracing._torch_compat import has_children, has_own_forward_hooks, own_parameters
from shapetrace.tracing.merges import channel_mismatch, original

Arguments = Callable[[nn.Module, torch.Tensor], tuple[Callable[..., Any], tuple[Any, ...]]]
"""The function a leaf's forward calls, and the arguments that fix its channel count."""


def _weight(module: nn.Module) -> torch.Tensor:
    # The registry first: `module.weight` goes through nn.Module.__getattr__, slow on every
    # call. A parametrized weight (weight_norm) or a plain tensor attribute is not in it.
    weight = own_parameters(module).get("weight")
    return weight if weight is not None else module.weight  # type: ignore[return-value]


def _convolution(function: Callable[..., Any]) -> Arguments:
    # (input, weight, bias, stride, padding, dilation or output_padding, groups): groups is 7th in both.
    return lambda module, x: (function, (x, _weight(module), None, 1, 0, 1, module.groups))


# Bound once, as EXPECTATIONS keys them: another tool may replace F.linear by a wrapper later.
_LINEAR, _GROUP_NORM, _BATCH_NORM, _LAYER_NORM = (
    original(function) for function in (F.linear, F.group_norm, F.batch_norm, F.layer_norm)
)


def _linear(module: nn.Module, x: torch.Tensor) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return _LINEAR, (x, _weight(module))


def _group_norm(module: nn.Module, x: torch.Tensor) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return _GROUP_NORM, (x, module.num_groups, module.weight)


def _batch_norm(module: nn.Module, x: torch.Tensor) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return _BATCH_NORM, (x, module.running_mean, module.running_var, module.weight)


def _layer_norm(module: nn.Module, x: torch.Tensor) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return _LAYER_NORM, (x, module.normalized_shape)


# The channel demand itself is the function mode's (`merges.channel_mismatch`): both routes read
# the same tensors, so they agree even on a module whose weight was replaced after it was built.
_ARGUMENTS: dict[Callable[..., Any], Arguments] = {
    nn.Conv1d.forward: _convolution(original(torch.conv1d)),
    nn.Conv2d.forward: _convolution(original(torch.conv2d)),
    nn.Conv3d.forward: _convolution(original(torch.conv3d)),
    nn.ConvTranspose1d.forward: _convolution(original(torch.conv_transpose1d)),
    nn.ConvTranspose2d.forward: _convolution(original(torch.conv_transpose2d)),
    nn.ConvTranspose3d.forward: _convolution(original(torch.conv_transpose3d)),
    nn.Linear.forward: _linear,
    nn.GroupNorm.forward: _group_norm,
    nn.BatchNorm2d.forward: _batch_norm,  # shared by BatchNorm1d/2d/3d
    nn.LayerNorm.forward: _layer_norm,
}
_ANY_INPUT = frozenset(
    cls.forward
    for cls in (
        nn.Identity,
        nn.SiLU,
        nn.ReLU,
        nn.GELU,
        nn.Mish,
        nn.LeakyReLU,
        nn.Sigmoid,
        nn.Tanh,
        nn.Softmax,
        nn.Dropout,
        nn.Dropout2d,
        nn.AvgPool2d,
        nn.MaxPool2d,
        nn.AdaptiveAvgPool2d,
        nn.Upsample,
        nn.Flatten,
    )
)
"""Leaves without a channel demand."""
TORCH_LEAVES = frozenset(_ARGUMENTS) | _ANY_INPUT
"""The forwards of torch's own leaves: they make no merges, so their inner ops need no provenance."""


def runs_plainly(module: nn.Module, args: tuple[Any, ...]) -> bool:
    """Whether this call is one of torch's leaves, with an input whose channels it accepts.

    Not a module with forward hooks of its own: they run after the tracer's global pre-hook
    and may change the input or call functions the mode must see (a lazy module's first call
    builds its weights in such a hook).
    """
    forward = type(module).forward
    known = forward in _ANY_INPUT or forward in _ARGUMENTS
    if not known or not args or has_children(module) or has_own_forward_hooks(module):
        return False
    x = args[0]
    if not isinstance(x, torch.Tensor):
        return False
    if forward in _ANY_INPUT:
        return True
    function, arguments = _ARGUMENTS[forward](module, x)
    return channel_mismatch(function, arguments, {}) is None  # keyed alike: _ARGUMENTS names the bound originals
