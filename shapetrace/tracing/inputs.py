"""Make the tensors a trace runs on, on the device the user chose."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from shapetrace.errors import UsageError
from shapetrace.records import MAX_EXTENT

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


_DTYPES = {
    name: getattr(torch, name)
    for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")
}


def parse_tensor_spec(text: str, option: str) -> tuple[tuple[int, ...], torch.dtype]:
    """`2,3,64,64` or `2,3,64,64:float16` as (shape, dtype)."""
    shape_text, _, dtype_text = text.partition(":")
    parts = shape_text.split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise UsageError(f"{option} {text!r} is not a valid shape: expected integers like 2,3,64,64[:float16]")
    shape = tuple(int(part) for part in parts)
    if any(extent > MAX_EXTENT for extent in shape) or len(shape) > 8:
        raise UsageError(f"{option} {text!r} is too large: expected at most 8 dims of at most {MAX_EXTENT}")
    dtype_name = dtype_text.strip() or "float32"
    if dtype_name not in _DTYPES:
        raise UsageError(f"{option} {text!r} has dtype {dtype_name!r}: expected one of {', '.join(_DTYPES)}")
    return shape, _DTYPES[dtype_name]


def parse_keyword_spec(text: str) -> tuple[str, tuple[int, ...], torch.dtype]:
    """`--kw encoder_hidden_states=1,77,768[:dtype]` as (name, shape, dtype)."""
    name, separator, spec = text.partition("=")
    if not separator or not name.isidentifier():
        raise UsageError(f"--kw {text!r} is not valid: expected name=shape like encoder_hidden_states=1,77,768")
    shape, dtype = parse_tensor_spec(spec, f"--kw {name}")
    return name, shape, dtype


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
