"""`shapetrace trace TARGET`, the torch side: build the user's model, make its inputs, trace it.

The command (cli/trace.py) parses every option without torch; this module is imported only
when a trace runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from shapetrace.api import trace_inputs
from shapetrace.cli.types import RANDOM_TIMESTEP, TensorSpec
from shapetrace.errors import TargetError, UsageError
from shapetrace.records import CostOptions, Trace
from shapetrace.tracing.binding import CallShape, check_call
from shapetrace.tracing.inputs import SizedInputs, allocation_failed, floating_dtype, resolve_device
from shapetrace.tracing.targets import build_model
from shapetrace.tracing.tracer import META_VALUES
from shapetrace.verify import meta_copy

CPU_FALLBACK_PARAMS = 50_000_000  # about 200 MB of float32 weights: quick to build and run on a CPU


def trace_target(
    target: str,
    *,
    init: Mapping[str, Any],
    inputs: Sequence[TensorSpec],
    keywords: Mapping[str, TensorSpec],
    timestep: int | Literal["random"] | None,
    dtype: str | None = None,
    device: str,
    first_break: bool = False,
    cost: CostOptions | None = None,
) -> Trace:
    """Build the model on `device` (and on meta for size probing) and trace it.

    Args:
        target: `package.module:attr` or `path/to/file.py:attr`.
        init: keyword arguments for attr, when it is a class or a factory.
        inputs: the positional tensors, in order.
        keywords: the keyword tensors, by name.
        timestep: add timesteps t of shape [B] after the inputs: random, or this value; None adds none.
        dtype: the model's dtype and that of each floating input naming none; None: the first
            floating dtype an input names, else the model's own.
        device: meta, cpu or cuda.
        first_break: stop at the first break.
        cost: count FLOPs and bytes too, and search a budget on meta; None counts nothing.

    Returns:
        The trace; on meta, a small model whose forward reads tensor values is traced on the CPU.

    Raises:
        TargetError: the TARGET cannot be imported or built with `init`.
        UsageError: the device is not available here; forward cannot take these inputs (checked
            before the model is built on `device`); the device has not the memory for the model or inputs.
    """
    sized_inputs, model_dtype = target_inputs(inputs, keywords, timestep, dtype)
    init = dict(init)
    torch_device = resolve_device(device)
    model, probe_model = build_with_probe(target, init, torch_device, model_dtype)
    check_inputs(probe_model, sized_inputs)
    config = [("target", target)] + [(key, str(value)) for key, value in init.items()]
    if dtype is not None:
        config.append(("dtype", dtype))
    trace = trace_inputs(
        model, sized_inputs, torch_device, probe_model=probe_model, first_break=first_break, config=config, cost=cost
    )
    if torch_device.type == "meta" and _needs_values(trace) and trace.total_params <= CPU_FALLBACK_PARAMS:
        # The model reads tensor values; it is small enough to run for real on the CPU.
        cpu = torch.device("cpu")
        note = [("fell back to cpu", "the forward reads tensor values, which meta tensors lack")]
        model = build_target(target, init, cpu, model_dtype)
        trace = trace_inputs(model, sized_inputs, cpu, first_break=first_break, config=config + note, cost=cost)
    return trace


def target_inputs(
    inputs: Sequence[TensorSpec],
    keywords: Mapping[str, TensorSpec],
    timestep: int | Literal["random"] | None,
    dtype: str | None,
) -> tuple[SizedInputs, torch.dtype | None]:
    """The inputs the options describe, and the dtype the model must take (None: its own).

    A floating input that names no dtype takes `dtype`; without `dtype`, the model takes the
    first floating dtype an input names.
    """
    model_dtype = getattr(torch, dtype) if dtype is not None else None
    sized_inputs = SizedInputs(
        positional=[_tensor(spec, model_dtype) for spec in inputs],
        timestep=timestep is not None,
        timestep_value=None if timestep is None or timestep == RANDOM_TIMESTEP else int(timestep),
        keywords={name: _tensor(spec, model_dtype) for name, spec in keywords.items()},
    )
    if model_dtype is None:
        model_dtype = floating_dtype(_tensor(spec, None)[1] for spec in (*inputs, *keywords.values()) if spec.named)
    return sized_inputs, model_dtype


def check_inputs(model: nn.Module, inputs: SizedInputs) -> None:
    """Raise UsageError, worded for the command line, when `model`'s forward cannot take `inputs`."""
    positional = len(inputs.positional) + int(inputs.timestep)
    check_call(model, CallShape(positional, tuple(inputs.keywords), timestep=inputs.timestep, flags=True))


def _tensor(spec: TensorSpec, model_dtype: torch.dtype | None) -> tuple[tuple[int, ...], torch.dtype]:
    """The spec's shape and dtype; a floating input that names no dtype takes the model's (--dtype)."""
    dtype = getattr(torch, spec.dtype)  # DTYPE_NAMES holds only names of torch dtypes
    assert isinstance(dtype, torch.dtype), spec.dtype
    if model_dtype is not None and not spec.named and dtype.is_floating_point:
        dtype = model_dtype
    return spec.shape, dtype


def build_with_probe(
    target: str, init: dict[str, Any], device: torch.device, dtype: torch.dtype | None
) -> tuple[nn.Module, nn.Module]:
    """The model to trace on `device`, and a meta model to probe sizes and fixes on.

    The meta model is built first: cheap, and it checks the inputs before any memory is taken.
    A constructor that reads tensor values (`[x.item() for x in torch.linspace(0, rate, depth)]`,
    as timm and Swin blocks do) cannot run on meta: then the model is built on `device` (the CPU
    for meta) and the probe is its meta copy.

    Raises:
        TargetError: the TARGET cannot be imported or built with `init` anywhere.
        UsageError: the device has not the memory for its weights.
    """
    meta = torch.device("meta")
    try:
        probe = build_target(target, init, meta, dtype)
    except TargetError:
        home = device if device.type != "meta" else torch.device("cpu")
        built = build_target(target, init, home, dtype)  # raises the TargetError again if it is not meta's
        probe = meta_copy(built)
        return (probe if device.type == "meta" else built), probe
    return (probe if device.type == "meta" else build_target(target, init, device, dtype)), probe


def build_target(target: str, init: dict[str, Any], device: torch.device, dtype: torch.dtype | None) -> nn.Module:
    """A fresh model from TARGET (never the user's object itself), cast to `dtype` when given.

    Raises:
        TargetError: the TARGET cannot be imported or built with `init`.
        UsageError: the device has not the memory for its weights.
    """
    try:
        model = build_model(target, init, device)
    except TargetError as error:
        # build_model reports what the constructor raised; running out of memory is the device's fault.
        if error.__context__ is None or not allocation_failed(error.__context__):
            raise
        raise UsageError(
            f"cannot allocate the weights of {target!r} on {device.type}: try --device meta, "
            "which traces shapes without memory"
        ) from None
    return model if dtype is None else model.to(dtype)


def _needs_values(trace: Trace) -> bool:
    return any(brk.kind == META_VALUES for brk in trace.breaks)
