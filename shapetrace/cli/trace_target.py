"""`shapetrace trace TARGET`: import the user's model, make its inputs, trace it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shapetrace.api import SizedInputs, trace_inputs
from shapetrace.errors import UsageError
from shapetrace.records import CostOptions, Trace
from shapetrace.tracing.inputs import parse_keyword_spec, parse_tensor_spec, resolve_device
from shapetrace.tracing.targets import build_model, parse_init
from shapetrace.tracing.tracer import META_VALUES

CPU_FALLBACK_PARAMS = 50_000_000  # about 200 MB of float32 weights: quick to build and run on a CPU


def trace_target(
    target: str,
    *,
    init_json: str | None,
    input_specs: Sequence[str],
    timestep: str | None,
    keyword_specs: Sequence[str],
    device: str,
    first_break: bool = False,
    cost: CostOptions | None = None,
) -> Trace:
    """Parse every option, build the model on `device` (and on meta for size probing), trace it."""
    init = parse_init(init_json)
    inputs = SizedInputs(
        positional=[parse_tensor_spec(spec, "--input") for spec in input_specs],
        timestep=timestep is not None,
        timestep_value=_timestep_value(timestep),
        keywords={name: (shape, dtype) for name, shape, dtype in map(parse_keyword_spec, keyword_specs)},
    )
    if not inputs.positional and not inputs.keywords:
        raise UsageError("no inputs given: expected --input SHAPE (e.g. --input 2,3,64,64) or --kw NAME=SHAPE")
    torch_device = resolve_device(device)
    model = build_model(target, init, torch_device)
    probe_model = model if torch_device.type == "meta" else build_model(target, init, torch.device("meta"))
    config = [("target", target)] + [(key, str(value)) for key, value in init.items()]
    trace = trace_inputs(
        model, inputs, torch_device, probe_model=probe_model, first_break=first_break, config=config, cost=cost
    )
    if torch_device.type == "meta" and _needs_values(trace) and trace.total_params <= CPU_FALLBACK_PARAMS:
        # The model reads tensor values; it is small enough to run for real on the CPU.
        cpu = torch.device("cpu")
        note = [("fell back to cpu", "the forward reads tensor values, which meta tensors lack")]
        model = build_model(target, init, cpu)
        trace = trace_inputs(model, inputs, cpu, first_break=first_break, config=config + note, cost=cost)
    return trace


def _needs_values(trace: Trace) -> bool:
    return any(brk.kind == META_VALUES for brk in trace.breaks)


def _timestep_value(text: str | None) -> int | None:
    if text is None or text == "random":
        return None
    if not text.lstrip("-").isdigit():
        raise UsageError(f"--timestep {text!r} is not an integer: expected e.g. --timestep 500")
    return int(text)
