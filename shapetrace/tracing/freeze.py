"""Turn a finished Recorder into the frozen, torch-free Trace."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shapetrace.records import Shape, ShapeWarning, Trace, WarningKind
from shapetrace.tracing._torch_compat import child_modules, own_parameters
from shapetrace.tracing.recorder import Recorder
from shapetrace.tracing.walk import parameter_size, parameter_total


def freeze(
    recorder: Recorder,
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    outputs: Sequence[torch.Tensor],
    *,
    device: str,
    config: tuple[tuple[str, str], ...],
    params: dict[int, int] | None = None,
) -> Trace:
    """Records from the recorder; the Trace keeps no reference to the model or a tensor.

    `params`: `parameter_counts(model)` where the caller has walked the model already (a cost trace).
    """
    params = parameter_counts(model) if params is None else params
    for call in recorder.calls:
        if id(call.module) not in params:  # a module called from outside the model's tree (rare)
            params[id(call.module)] = sum(parameter_size(p) for p in call.module.parameters())
    input_shapes = tuple(tuple(t.shape) for t in inputs)
    output_shapes = tuple(tuple(t.shape) for t in outputs)
    return Trace(
        model=type(model).__name__,
        inputs=input_shapes,
        outputs=output_shapes,
        layers=recorder.layers(params),
        skips=recorder.skips(),
        breaks=recorder.frozen_breaks(),
        warnings=tuple(recorder.floored_sizes())
        + (() if recorder.breaks else _cropped_output(input_shapes, output_shapes)),
        device=device,
        config=config,
        resamplings=recorder.all_resamplings(),
    )


def parameter_counts(model: nn.Module) -> dict[int, int]:
    """Parameters of every module with its children, by id(module), in one walk of the tree.

    Asking each module for `parameters()` walks its subtree again: for a deep model that
    costs more than the trace. Below the model, a shared child counts in each parent; the
    model's own total counts every parameter once, as torchinfo does.
    """
    counts: dict[int, int] = {}

    def visit(module: nn.Module) -> int:
        if id(module) not in counts:
            # The registries themselves: parameters(recurse=False) goes through named_modules.
            own = sum(parameter_size(p) for p in own_parameters(module).values() if p is not None)
            children = (child for child in child_modules(module).values() if child is not None)
            counts[id(module)] = own + sum(visit(child) for child in children)
        return counts[id(module)]

    visit(model)
    counts[id(model)] = parameter_total(model)
    return counts


def _cropped_output(inputs: tuple[Shape, ...], outputs: tuple[Shape, ...]) -> tuple[ShapeWarning, ...]:
    """A model whose image output is smaller than its image input crops silently: say so.

    The image is the first input with spatial dims (a 1-D signal (B, C, L) too), and the output
    the first of the same rank.
    """
    image_in = next((shape for shape in inputs if len(shape) >= 3), None)
    image_out = next((shape for shape in outputs if image_in is not None and len(shape) == len(image_in)), None)
    if image_in is None or image_out is None or len(image_in) != len(image_out):
        return ()
    before, after = image_in[2:], image_out[2:]
    if after == before or not all(out <= size for out, size in zip(after, before, strict=True)):
        return ()
    return (ShapeWarning(0, WarningKind.CROPPED_OUTPUT, "", before, after, stride=1),)
