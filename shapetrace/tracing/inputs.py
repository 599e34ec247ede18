"""Make the tensors a trace runs on, on the device the user chose."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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


TensorSpec = tuple[tuple[int, ...], torch.dtype]


@dataclass(frozen=True)
class SizedInputs:
    """What to feed a model: positional tensors, an optional timestep, keyword tensors."""

    positional: Sequence[TensorSpec]
    timestep: bool = False
    timestep_value: int | None = None
    keywords: dict[str, TensorSpec] = field(default_factory=dict)
    timestep_dtype: torch.dtype = torch.long

    def make(self, device: torch.device, spatial: tuple[int, ...] | None = None) -> tuple[list[Any], dict[str, Any]]:
        """The tensors on `device`; `spatial` replaces the spatial extents of the first input of its rank."""
        args: list[Any] = []
        replaced = False
        for shape, dtype in self.positional:
            sized = shape
            if spatial is not None and not replaced and len(shape) == 2 + len(spatial):
                sized, replaced = (*shape[:2], *spatial), True
            args.append(activation(sized, device, dtype))
        if self.timestep:
            batch = self.positional[0][0][0] if self.positional and self.positional[0][0] else 1
            args.append(timesteps(batch, device, self.timestep_value, self.timestep_dtype))
        kwargs = {name: activation(shape, device, dtype) for name, (shape, dtype) in self.keywords.items()}
        return args, kwargs
