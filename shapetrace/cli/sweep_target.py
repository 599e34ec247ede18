"""`shapetrace sweep TARGET`, the torch side: build the user's model on meta and sweep it.

The command (cli/sweep.py) parses and checks every option without torch; this module is
imported only when a sweep runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from shapetrace.cli.options import TargetCall
from shapetrace.cli.trace_target import (
    CPU_FALLBACK_PARAMS,
    build_target,
    build_with_probe,
    check_inputs,
    target_inputs,
)
from shapetrace.records import SweepResult
from shapetrace.sizes import Size
from shapetrace.sweep import sweep_model


def sweep_target(target: str, call: TargetCall, sizes: list[Size], progress: Callable[[], None]) -> SweepResult:
    """Build TARGET on meta and sweep it over `sizes` (one extent per spatial axis of the first input).

    A forward that reads tensor values is swept on the CPU, when the model is small enough to build there.

    Raises:
        TargetError: the TARGET cannot be imported or built with --init.
        SweepInterrupted: Ctrl-C; it carries the sizes done so far.
    """
    inputs, model_dtype = target_inputs(call.inputs, call.keywords, call.timestep, call.dtype)
    init = dict(call.init)
    model, _ = build_with_probe(target, init, torch.device("meta"), model_dtype)
    check_inputs(model, inputs)
    small = sum(parameter.numel() for parameter in model.parameters()) <= CPU_FALLBACK_PARAMS

    def on_cpu() -> nn.Module:
        return build_target(target, init, torch.device("cpu"), model_dtype)

    label = " · ".join([f"target {target}", *(f"{key} {value}" for key, value in init.items())])
    return sweep_model(model, inputs, sizes, label=label, progress=progress, cpu_model=on_cpu if small else None)
