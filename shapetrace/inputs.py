"""Make the tensors a trace runs on, on the device the user chose."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shapetrace.errors import UsageError

DEVICES = ("meta", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The torch device for `name`, failing in one line when it is not available here."""
    if name not in DEVICES:
        raise UsageError(f"device {name!r} is not supported: expected one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' is not available on this machine: expected --device meta or cpu")
    return torch.device(name)


def activation(shape: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An input tensor of `shape`: uninitialised on meta (no memory), random elsewhere."""
    if device.type == "meta":
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    if dtype.is_floating_point:
        return torch.randn(tuple(shape), dtype=dtype, device=device)
    return torch.randint(0, 1000, tuple(shape), dtype=dtype, device=device)


def timesteps(
    batch: int, device: torch.device, value: int | None = None, dtype: torch.dtype = torch.long
) -> torch.Tensor:
    """Timesteps t of shape [batch]: `value` everywhere, or random in [0, 1000)."""
    if device.type == "meta":
        return torch.empty(batch, dtype=dtype, device=device)
    if value is not None:
        return torch.full((batch,), value, dtype=dtype, device=device)
    return torch.randint(0, 1000, (batch,), device=device).to(dtype)
