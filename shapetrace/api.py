"""Trace a model from input sizes instead of tensors (the torchinfo / torchview habit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shapetrace.records import Trace
from shapetrace.tracing.inputs import activation, resolve_device, timesteps
from shapetrace.tracing.probes import with_size_rule
from shapetrace.tracing.tracer import run_trace

TensorSpec = tuple[tuple[int, ...], torch.dtype]


@dataclass(frozen=True)
class SizedInputs:
    """What to feed a model: positional tensors, an optional timestep, keyword tensors."""

    positional: Sequence[TensorSpec]
    timestep: bool = False
    timestep_value: int | None = None
    keywords: dict[str, TensorSpec] = field(default_factory=dict)
    timestep_dtype: torch.dtype = torch.long

    def make(self, device: torch.device, spatial: tuple[int, int] | None = None) -> tuple[list[Any], dict[str, Any]]:
        """The tensors on `device`; `spatial` replaces H×W of the first 4-D input."""
        args: list[Any] = []
        replaced = False
        for shape, dtype in self.positional:
            sized = shape
            if spatial is not None and not replaced and len(shape) == 4:
                sized, replaced = (*shape[:2], *spatial), True
            args.append(activation(sized, device, dtype))
        if self.timestep:
            batch = self.positional[0][0][0] if self.positional and self.positional[0][0] else 1
            args.append(timesteps(batch, device, self.timestep_value, self.timestep_dtype))
        kwargs = {name: activation(shape, device, dtype) for name, (shape, dtype) in self.keywords.items()}
        return args, kwargs


def trace_sizes(
    model: nn.Module,
    input_size: Sequence[Sequence[int]],
    *,
    timestep: bool | int = False,
    kwargs: dict[str, Sequence[int]] | None = None,
    device: str = "meta",
    dtypes: Sequence[torch.dtype] | None = None,
) -> Trace:
    """Make tensors of the given sizes on `device` and trace `model` on them.

    Args:
        model: the model; it must already live on `device` (build it under
            `with torch.device("meta"):` to trace without weights).
        input_size: one shape per positional tensor, e.g. `[(2, 3, 64, 64)]`.
        timestep: True adds integer timesteps t of shape [batch] after them; an int sets t's value.
        kwargs: keyword tensors by shape, e.g. `{"encoder_hidden_states": (1, 77, 768)}`.
        device: "meta" (default), "cpu" or "cuda".
        dtypes: one dtype per positional tensor (default float32).

    Returns:
        The Trace, with the size rule attached when a size broke.
    """
    dtypes = list(dtypes or [torch.float32] * len(input_size))
    inputs = SizedInputs(
        positional=[(tuple(shape), dtype) for shape, dtype in zip(input_size, dtypes, strict=True)],
        timestep=timestep is not False,
        timestep_value=None if isinstance(timestep, bool) else timestep,
        keywords={name: (tuple(shape), torch.float32) for name, shape in (kwargs or {}).items()},
    )
    return trace_inputs(model, inputs, resolve_device(device), probe_model=model if device == "meta" else None)


def trace_inputs(
    model: nn.Module,
    inputs: SizedInputs,
    device: torch.device,
    *,
    probe_model: nn.Module | None = None,
    first_break: bool = False,
    config: Sequence[tuple[str, str]] = (),
) -> Trace:
    """Trace on tensors made from `inputs`; probe sizes on `probe_model` (a meta copy) if given."""
    args, kwargs = inputs.make(device)
    trace = run_trace(model, args, kwargs, first_break=first_break, config=config)
    if inputs.timestep and _wants_float_timestep(trace):
        inputs = SizedInputs(inputs.positional, True, inputs.timestep_value, inputs.keywords, torch.float32)
        args, kwargs = inputs.make(device)
        trace = run_trace(model, args, kwargs, first_break=first_break, config=config)
    if probe_model is None:
        return trace
    meta = torch.device("meta")
    arguments_at: Callable[[int, int], tuple[list[Any], dict[str, Any]]] = lambda h, w: inputs.make(meta, (h, w))  # noqa: E731
    return with_size_rule(trace, probe_model, arguments_at)


def _wants_float_timestep(trace: Trace) -> bool:
    """True when the forward failed on an integer timestep (a model that wants float t)."""
    return any(brk.kind == "error" and ("Long" in brk.message or "dtype" in brk.message) for brk in trace.breaks)
