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

from shapetrace.records import CostOptions, CostSummary, LayerCost, Optimizer, Trace
from shapetrace.tracing._torch_compat import child_modules, has_children, is_lazy, own_parameters
from shapetrace.tracing.cost.meter import CostMeter
from shapetrace.tracing.recorder import Call, Recorder

OPTIMIZER_STATES = {Optimizer.ADAM: 2, Optimizer.SGD: 0}
"""Tensors of optimizer state per trainable parameter: Adam's two moments; plain SGD has none."""


@dataclasses.dataclass(slots=True)
class _Module:
    """One module's parameters with its children's, and what torchinfo's MACs need of its own."""

    trainable: int = 0
    frozen: int = 0
    nbytes: int = 0
    kernel: tuple[int, ...] = ()
    per_position: int = 0
    """Its own weight and bias entries, counted once per output position."""
    per_row: int = 0
    """Its own other weights (an RNN's weight_ih_l0), counted once per (batch, channel) row."""
    convolution: bool = False


_NO_MODULE = _Module()


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
    modules, unique = _modules(model)
    totals = _subtree_totals(calls, meter, modules)
    names: dict[torch.dtype | None, str] = {None: ""}
    layers = []
    for call in calls:
        module = modules.get(id(call.module), _NO_MODULE)
        output_bytes, dtype = meter.outputs.get(call.index, (0, None))
        if dtype not in names:
            names[dtype] = str(dtype).removeprefix("torch.")
        flops, other, macs, saved, attention, tokens = totals[call.index]
        # Positionally, in LayerCost's field order: keywords cost several times as much per layer.
        layers.append(
            LayerCost(
                flops,
                other,
                macs,
                output_bytes,
                saved,
                module.trainable,
                module.frozen,
                module.nbytes,
                module.kernel,
                names[dtype],
                tokens,
                attention,
            )
        )
    root = totals[0] if calls else [0] * 6
    summary = _summary(root, meter, unique, inputs, options, checkpointed_saved(calls, meter))
    return dataclasses.replace(trace, cost=dataclasses.replace(summary, layers=tuple(layers)))


def _subtree_totals(calls: Sequence[Call], meter: CostMeter, modules: dict[int, _Module]) -> list[list[int]]:
    """(flops, other, macs, saved bytes, attention flops, attention tokens) of each call and its children."""
    totals = []
    sizes = meter.serial_bytes
    for call in calls:
        own = meter.calls.get(call.index)
        macs = (
            torchinfo_macs(modules.get(id(call.module), _NO_MODULE), call.outputs)
            if not has_children(call.module)
            else 0
        )
        if own is None:
            totals.append([0, 0, macs, 0, 0, 0])
            continue
        saved = sum(sizes[serial] for serial in own.saved)
        totals.append([own.flops, own.other_flops, macs, saved, own.attention_flops, own.attention_tokens])
    for call in reversed(calls):
        if call.parent is not None:
            parent, child = totals[call.parent], totals[call.index]
            for position in range(5):
                parent[position] += child[position]
            parent[5] = max(parent[5], child[5])
    return totals


def torchinfo_macs(module: _Module, outputs: Sequence[tuple[int, ...]]) -> int:
    """torchinfo's mult-adds of a leaf call: each weight and bias entry once per output position.

    A convolution's output position is (batch, *spatial); any other layer's is the batch alone,
    as torchinfo counts it (a Linear on (B, N, C) counts B, not B·N).
    """
    if not outputs or not outputs[0] or not (module.per_position or module.per_row):
        return 0
    output = outputs[0]
    positions = math.prod(output[:1] + output[2:]) if module.convolution else output[0]
    return module.per_position * positions + module.per_row * math.prod(output[:2])


def _kernel(module: nn.Module) -> tuple[int, ...]:
    """The module's kernel_size as a tuple of ints; () where it has none."""
    # From the instance's own attributes: nn.Module.__getattr__ raises for every other module.
    size = module.__dict__.get("kernel_size")
    if isinstance(size, int):
        return (size,)
    if isinstance(size, (tuple, list)) and all(isinstance(extent, int) for extent in size):
        return tuple(size)
    return ()


def _modules(model: nn.Module) -> tuple[dict[int, _Module], dict[int, nn.Parameter]]:
    """Each module's parameter counts (with its children's) and own MAC weights; every parameter once."""
    found: dict[int, _Module] = {}
    unique: dict[int, nn.Parameter] = {}

    def visit(module: nn.Module) -> _Module:
        info = found.get(id(module))
        if info is not None:
            return info
        info = found[id(module)] = _Module(kernel=_kernel(module), convolution="Conv" in type(module).__name__)
        for name, parameter in own_parameters(module).items():
            if parameter is None or is_lazy(parameter):
                continue
            unique[id(parameter)] = parameter
            count = parameter.numel()
            info.nbytes += count * parameter.element_size()
            if parameter.requires_grad:
                info.trainable += count
            else:
                info.frozen += count
            if name in ("weight", "bias"):
                info.per_position += count
            elif "weight" in name or "bias" in name:
                info.per_row += count
        for child in child_modules(module).values():
            if child is not None:
                part = visit(child)
                info.trainable += part.trainable
                info.frozen += part.frozen
                info.nbytes += part.nbytes
        return info

    visit(model)
    return found, unique


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
    unique: dict[int, nn.Parameter],
    inputs: Sequence[torch.Tensor],
    options: CostOptions,
    checkpointed: int,
) -> CostSummary:
    by_dtype: dict[str, int] = defaultdict(int)
    trainable = frozen = trainable_bytes = 0
    for parameter in unique.values():
        count = parameter.numel()
        nbytes = count * parameter.element_size()
        by_dtype[str(parameter.dtype).removeprefix("torch.")] += nbytes
        if parameter.requires_grad:
            trainable += count
            trainable_bytes += nbytes
        else:
            frozen += count
    param_bytes = sum(by_dtype.values())
    buffer_bytes = sum(meter.serial_bytes[serial] for serial in meter.state.values())
    saved = checkpointed if options.checkpointing else sum(meter.serial_bytes[serial] for serial in meter.saved)
    optimizer_bytes = OPTIMIZER_STATES[options.optimizer] * trainable_bytes
    transient = 2 * meter.largest
    state = param_bytes + buffer_bytes
    return CostSummary(
        flops=root[0],
        other_flops=root[1],
        macs=root[2],
        params=trainable + frozen,
        trainable_params=trainable,
        frozen_params=frozen,
        param_bytes=param_bytes,
        param_bytes_by_dtype=tuple(sorted(by_dtype.items(), key=lambda item: (-item[1], item[0]))),
        buffer_bytes=buffer_bytes,
        input_bytes=sum(tensor.numel() * tensor.element_size() for tensor in inputs),
        activation_peak_bytes=meter.peak,
        inference_peak_bytes=state + meter.peak,
        saved_bytes=saved,
        gradient_bytes=trainable_bytes,
        optimizer_bytes=optimizer_bytes,
        transient_bytes=transient,
        train_peak_bytes=state + trainable_bytes + optimizer_bytes + saved + transient,
        options=options,
    )
