"""The model's own memory, read in one walk of its module tree: parameters and buffers.

A cost trace needs each parameter once (totals by dtype, trainable or frozen), each module's
own weight entries (torchinfo's MACs count them), the storages of parameters and buffers (an op
may hand one back, and it is never a live activation), and each module's parameters with its
children's, which the trace's records need too (`freeze.parameter_counts`): one walk serves all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from shapetrace.tracing._torch_compat import child_modules, is_lazy, own_buffers, own_parameters


@dataclass(slots=True)
class ModelState:
    """The model's parameters, each counted once, and where its parameters and buffers live."""

    trainable: int = 0
    frozen: int = 0
    trainable_bytes: int = 0
    by_dtype: dict[torch.dtype, int] = field(default_factory=dict)
    weights: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Each module's own (weight and bias entries, other weight entries), by id(module), where it has any."""
    module_parameters: dict[int, int] = field(default_factory=dict)
    """Parameters of each module with its children, by id(module), as `freeze.parameter_counts` counts them."""
    parameter_storages: set[int] = field(default_factory=set)
    """Storage keys (`storage_key`) of the parameters."""
    buffer_storages: dict[int, int] = field(default_factory=dict)
    """Bytes of each buffer storage, by storage key."""


def storage_key(tensor: torch.Tensor) -> int:
    """The address of the tensor's StorageImpl, shared by its views; 0 where it has none."""
    try:
        return int(tensor.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError):
        return 0


def model_state(model: nn.Module) -> ModelState:
    """One walk of `model`'s tree (each module once, a shared one counted in each parent's total)."""
    state = ModelState()
    seen: set[int] = set()
    trainable: dict[torch.dtype, int] = {}
    frozen: dict[torch.dtype, int] = {}
    totals = state.module_parameters

    def visit(module: nn.Module) -> int:
        per_position = per_row = own = 0
        for name, parameter in own_parameters(module).items():
            if parameter is None or (type(parameter) is not nn.Parameter and is_lazy(parameter)):
                continue
            count = parameter.numel()
            own += count
            if name in ("weight", "bias"):
                per_position += count
            elif "weight" in name or "bias" in name:
                per_row += count  # an RNN's weight_ih_l0
            if id(parameter) not in seen:
                seen.add(id(parameter))
                state.parameter_storages.add(storage_key(parameter))
                entries = trainable if parameter.requires_grad else frozen
                entries[parameter.dtype] = entries.get(parameter.dtype, 0) + count
        if per_position or per_row:
            state.weights[id(module)] = (per_position, per_row)
        for buffer in own_buffers(module).values():
            key = 0 if buffer is None else storage_key(buffer)
            if key and key not in state.buffer_storages:
                state.buffer_storages[key] = buffer.untyped_storage().nbytes()  # type: ignore[union-attr]
        totals[id(module)] = own  # before the children: a module reached again below counts once
        for child in child_modules(module).values():
            if child is not None:
                own += totals[id(child)] if id(child) in totals else visit(child)
        totals[id(module)] = own
        return own

    visit(model)
    state.trainable, state.frozen = sum(trainable.values()), sum(frozen.values())
    totals[id(model)] = state.trainable + state.frozen  # the model's own total counts each parameter once
    state.trainable_bytes = sum(count * dtype.itemsize for dtype, count in trainable.items())
    for dtype in {*trainable, *frozen}:
        state.by_dtype[dtype] = (trainable.get(dtype, 0) + frozen.get(dtype, 0)) * dtype.itemsize
    return state
