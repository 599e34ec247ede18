"""The cost of a traced forward: FLOPs, MACs, bytes per call, and whole-model memory estimates.

`observe(..., cost=CostOptions())` runs the forward under a `CostObserver`, whose meter
charges each op to the innermost call running (`meter`), with formulas for FLOPs (`flops`,
`products`) and rules for what backward keeps (`saving`); `summary` freezes it into
`LayerCost` records and a `CostSummary`, and `budget` searches the batch and size that fit.
Without `cost` none of this runs: the plain Observer's per-op path is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shapetrace.records import CostOptions, Trace
from shapetrace.tracing import tracer
from shapetrace.tracing.cost.meter import CostMeter
from shapetrace.tracing.cost.observer import CheckpointingObserver, CostObserver
from shapetrace.tracing.cost.summary import with_cost
from shapetrace.tracing.recorder import Recorder
from shapetrace.tracing.values import tensors_in

__all__ = ["observe_cost"]


def observe_cost(
    model: nn.Module,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    recorder: Recorder,
    inputs: list[torch.Tensor],
    first_break: bool,
    config: tuple[tuple[str, str], ...],
    options: CostOptions,
    *,
    meta: bool,
) -> Trace:
    """`tracer.observe` with a meter: the Trace with each layer's cost and the summary."""
    from shapetrace.tracing.freeze import freeze

    meter = CostMeter(model)
    meter.track_inputs(inputs)
    kind = CheckpointingObserver if options.checkpointing else CostObserver
    observer = kind(recorder, first_break, meter, meta=meta)
    output = tracer._observed_forward(model, args, kwargs, observer)
    outputs = tensors_in(output)
    device = tracer._device_of(inputs)
    trace = freeze(recorder, model, inputs, outputs, device=device, config=config, params=meter.model.module_parameters)
    return with_cost(trace, recorder, meter, model, inputs, options)
