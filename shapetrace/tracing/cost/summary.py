"""Turn a finished meter into records: a LayerCost per call and the whole model's CostSummary.

Per call, each value sums the call's own ops and its children's (a container includes its
parts); `macs` are torchinfo's mult-adds of each leaf, summed the same way. The memory
estimates add the model's state to what the meter saw:

- inference: parameters and buffers, plus the peak of live tensors at op boundaries;
- train: parameters and buffers, their gradients, the optimizer's state, the saved
  activations, and the largest transient (an op's output gradient and its input gradient,
  each as large as the largest tensor the forward made).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from shapetrace.records import CostOptions, CostSummary, LayerCost, Optimizer, Trace
from shapetrace.tracing.cost.meter import CostMeter
from shapetrace.tracing.recorder import Call, Recorder

OPTIMIZER_STATES = {Optimizer.ADAM: 2, Optimizer.SGD: 0}
"""Tensors of optimizer state per trainable parameter: Adam's two moments; plain SGD has none."""


@dataclasses.dataclass(slots=True)
class _Parameters:
    """The model's parameters, each counted once, and what each layer's share needs."""

    trainable: int
    frozen: int
    trainable_bytes: int
    by_dtype: dict[str, int]
    uniform_size: int
    """Bytes per entry when every parameter has one dtype and requires grad (the common case); else 0."""


def with_cost(
    trace: Trace,
    recorder: Recorder,
    meter: CostMeter,
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    options: CostOptions,
) -> Trace:
    """The trace with the cost of every layer and of the whole model."""
    calls = recorder.calls
    parameters = _parameters(meter)
    # Each layer's parameter split from the counts the trace already has, unless some are frozen
    # or of another dtype: then one walk of the module tree.
    shares = None if parameters.uniform_size else _shares(model)
    module_costs: dict[int, tuple[tuple[int, ...], int, int, bool]] = {}
    totals = _subtree_totals(calls, meter, module_costs)
    names: dict[torch.dtype | None, tuple[str, int]] = {None: ("", 0)}
    layers = []
    for call, layer in zip(calls, trace.layers, strict=True):
        dtype = meter.outputs.get(call.index)
        if dtype not in names:
            names[dtype] = (str(dtype).removeprefix("torch."), dtype.itemsize)  # type: ignore[union-attr]
        name, size = names[dtype]
        output_bytes = sum(math.prod(shape) for shape in call.outputs) * size
        if shares is None:
            trainable, frozen, nbytes = layer.params, 0, layer.params * parameters.uniform_size
        else:
            trainable, frozen, nbytes = shares.get(id(call.module), (0, 0, 0))
        flops, other, macs, saved, attention, tokens = totals[call.index]
        kernel = _module_cost(call.module, module_costs)[0]
        # Positionally, in LayerCost's field order: keywords cost several times as much per layer.
        layers.append(
            LayerCost(
                flops, other, macs, output_bytes, saved, trainable, frozen, nbytes, kernel, name, tokens, attention
            )
        )
    root = totals[0] if calls else [0] * 6
    checkpointed = checkpointed_saved(calls, meter) if options.checkpointing else 0
    summary = _summary(root, meter, parameters, inputs, options, checkpointed)
    return dataclasses.replace(trace, cost=dataclasses.replace(summary, layers=tuple(layers)))


def _subtree_totals(
    calls: Sequence[Call], meter: CostMeter, module_costs: dict[int, tuple[tuple[int, ...], int, int, bool]]
) -> list[list[int]]:
    """(flops, other, macs, saved bytes, attention flops, attention tokens) of each call and its children."""
    totals = []
    sizes = meter.serial_bytes
    for call in calls:
        own = meter.calls.get(call.index)
        macs = torchinfo_macs(_module_cost(call.module, module_costs), call.outputs) if call.leaf else 0
        if own is None:
            totals.append([0, 0, macs, 0, 0, 0])
            continue
        saved = sum(sizes[serial] for serial in own.saved)
        totals.append([own.flops, own.other_flops, macs, saved, own.attention_flops, own.attention_tokens])
    for call in reversed(calls):
        if call.parent is not None:
            parent, child = totals[call.parent], totals[call.index]
            parent[0] += child[0]
            parent[1] += child[1]
            parent[2] += child[2]
            parent[3] += child[3]
            parent[4] += child[4]
            if child[5] > parent[5]:  # noqa: PLR1730 - once per call: cheaper than max()
                parent[5] = child[5]
    return totals


def _module_cost(
    module: nn.Module, found: dict[int, tuple[tuple[int, ...], int, int, bool]]
) -> tuple[tuple[int, ...], int, int, bool]:
    """(kernel, own weight and bias entries, own other weight entries, a convolution?), once per module."""
    known = found.get(id(module))
    if known is None:
        per_position = per_row = 0
        for name, parameter in module._parameters.items():
            if parameter is None or is_lazy(parameter):
                continue
            if name in ("weight", "bias"):
                per_position += parameter.numel()
            elif "weight" in name or "bias" in name:
                per_row += parameter.numel()  # an RNN's weight_ih_l0
        known = found[id(module)] = (_kernel(module), per_position, per_row, "Conv" in type(module).__name__)
    return known


def torchinfo_macs(module: tuple[tuple[int, ...], int, int, bool], outputs: Sequence[tuple[int, ...]]) -> int:
    """torchinfo's mult-adds of a leaf call: each weight and bias entry once per output position.

    A convolution's output position is (batch, *spatial); any other layer's is the batch alone,
    as torchinfo counts it (a Linear on (B, N, C) counts B, not B·N). Other weights (an RNN's)
    count once per (batch, channel).
    """
    _, per_position, per_row, convolution = module
    if not outputs or not outputs[0] or not (per_position or per_row):
        return 0
    output = outputs[0]
    positions = math.prod(output[:1] + output[2:]) if convolution else output[0]
    return per_position * positions + per_row * math.prod(output[:2])


def _kernel(module: nn.Module) -> tuple[int, ...]:
    """The module's kernel_size as a tuple of ints; () where it has none."""
    # From the instance's own attributes: nn.Module.__getattr__ raises for every other module.
    size = module.__dict__.get("kernel_size")
    if isinstance(size, int):
        return (size,)
    if isinstance(size, (tuple, list)) and all(isinstance(extent, int) for extent in size):
        return tuple(size)
    return ()


def _parameters(meter: CostMeter) -> _Parameters:
    """Totals over the model's parameters, each once (the meter collected them)."""
    by_dtype: dict[str, int] = defaultdict(int)
    trainable = frozen = trainable_bytes = 0
    sizes: set[int] = set()
    for parameter in meter.unique_parameters.values():
        if is_lazy(parameter):
            continue
        count, size = parameter.numel(), parameter.element_size()
        sizes.add(size)
        by_dtype[str(parameter.dtype).removeprefix("torch.")] += count * size
        if parameter.requires_grad:
            trainable += count
            trainable_bytes += count * size
        else:
            frozen += count
    uniform = sizes.pop() if len(sizes) == 1 and len(by_dtype) == 1 and not frozen else 0
    return _Parameters(trainable, frozen, trainable_bytes, dict(by_dtype), uniform)


def _shares(model: nn.Module) -> dict[int, tuple[int, int, int]]:
    """(trainable, frozen, bytes) of each module with its children, in one walk of the tree."""
    found: dict[int, tuple[int, int, int]] = {}

    def visit(module: nn.Module) -> tuple[int, int, int]:
        if id(module) in found:
            return found[id(module)]
        trainable = frozen = nbytes = 0
        for parameter in module._parameters.values():
            if parameter is None or is_lazy(parameter):
                continue
            count = parameter.numel()
            nbytes += count * parameter.element_size()
            if parameter.requires_grad:
                trainable += count
            else:
                frozen += count
        for child in module._modules.values():
            if child is not None:
                part = visit(child)
                trainable, frozen, nbytes = trainable + part[0], frozen + part[1], nbytes + part[2]
        found[id(module)] = (trainable, frozen, nbytes)
        return found[id(module)]

    visit(model)
    return found


def checkpointed_saved(calls: Sequence[Call], meter: CostMeter) -> int:
    """Saved bytes with each block checkpointed: the blocks' inputs, plus the largest block's own.

    A checkpointed block keeps only its inputs and recomputes the rest in backward, one block
    at a time; ops outside any block keep what they always keep.
    """
    kept: set[int] = set()
    for serials in meter.inputs.values():
        kept.update(serials)
    by_block: dict[int, set[int]] = defaultdict(set)
    for index, own in meter.calls.items():
        block = _block_of(calls, index)
        if block is None:
            kept.update(own.saved)
        else:
            by_block[block].update(own.saved)
    sizes = meter.serial_bytes
    largest = max((sum(sizes[serial] for serial in saved - kept) for saved in by_block.values()), default=0)
    return sum(sizes[serial] for serial in kept) + largest


def _block_of(calls: Sequence[Call], index: int) -> int | None:
    if index < 0 or index >= len(calls):
        return None
    call = calls[index]
    while call.depth > 1 and call.parent is not None:
        call = calls[call.parent]
    return call.index if call.depth == 1 else None


def _summary(
    root: Sequence[int],
    meter: CostMeter,
    parameters: _Parameters,
    inputs: Sequence[torch.Tensor],
    options: CostOptions,
    checkpointed: int,
) -> CostSummary:
    param_bytes = sum(parameters.by_dtype.values())
    buffer_bytes = sum(meter.serial_bytes[serial] for serial in meter.state.values())
    saved = checkpointed if options.checkpointing else sum(meter.serial_bytes[serial] for serial in meter.saved)
    gradient_bytes = parameters.trainable_bytes
    optimizer_bytes = OPTIMIZER_STATES[options.optimizer] * gradient_bytes
    transient = 2 * meter.largest
    state = param_bytes + buffer_bytes
    return CostSummary(
        flops=root[0],
        other_flops=root[1],
        macs=root[2],
        params=parameters.trainable + parameters.frozen,
        trainable_params=parameters.trainable,
        frozen_params=parameters.frozen,
        param_bytes=param_bytes,
        param_bytes_by_dtype=tuple(sorted(parameters.by_dtype.items(), key=lambda item: (-item[1], item[0]))),
        buffer_bytes=buffer_bytes,
        input_bytes=sum(tensor.numel() * tensor.element_size() for tensor in inputs),
        activation_peak_bytes=meter.peak,
        inference_peak_bytes=state + meter.peak,
        saved_bytes=saved,
        gradient_bytes=gradient_bytes,
        optimizer_bytes=optimizer_bytes,
        transient_bytes=transient,
        train_peak_bytes=state + gradient_bytes + optimizer_bytes + saved + transient,
        options=options,
    )
