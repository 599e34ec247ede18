"""Turn a finished Recorder into the frozen, torch-free Trace."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shapetrace.diagnosis import explain
from shapetrace.recorder import Recorder
from shapetrace.records import Trace


def freeze(
    recorder: Recorder,
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    outputs: Sequence[torch.Tensor],
    *,
    device: str,
    config: tuple[tuple[str, str], ...],
) -> Trace:
    """Records from the recorder; the Trace keeps no reference to the model or a tensor."""
    called = {id(call.module): call.module for call in recorder.calls}
    params = {key: _parameter_count(module) for key, module in called.items()}
    trace = Trace(
        model=type(model).__name__,
        inputs=tuple(tuple(t.shape) for t in inputs),
        outputs=tuple(tuple(t.shape) for t in outputs),
        layers=recorder.layers(params),
        skips=recorder.skips(),
        breaks=recorder.frozen_breaks(),
        warnings=tuple(recorder.warnings),
        device=device,
        config=config,
    )
    return explain(trace)


def _parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
