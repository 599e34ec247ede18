"""torch's own leaf modules that may run outside the function mode on a real device.

Every op a module's forward makes costs a trip through the TorchFunctionMode, and on a
real device most ops run inside torch's own leaves (Conv2d, GroupNorm, SiLU, Linear). Their
forwards make no merges, so the only thing the mode would learn there is a channel
mismatch; that is read here from the module's attributes before it runs. A leaf whose
input disagrees keeps the mode, which then reports the break and hands on a stand-in.

Leaves are recognised by their forward function, so a subclass that keeps torch's forward
(`NonDynamicallyQuantizableLinear`) qualifies and one that overrides it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Check = Callable[[nn.Module, torch.Tensor], bool]
"""Whether a module accepts this input's channel count."""


def _any_input(module: nn.Module, x: torch.Tensor) -> bool:
    return True


def _channels(x: torch.Tensor, spatial: int) -> int | None:
    """The channel count of a batched (N, C, *spatial) or unbatched (C, *spatial) input."""
    if x.dim() == spatial + 2:
        return int(x.shape[1])
    return int(x.shape[0]) if x.dim() == spatial + 1 else None


# Each check reads the same tensor the function mode's check (`checks.EXPECTATIONS`) reads, so
# that both routes agree even on a module whose weight was replaced after it was built.
def _weight(module: nn.Module) -> torch.Tensor:
    # The registry first: `module.weight` goes through nn.Module.__getattr__, slow on every
    # call. A parametrized weight (weight_norm) or a plain tensor attribute is not in it.
    weight = module._parameters.get("weight")
    return weight if weight is not None else module.weight  # type: ignore[return-value]


def _convolution(module: nn.Module, x: torch.Tensor) -> bool:
    weight = _weight(module)
    return _channels(x, weight.dim() - 2) == weight.shape[1] * module.groups  # type: ignore[operator]


def _transposed_convolution(module: nn.Module, x: torch.Tensor) -> bool:
    weight = _weight(module)
    return _channels(x, weight.dim() - 2) == weight.shape[0]


def _linear(module: nn.Module, x: torch.Tensor) -> bool:
    weight = _weight(module)
    return x.dim() >= 1 and x.shape[-1] == weight.shape[-1]


def _channel_norm(*per_channel: str) -> Check:
    """The first of the module's per-channel tensors that it has fixes C (none: any C)."""

    def check(module: nn.Module, x: torch.Tensor) -> bool:
        tensor = next((t for t in (getattr(module, name) for name in per_channel) if t is not None), None)
        return tensor is None or (x.dim() >= 2 and x.shape[1] == tensor.shape[0])

    return check


def _layer_norm(module: nn.Module, x: torch.Tensor) -> bool:
    normalized: tuple[int, ...] = module.normalized_shape  # type: ignore[assignment]
    return x.dim() >= len(normalized) and tuple(x.shape[x.dim() - len(normalized) :]) == normalized


_CHECKS: dict[Callable[..., Any], Check] = {
    **{cls.forward: _convolution for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d)},
    **{cls.forward: _transposed_convolution for cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)},
    nn.Linear.forward: _linear,
    nn.GroupNorm.forward: _channel_norm("weight"),
    nn.BatchNorm2d.forward: _channel_norm("running_mean", "weight"),  # shared by BatchNorm1d/2d/3d
    nn.LayerNorm.forward: _layer_norm,
    **{
        cls.forward: _any_input
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
    },
}


def runs_plainly(module: nn.Module, args: tuple[Any, ...]) -> bool:
    """Whether this call is one of torch's leaves, with an input whose channels it accepts.

    Not a module with forward hooks of its own: they run after the tracer's global pre-hook
    and may change the input or call functions the mode must see (a lazy module's first call
    builds its weights in such a hook).
    """
    check = _CHECKS.get(type(module).forward)
    if check is None or not args or module._modules or module._forward_pre_hooks or module._forward_hooks:
        return False
    x = args[0]
    return isinstance(x, torch.Tensor) and check(module, x)
