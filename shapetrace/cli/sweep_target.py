"""`shapetrace sweep TARGET`, the torch side: build the user's model on meta and sweep it.

The command (cli/sweep.py) parses and checks every option without torch; this module is
imported only when a sweep runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from shapetrace.cli.options import TargetCall
from shapetrace.cli.trace_target import CPU_FALLBACK_PARAMS
from shapetrace.cli.types import RANDOM_TIMESTEP, TensorSpec
from shapetrace.records import SweepResult
from shapetrace.sizes import Size
from shapetrace.sweep import sweep_model
from shapetrace.tracing.inputs import SizedInputs
from shapetrace.tracing.targets import build_model


def sweep_target(target: str, call: TargetCall, sizes: list[Size], progress: Callable[[], None]) -> SweepResult:
    """Build TARGET on meta and sweep it over `sizes` (one extent per spatial axis of the first input).

    A forward that reads tensor values is swept on the CPU, when the model is small enough to build there.

    Raises:
        TargetError: the TARGET cannot be imported or built with --init.
        SweepInterrupted: Ctrl-C; it carries the sizes done so far.
    """
    inputs = SizedInputs(
        positional=[_tensor(spec) for spec in call.inputs],
        timestep=call.timestep is not None,
        timestep_value=None if call.timestep is None or call.timestep == RANDOM_TIMESTEP else int(call.timestep),
        keywords={name: _tensor(spec) for name, spec in call.keywords.items()},
    )
    init = dict(call.init)
    model = build_model(target, init, torch.device("meta"))
    small = sum(parameter.numel() for parameter in model.parameters()) <= CPU_FALLBACK_PARAMS

    def on_cpu() -> nn.Module:
        return build_model(target, init, torch.device("cpu"))

    label = " · ".join([f"target {target}", *(f"{key} {value}" for key, value in init.items())])
    return sweep_model(model, inputs, sizes, label=label, progress=progress, cpu_model=on_cpu if small else None)


def _tensor(spec: TensorSpec) -> tuple[tuple[int, ...], torch.dtype]:
    dtype = getattr(torch, spec.dtype)  # DTYPE_NAMES holds only names of torch dtypes
    assert isinstance(dtype, torch.dtype), spec.dtype
    return spec.shape, dtype
