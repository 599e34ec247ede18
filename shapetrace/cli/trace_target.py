"""`shapetrace trace TARGET`, the torch side: build the user's model, make its inputs, trace it.

The command (cli/trace.py) parses every option without torch; this module is imported only
when a trace runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from shapetrace.api import trace_inputs
from shapetrace.cli.types import RANDOM_TIMESTEP, TensorSpec
from shapetrace.records import CostOptions, Trace
from shapetrace.tracing.inputs import SizedInputs, resolve_device
from shapetrace.tracing.targets import build_model
from shapetrace.tracing.tracer import META_VALUES

CPU_FALLBACK_PARAMS = 50_000_000  # about 200 MB of float32 weights: quick to build and run on a CPU


def trace_target(
    target: str,
    *,
    init: Mapping[str, Any],
    inputs: Sequence[TensorSpec],
    keywords: Mapping[str, TensorSpec],
    timestep: int | Literal["random"] | None,
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
        device: meta, cpu or cuda.
        first_break: stop at the first break.
        cost: count FLOPs and bytes too, and search a budget on meta; None counts nothing.

    Returns:
        The trace; on meta, a small model whose forward reads tensor values is traced on the CPU.

    Raises:
        TargetError: the TARGET cannot be imported or built with `init`.
        UsageError: the device is not available here.
    """
    sized_inputs = SizedInputs(
        positional=[_tensor(spec) for spec in inputs],
        timestep=timestep is not None,
        timestep_value=None if timestep is None or timestep == RANDOM_TIMESTEP else int(timestep),
        keywords={name: _tensor(spec) for name, spec in keywords.items()},
    )
    init = dict(init)
    torch_device = resolve_device(device)
    model = build_model(target, init, torch_device)
    probe_model = model if torch_device.type == "meta" else build_model(target, init, torch.device("meta"))
    config = [("target", target)] + [(key, str(value)) for key, value in init.items()]
    trace = trace_inputs(
        model, sized_inputs, torch_device, probe_model=probe_model, first_break=first_break, config=config, cost=cost
    )
    if torch_device.type == "meta" and _needs_values(trace) and trace.total_params <= CPU_FALLBACK_PARAMS:
        # The model reads tensor values; it is small enough to run for real on the CPU.
        cpu = torch.device("cpu")
        note = [("fell back to cpu", "the forward reads tensor values, which meta tensors lack")]
        model = build_model(target, init, cpu)
        trace = trace_inputs(model, sized_inputs, cpu, first_break=first_break, config=config + note, cost=cost)
    return trace


def _tensor(spec: TensorSpec) -> tuple[tuple[int, ...], torch.dtype]:
    dtype = getattr(torch, spec.dtype)  # DTYPE_NAMES holds only names of torch dtypes
    assert isinstance(dtype, torch.dtype), spec.dtype
    return spec.shape, dtype


def _needs_values(trace: Trace) -> bool:
    return any(brk.kind == META_VALUES for brk in trace.breaks)
