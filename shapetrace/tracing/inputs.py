"""Make the tensors a trace runs on, on the device the user chose, and the model of their dtype."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shapetrace.errors import UsageError
from shapetrace.formatting import format_bytes, format_shape
from shapetrace.tracing.closures import deep_copy

DEVICES = ("meta", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The torch device for `name`, failing in one line when it is not available here."""
    if name not in DEVICES:
        raise UsageError(f"device {name!r} is not supported: expected one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' is not available on this machine: expected --device meta or cpu")
    return torch.device(name)


def activation(shape: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An input tensor of `shape`: uninitialised on meta (no memory), elsewhere random floats, or
    zeros for an integer or bool dtype: token ids and class labels, which index a table of a size
    unknown here, and 0 is in range for every table.

    Raises:
        UsageError: the device has not the memory for it (`allocation_failed`).
    """
    if device.type == "meta":
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    try:
        if dtype.is_floating_point:
            return torch.randn(tuple(shape), dtype=dtype, device=device)
        return torch.zeros(tuple(shape), dtype=dtype, device=device)
    except (RuntimeError, MemoryError) as error:
        if not allocation_failed(error):
            raise
        raise UsageError(_cannot_allocate(shape, dtype, device)) from None


def allocation_failed(error: BaseException) -> bool:
    """Whether `error` is torch (or Python) running out of memory, rather than a mistake of the model.

    CUDA raises torch.OutOfMemoryError and Python MemoryError; torch's CPU allocator raises
    neither: its malloc failure is a plain RuntimeError (c10::Error from an enforce in
    alloc_cpu.cpp, torch 2.13), told apart only by the allocator's own words.
    """
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return type(error) is RuntimeError and "DefaultCPUAllocator: can't allocate memory" in str(error)


def _cannot_allocate(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> str:
    size = math.prod(shape) * torch.empty(0, dtype=dtype, device="meta").element_size()
    described = f"{format_shape(shape)} {str(dtype).removeprefix('torch.')}"
    return (
        f"cannot allocate the {described} input on {device.type} ({format_bytes(size)}): "
        "try --device meta, which traces shapes without memory"
    )


def out_of_memory(where: str, inputs: Sequence[Sequence[int]], device: str) -> UsageError:
    """The error for an allocation that failed in the forward: where, on which inputs, and what to do instead."""
    shapes = ", ".join(format_shape(shape) for shape in inputs)
    on_inputs = f" on its input {shapes}" if len(inputs) == 1 else f" on its inputs {shapes}" if inputs else ""
    return UsageError(
        f"cannot allocate memory on {device} in {where}{on_inputs}: "
        "try --device meta, which traces shapes without memory"
    )


def floating_dtype(dtypes: Iterable[torch.dtype]) -> torch.dtype | None:
    """The first floating dtype among the inputs' dtypes: the one the model's weights must have."""
    return next((dtype for dtype in dtypes if dtype.is_floating_point), None)


def cast_copy(model: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """`model` itself when its floating weights already have `dtype` (or None), else a copy cast to it.

    The user's model is never changed; on meta the copy holds no memory.
    """
    tensors = [*model.parameters(), *model.buffers()]
    if dtype is None or all(tensor.dtype == dtype for tensor in tensors if tensor.is_floating_point()):
        return model
    return deep_copy(model).to(dtype)


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
        """The tensors on `device`; `spatial` replaces the spatial extents of the first input of its
        rank, and of every other input (positional or keyword) of that rank and those extents: a mask
        or a conditioning image follows the image's size."""
        image = None
        if spatial is not None:
            image = next((shape for shape, _ in self.positional if len(shape) == 2 + len(spatial)), None)

        def sized(shape: tuple[int, ...]) -> tuple[int, ...]:
            if spatial is None or image is None or len(shape) != len(image) or shape[2:] != image[2:]:
                return shape
            return (*shape[:2], *spatial)

        args: list[Any] = [activation(sized(shape), device, dtype) for shape, dtype in self.positional]
        if self.timestep:
            batch = self.positional[0][0][0] if self.positional and self.positional[0][0] else 1
            args.append(timesteps(batch, device, self.timestep_value, self.timestep_dtype))
        kwargs = {name: activation(sized(shape), device, dtype) for name, (shape, dtype) in self.keywords.items()}
        return args, kwargs
