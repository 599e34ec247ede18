"""Turn a finished Recorder into the frozen, torch-free Trace: its layers, skips, breaks, warnings
and resamplings, read off the calls and merges it recorded (the forward pays nothing for them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shapetrace.records import (
    BROKEN,
    FAILED,
    Break,
    BreakKind,
    LayerRecord,
    MergeOp,
    Resampling,
    Shape,
    ShapeWarning,
    SkipPair,
    Trace,
    WarningKind,
)
from shapetrace.tracing._torch_compat import child_modules, own_parameters
from shapetrace.tracing.geometry import RESAMPLING_MODULES, module_resampling
from shapetrace.tracing.recorder import MODEL_INPUT, Call, PendingBreak, Recorder
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
        layers=layer_records(recorder, params),
        skips=skip_pairs(recorder),
        breaks=frozen_breaks(recorder),
        warnings=tuple(floored_sizes(recorder))
        + (() if recorder.breaks else _cropped_output(input_shapes, output_shapes)),
        device=device,
        config=config,
        resamplings=all_resamplings(recorder),
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


def floored_sizes(recorder: Recorder) -> list[ShapeWarning]:
    """A warning for each leaf that shrinks a spatial size its stride does not divide.

    Read from the finished calls rather than as they end: the forward pays nothing for it.
    """
    found: list[ShapeWarning] = []
    for call in recorder.calls:
        if call.children == 0 and call.status != FAILED:
            warning = _floored_size(call)
            if warning is not None:
                found.append(warning)
    return found


def _floored_size(call: Call) -> ShapeWarning | None:
    if not call.inputs or not call.outputs:
        return None
    before, after = call.inputs[0], call.outputs[0]
    if len(before) < 3 or len(before) != len(after) or before[2:] == after[2:]:
        return None
    strides = _strides(call.module, len(before) - 2)
    for axis, (size_in, size_out) in enumerate(zip(before[2:], after[2:], strict=True)):
        if 0 < size_out < size_in:
            # The module's own stride where it has one (a pool turning 3 into 1 has stride 2).
            stride = strides[axis] if strides else round(size_in / size_out)
            if stride >= 2 and size_in % stride:
                kind = WarningKind.FLOORED if size_out == size_in // stride else WarningKind.ROUNDED_UP
                return ShapeWarning(call.index, kind, "", before[2:], after[2:], stride)
    return None


def all_resamplings(recorder: Recorder) -> tuple[Resampling, ...]:
    """The functions' records and the resampling modules', in the order they ran."""
    found = [(record.position, 1, order, record) for order, record in enumerate(recorder.resamplings)]
    for call in recorder.calls:
        if call.status == FAILED or not call.inputs or not call.outputs:
            continue
        if not isinstance(call.module, RESAMPLING_MODULES):
            continue
        position = _end_position(recorder, call.index)
        record = module_resampling(call.module, call.index, position, call.inputs[0], call.outputs[0])
        if record is not None:
            found.append((position, 0, call.index, record))
    return tuple(record for *_, record in sorted(found, key=lambda item: item[:3]))


def _end_position(recorder: Recorder, index: int) -> int:
    """How many calls had begun when call `index` returned: the end of its subtree."""
    depth = recorder.calls[index].depth
    end = index + 1
    while end < len(recorder.calls) and recorder.calls[end].depth > depth:
        end += 1
    return end


def layer_records(recorder: Recorder, params: dict[int, int]) -> tuple[LayerRecord, ...]:
    broken = {brk.leaf for brk in recorder.breaks} | {_break_layer(recorder, brk) for brk in recorder.breaks}
    return tuple(
        LayerRecord(
            index=call.index,
            name=recorder.name_of(call),
            type=type(call.module).__name__,
            depth=call.depth,
            parent=call.parent,
            inputs=call.inputs,
            outputs=call.outputs,
            params=params[id(call.module)],
            status=BROKEN if call.index in broken else call.status,
        )
        for call in recorder.calls
    )


def skip_pairs(recorder: Recorder) -> tuple[SkipPair, ...]:
    pairs = []
    for merge in recorder.merges:
        if _prepares_a_skip(recorder, merge.origin):
            continue  # inside a gate or another skip's preparation: part of that skip
        target = merge.target if merge.target >= 0 else max(merge.origin, 0)
        main = merge.main
        for part in merge.parts:
            if part.role == "skip":
                pairs.append(
                    SkipPair(part.producer, target, MergeOp(merge.op), merge.dim, part.shape, main.producer, main.shape)
                )
    return tuple(pairs)


def _prepares_a_skip(recorder: Recorder, index: int) -> bool:
    """Whether call `index` ran inside (or is) a call that prepared a skip for its merge."""
    preparations = recorder.preparations
    while index >= 0 and preparations:
        if index in preparations:
            return True
        parent = recorder.calls[index].parent
        index = -1 if parent is None else parent
    return False


def _break_layer(recorder: Recorder, brk: PendingBreak) -> int:
    if brk.layer >= 0:
        return brk.layer
    if brk.merge >= 0 and recorder.merges[brk.merge].target >= 0:
        return recorder.merges[brk.merge].target
    return max(brk.leaf, 0) if recorder.calls else MODEL_INPUT


def frozen_breaks(recorder: Recorder) -> tuple[Break, ...]:
    return tuple(
        Break(
            layer=_break_layer(recorder, brk),
            leaf=max(brk.leaf, 0) if recorder.calls else MODEL_INPUT,  # stopped before any call
            kind=BreakKind(brk.kind),
            message=brk.detail,
            op=brk.op,
            dim=brk.dim,
            sides=brk.sides,
            expected=brk.expected,
        )
        for brk in recorder.breaks
    )


def _strides(module: torch.nn.Module, spatial: int) -> tuple[int, ...]:
    """The module's stride per spatial axis, or () when it declares none."""
    stride = getattr(module, "stride", None)
    if isinstance(stride, int):
        return (stride,) * spatial
    if isinstance(stride, tuple) and len(stride) == spatial and all(isinstance(s, int) for s in stride):
        return stride
    return ()
