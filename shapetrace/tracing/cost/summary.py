"""Turn a finished meter into records: a LayerCost per call and the whole model's CostSummary.

Per call, each value sums the call's own ops and its children's (a container includes its
parts); `macs` are torchinfo's mult-adds of each leaf, summed the same way. The memory
estimates add the model's state to what the meter saw:

- inference: parameters and buffers, plus the peak of live tensors at op boundaries;
- train: parameters and buffers, their gradients, the optimizer's state, the saved
  activations, and the largest transient (an op's output gradient and its input gradient,
  each as large as the largest tensor the forward made).

This runs once per `--cost` trace over every call, so it reads each module once and builds
each record without keyword arguments.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from shapetrace.records import CostOptions, CostSummary, LayerCost, Optimizer, Trace
from shapetrace.tracing._torch_compat import child_modules, has_children, is_lazy, own_parameters
from shapetrace.tracing.cost.meter import CostMeter
from shapetrace.tracing.recorder import Call, Recorder

OPTIMIZER_STATES = {Optimizer.ADAM: 2, Optimizer.SGD: 0}
"""Tensors of optimizer state per trainable parameter: Adam's two moments; plain SGD has none."""


@dataclasses.dataclass(slots=True)
class _Parameters:
    """The model's parameters, each counted once."""

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
    count = len(calls)
    parameters = _parameters(meter)
    # Column by column, each a list over the calls: list comprehensions, zip and map run in C.
    flops = _summed(_pairs(meter.flops), count)
    other = _summed(_pairs(meter.other_flops), count)
    attention = _column(meter.attention_flops, count)
    tokens = _column(meter.attention_tokens, count)
    sizes = meter.serial_bytes
    saving = meter.saved_by_call
    saved = _summed(zip(saving[::2], map(sizes.__getitem__, saving[1::2]), strict=True), count)
    weights = meter.model.weights
    macs = [
        torchinfo_macs(call.module, weights[id(call.module)], call.outputs) if id(call.module) in weights else 0
        for call in calls
    ]
    names: dict[torch.dtype | None, tuple[str, int]] = {None: ("", 0)}
    dtypes = _output_dtypes(calls, meter)
    for dtype in set(dtypes) - names.keys():
        names[dtype] = (str(dtype).removeprefix("torch."), dtype.itemsize)  # type: ignore[union-attr]
    output_bytes = [
        sum(map(math.prod, call.outputs)) * names[dtype][1] for call, dtype in zip(calls, dtypes, strict=True)
    ]
    # Each layer's parameter split from the counts the trace already has, unless some are frozen
    # or of another dtype: then one walk of the module tree.
    if parameters.uniform_size:
        trainable = [layer.params for layer in trace.layers]
        frozen = [0] * count
        nbytes = [params * parameters.uniform_size for params in trainable]
    else:
        shares = _shares(model)
        trainable, frozen, nbytes = (
            list(column) for column in zip(*(shares.get(id(call.module), (0, 0, 0)) for call in calls), strict=True)
        )
    for index in range(count - 1, 0, -1):
        parent = calls[index].parent
        if parent is not None:
            flops[parent] += flops[index]
            other[parent] += other[index]
            macs[parent] += macs[index]
            saved[parent] += saved[index]
            attention[parent] += attention[index]
            if tokens[index] > tokens[parent]:  # noqa: PLR1730 - once per call: cheaper than max()
                tokens[parent] = tokens[index]
    # Most modules have no kernel_size: only those that do are read further.
    kernels = [() if (size := call.module.__dict__.get("kernel_size")) is None else _kernel(size) for call in calls]
    dtype_names = [names[dtype][0] for dtype in dtypes]
    columns = (
        flops,
        other,
        macs,
        output_bytes,
        saved,
        trainable,
        frozen,
        nbytes,
        kernels,
        dtype_names,
        tokens,
        attention,
    )
    # tuple.__new__ skips the NamedTuple's Python-level __new__; the columns are in LayerCost's field order.
    layers = tuple(map(tuple.__new__, itertools.repeat(LayerCost), zip(*columns, strict=True)))
    checkpointed = checkpointed_saved(calls, meter) if options.checkpointing else 0
    root = (flops[0], other[0], macs[0]) if count else (0, 0, 0)
    summary = _summary(root, meter, parameters, inputs, options, checkpointed)
    return dataclasses.replace(trace, cost=dataclasses.replace(summary, layers=layers))


def _pairs(log: list[Any]) -> Iterator[tuple[Any, Any]]:
    """A flat log of call, value, call, value... as (call, value) pairs."""
    return zip(log[::2], log[1::2], strict=True)


def _summed(log: Iterable[tuple[int, int]], count: int) -> list[int]:
    """A log of (call, value) added up per call, as a list over every call (0 where a call has none)."""
    column = [0] * count
    for index, value in log:
        if 0 <= index < count:
            column[index] += value
    return column


def _column(values: dict[int, int], count: int) -> list[int]:
    """A per-call dict as a list over every call (0 where a call has no value)."""
    column = [0] * count
    for index, value in values.items():
        if 0 <= index < count:
            column[index] = value
    return column


def _output_dtypes(calls: Sequence[Call], meter: CostMeter) -> list[torch.dtype | None]:
    """The dtype of each call's output: of the last tensor made in it, by its own ops or its children's.

    A call that makes nothing (nn.Identity) takes the dtype of the tensor made just before it.
    """
    made_by, dtypes = meter.made[::2], meter.made[1::2]
    last = dict(zip(made_by, range(len(made_by)), strict=True))  # each call's own last op: later ones overwrite
    latest = [last.get(index, -1) for index in range(len(calls))]
    for call in reversed(calls):
        parent = call.parent
        if parent is not None and latest[call.index] > latest[parent]:
            latest[parent] = latest[call.index]
    found: list[torch.dtype | None] = []
    previous: torch.dtype | None = None
    for number in latest:
        if number >= 0:
            previous = dtypes[number]  # type: ignore[assignment]  # the odd entries are dtypes
        found.append(previous)
    return found


def torchinfo_macs(module: nn.Module, weights: tuple[int, int], outputs: Sequence[tuple[int, ...]]) -> int:
    """torchinfo's mult-adds of a call: each weight and bias entry once per output position.

    A convolution's output position is (batch, *spatial); any other layer's is the batch alone,
    as torchinfo counts it (a Linear on (B, N, C) counts B, not B·N). Other weights (an RNN's)
    count once per (batch, channel). Containers count 0: their leaves are counted.
    """
    if not outputs or not outputs[0] or has_children(module):
        return 0
    per_position, per_row = weights
    output = outputs[0]
    positions = math.prod(output[:1] + output[2:]) if "Conv" in type(module).__name__ else output[0]
    return per_position * positions + per_row * math.prod(output[:2])


def _kernel(size: object) -> tuple[int, ...]:
    """A module's kernel_size as a tuple of ints; () where it is no int or sequence of ints."""
    if type(size) is tuple:
        return size  # as torch's layers keep it: a tuple of ints
    if isinstance(size, int):
        return (size,)
    if isinstance(size, (tuple, list)) and all(isinstance(extent, int) for extent in size):
        return tuple(size)
    return ()


def _parameters(meter: CostMeter) -> _Parameters:
    """Totals over the model's parameters, each once (the meter collected them)."""
    state = meter.model
    uniform = next(iter(state.by_dtype)).itemsize if len(state.by_dtype) == 1 and not state.frozen else 0
    named = {str(dtype).removeprefix("torch."): nbytes for dtype, nbytes in state.by_dtype.items()}
    return _Parameters(state.trainable, state.frozen, state.trainable_bytes, named, uniform)


def _shares(model: nn.Module) -> dict[int, tuple[int, int, int]]:
    """(trainable, frozen, bytes) of each module with its children, in one walk of the tree."""
    found: dict[int, tuple[int, int, int]] = {}

    def visit(module: nn.Module) -> tuple[int, int, int]:
        if id(module) in found:
            return found[id(module)]
        trainable = frozen = nbytes = 0
        for parameter in own_parameters(module).values():
            if parameter is None or is_lazy(parameter):
                continue
            count = parameter.numel()
            nbytes += count * parameter.element_size()
            if parameter.requires_grad:
                trainable += count
            else:
                frozen += count
        for child in child_modules(module).values():
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
    for index, serial in _pairs(meter.saved_by_call):
        block = _block_of(calls, index)
        if block is None:
            kept.add(serial)
        else:
            by_block[block].add(serial)
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
    root: tuple[int, int, int],
    meter: CostMeter,
    parameters: _Parameters,
    inputs: Sequence[torch.Tensor],
    options: CostOptions,
    checkpointed: int,
) -> CostSummary:
    param_bytes = sum(parameters.by_dtype.values())
    sizes = meter.serial_bytes
    buffer_bytes = sum(map(sizes.__getitem__, meter.state.values()))
    saved = checkpointed if options.checkpointing else sum(map(sizes.__getitem__, meter.saved))
    gradient_bytes = parameters.trainable_bytes
    optimizer_bytes = OPTIMIZER_STATES[options.optimizer] * gradient_bytes
    transient = 2 * meter.largest
    state = param_bytes + buffer_bytes
    flops, other, macs = root
    return CostSummary(
        flops=flops,
        other_flops=other,
        macs=macs,
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
