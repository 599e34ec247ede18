"""The cost of one forward, op by op: FLOPs, live bytes, and what training would save.

Each op the function mode sees is charged to the innermost call running. Its outputs are
tracked by storage: a weak reference per tensor object, and a count of the tracked objects
that share each storage, so a storage is live from the op that made it until the last tensor
on it is collected, as in the real forward (Python frees a tensor when nothing refers to it).
The live total after each op gives the activation peak at op boundaries.

Training is simulated beside the no_grad forward: a tensor requires grad if it is a
trainable parameter or an op made it from one that does, and `saving.SAVES` names what each
op's backward would keep. Storages get serial numbers that are never reused, so a saved
tensor freed by this no_grad forward is still counted once however its memory is reused.

Every op of a forward passes through `op`, so it is written for speed: one table lookup per
op, one weak reference object per tensor that carries the tensor's state itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shapetrace.tracing._torch_compat import own_buffers, own_parameters
from shapetrace.tracing.cost.flops import ATTENTION, FLOP_FORMULAS, OTHER_FLOPS
from shapetrace.tracing.cost.saving import SAVES
from shapetrace.tracing.walk import every_module

MODEL_INPUT = -1

_ENTRIES = {
    func: (FLOP_FORMULAS.get(func), OTHER_FLOPS.get(func), ATTENTION.get(func), SAVES.get(func))
    for func in {*FLOP_FORMULAS, *OTHER_FLOPS, *SAVES}
}
"""Each function's FLOP formula, other-FLOPs estimate, attention formula and saving rule: one lookup per op."""


class _Reference(weakref.ref):  # type: ignore[type-arg]  # the referent is always a tensor
    """A weak reference to a tracked tensor that holds what is known of it."""

    __slots__ = ("grad", "identity", "storage")
    storage: int
    """The storage's key: its StorageImpl's address, which its views share."""
    grad: bool
    """The tensor would require grad in training."""
    identity: int


@dataclass(slots=True)
class _Storage:
    serial: int
    nbytes: int
    holders: int = 0
    """Tracked tensor objects on this storage; it is freed when the last one is."""


@dataclass(slots=True)
class CallCost:
    """What one call's own ops cost, before children are added."""

    flops: int = 0
    other_flops: int = 0
    saved: list[int] = field(default_factory=list)
    """Serials of the storages first saved by this call's own ops."""
    attention_flops: int = 0
    attention_tokens: int = 0


class CostMeter:
    """Per-call FLOPs and saved bytes, the live-bytes peak, and the largest tensor made."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: dict[int, CallCost] = {}
        self.outputs: dict[int, tuple[int, torch.dtype | None]] = {}
        """Bytes of each call's outputs and the dtype of its first."""
        self.inputs: dict[int, list[int]] = {}
        """Serials of each block's input storages (checkpointing keeps them)."""
        self.storages: dict[int, _Storage] = {}
        self.tensors: dict[int, _Reference] = {}
        self.serial_bytes: list[int] = []
        """Bytes of each storage ever seen, by serial."""
        self.saved: set[int] = set()
        self.live = 0
        self.peak = 0
        self.largest = 0
        self.parameters: set[int] = set()
        self.state: dict[int, int] = {}
        """Serials of the model's buffer storages (parameters and buffers are never live activations)."""
        self.call = MODEL_INPUT
        for module in every_module(model):
            for parameter in own_parameters(module).values():
                if parameter is not None:
                    self.parameters.add(_storage_key(parameter))
            for buffer in own_buffers(module).values():
                key = _storage_key(buffer) if buffer is not None else 0
                if key and key not in self.state:
                    self.state[key] = self._serial(buffer.untyped_storage().nbytes())  # type: ignore[union-attr]

    # --- tensors --------------------------------------------------------------------------

    def requires_grad(self, tensor: torch.Tensor) -> bool:
        known = self.tensors.get(id(tensor))
        if known is not None and known() is tensor:
            return known.grad
        return tensor.requires_grad  # a parameter, or one of the user's tensors

    def track(self, tensor: torch.Tensor, grad: bool) -> None:
        """Follow `tensor` until it is collected; its storage is live while any such tensor is."""
        identity = id(tensor)
        known = self.tensors.get(identity)
        if known is not None and known() is tensor:
            known.grad = known.grad or grad  # returned again (in place, or `.float()` of a float)
            return
        try:
            storage_object = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return  # no storage (a sparse or nested tensor): not counted
        key = storage_object._cdata
        reference = _Reference(tensor, self._release)
        reference.storage, reference.grad, reference.identity = key, grad, identity
        self.tensors[identity] = reference
        if key in self.parameters or key in self.state:
            return  # model state: never a live activation here
        storage = self.storages.get(key)
        if storage is None:
            nbytes = storage_object.nbytes()
            self.serial_bytes.append(nbytes)
            storage = self.storages[key] = _Storage(len(self.serial_bytes) - 1, nbytes)
            self.live += nbytes
            if nbytes > self.largest:  # noqa: PLR1730 - cheaper than max() on every new storage
                self.largest = nbytes
        storage.holders += 1

    def _release(self, reference: _Reference) -> None:
        """A tracked tensor was collected: its storage is freed with the last one on it."""
        if self.tensors.get(reference.identity) is reference:
            del self.tensors[reference.identity]
        storage = self.storages.get(reference.storage)
        if storage is not None:
            storage.holders -= 1
            if storage.holders == 0:
                self.live -= storage.nbytes
                del self.storages[reference.storage]

    def _serial(self, nbytes: int) -> int:
        self.serial_bytes.append(nbytes)
        return len(self.serial_bytes) - 1

    def serial_of(self, tensor: torch.Tensor) -> int | None:
        """The serial of `tensor`'s storage, tracking a storage seen for the first time; None for parameters."""
        known = self.tensors.get(id(tensor))
        key = known.storage if known is not None and known() is tensor else _storage_key(tensor)
        if not key or key in self.parameters:
            return None
        if key in self.state:
            return self.state[key]
        storage = self.storages.get(key)
        if storage is None:
            self.track(tensor, tensor.requires_grad)  # made outside the mode: a constant of the model
            storage = self.storages.get(key)
        return None if storage is None else storage.serial

    # --- saving (the Saver of `saving`) -----------------------------------------------------

    def save(self, tensor: Any) -> None:
        if not isinstance(tensor, torch.Tensor):
            return
        serial = self.serial_of(tensor)
        if serial is not None and serial not in self.saved:
            self.saved.add(serial)
            self._cost(self.call).saved.append(serial)

    def save_new(self, nbytes: int) -> None:
        serial = self._serial(nbytes)
        self.saved.add(serial)
        self._cost(self.call).saved.append(serial)

    # --- ops and calls ------------------------------------------------------------------

    def _cost(self, call: int) -> CallCost:
        cost = self.calls.get(call)
        if cost is None:
            cost = self.calls[call] = CallCost()
        return cost

    def op(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> None:
        """Charge one op to `call`: its FLOPs, its outputs' bytes and what its backward keeps."""
        if isinstance(output, torch.Tensor):
            grad = self._any_grad(args) or (bool(kwargs) and self._any_grad(kwargs.values()))
            self.track(output, grad and output.is_floating_point())
        elif isinstance(output, (tuple, list)) and any(isinstance(item, torch.Tensor) for item in output):
            grad = self._any_grad(args) or (bool(kwargs) and self._any_grad(kwargs.values()))
            for tensor in output:
                if isinstance(tensor, torch.Tensor):
                    self.track(tensor, grad and tensor.is_floating_point())
        else:
            return  # a size, a dtype, a bool: nothing was made
        if self.live > self.peak:  # noqa: PLR1730 - cheaper than max() on every op
            self.peak = self.live
        entry = _ENTRIES.get(func)
        if entry is None:
            return
        formula, estimate, attention, rule = entry
        cost = self.calls.get(call) or self._cost(call)
        if formula is not None:
            cost.flops += formula(args, kwargs, output)
            if attention is not None:
                quadratic, tokens = attention(args, kwargs)
                cost.attention_flops += quadratic
                cost.attention_tokens = max(cost.attention_tokens, tokens)
        if estimate is not None:
            cost.other_flops += estimate(args, kwargs, output)
        if grad and rule is not None:
            self.call = call
            rule(self, args, kwargs, output)

    def _any_grad(self, values: Any) -> bool:
        """Whether a tensor among `values` (or in a list among them) requires grad."""
        tensors = self.tensors
        for value in values:
            if isinstance(value, torch.Tensor):
                known = tensors.get(id(value))
                if known.grad if known is not None and known() is value else value.requires_grad:
                    return True
            elif isinstance(value, (list, tuple)) and self._any_grad(value):
                return True
        return False

    def track_inputs(self, tensors: Sequence[torch.Tensor]) -> None:
        """The model's inputs: live from the start."""
        for tensor in tensors:
            self.track(tensor, tensor.requires_grad)
        self.peak = max(self.peak, self.live)

    def begin_call(self, call: int, tensors: Sequence[torch.Tensor]) -> None:
        """Remember the storages a block receives (checkpointing keeps them)."""
        serials = self.inputs.setdefault(call, [])
        serials.extend(serial for serial in map(self.serial_of, tensors) if serial is not None)

    def end_call(self, call: int, output: Any, outputs: Callable[[Any], list[torch.Tensor]]) -> None:
        """The bytes of a call's outputs (`outputs` finds the tensors in a structured output)."""
        if isinstance(output, torch.Tensor):
            self.outputs[call] = (output.nbytes, output.dtype)
            return
        tensors = outputs(output)
        self.outputs[call] = (sum(tensor.nbytes for tensor in tensors), tensors[0].dtype if tensors else None)


def _storage_key(tensor: torch.Tensor) -> int:
    """The address of the tensor's StorageImpl, shared by its views; 0 where it has none."""
    try:
        return int(tensor.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError):
        return 0
