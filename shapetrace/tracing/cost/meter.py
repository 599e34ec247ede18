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
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

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

    __slots__ = ("dtype", "grad", "identity", "storage")
    storage: int
    """The storage's key: its StorageImpl's address, which its views share."""
    grad: bool
    """The tensor would require grad in training."""
    identity: int
    dtype: torch.dtype


class CostMeter:
    """Per-call FLOPs and saved bytes, the live-bytes peak, and the largest tensor made."""

    def __init__(self, model: nn.Module) -> None:
        # Per call, by call index: the call's own ops only (the summary adds the children).
        self.flops: defaultdict[int, int] = defaultdict(int)
        self.other_flops: defaultdict[int, int] = defaultdict(int)
        self.saved_by_call: defaultdict[int, list[int]] = defaultdict(list)
        """Serials of the storages first saved by each call's own ops."""
        self.attention_flops: defaultdict[int, int] = defaultdict(int)
        self.attention_tokens: defaultdict[int, int] = defaultdict(int)
        self.dtypes: dict[int, tuple[int, torch.dtype]] = {}
        """(op number, dtype) of the last tensor each call's own ops made: its output's, usually."""
        self.ops = 0
        self.inputs: dict[int, list[int]] = {}
        """Serials of each block's input storages (checkpointing keeps them)."""
        self.serials: dict[int, int] = {}
        """The serial of each live storage, by its key."""
        self.holders: dict[int, int] = {}
        """Tracked tensor objects on each live storage: it is freed when the last one is."""
        self.tensors: dict[int, _Reference] = {}
        self.serial_bytes: list[int] = []
        """Bytes of each storage ever seen, by serial."""
        self.saved: set[int] = set()
        self.live = 0
        self.peak = 0
        self.largest = 0
        self.saving: list[int] = []
        """The saved serials of the call whose op runs its saving rule."""
        self._released = self._release  # one bound method for every weak reference
        self.parameters: list[nn.Parameter] = []
        """Each parameter of the model once."""
        self.state: dict[int, int] = {}
        """Serials of the model's buffer storages (parameters and buffers are never live activations)."""
        unique: dict[int, nn.Parameter] = {}
        for module in every_module(model):
            unique.update(
                (id(parameter), parameter) for parameter in module._parameters.values() if parameter is not None
            )
            for buffer in module._buffers.values():
                key = _storage_key(buffer) if buffer is not None else 0
                if key and key not in self.state:
                    self.state[key] = self._serial(buffer.untyped_storage().nbytes())  # type: ignore[union-attr]
        self.parameters = list(unique.values())
        self.parameter_keys = {parameter.untyped_storage()._cdata for parameter in self.parameters}

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
        reference = _Reference(tensor, self._released)
        reference.storage, reference.grad, reference.identity, reference.dtype = key, grad, identity, tensor.dtype
        self.tensors[identity] = reference
        if key in self.parameter_keys or key in self.state:
            return  # model state: never a live activation here
        holders = self.holders.get(key)
        if holders is None:
            nbytes = storage_object.nbytes()
            self.serials[key] = len(self.serial_bytes)
            self.serial_bytes.append(nbytes)
            self.live += nbytes
            if nbytes > self.largest:  # noqa: PLR1730 - cheaper than max() on every new storage
                self.largest = nbytes
            holders = 0
        self.holders[key] = holders + 1

    def _release(self, reference: _Reference) -> None:
        """A tracked tensor was collected: its storage is freed with the last one on it."""
        if self.tensors.get(reference.identity) is reference:
            del self.tensors[reference.identity]
        key = reference.storage
        holders = self.holders.get(key)
        if holders == 1:
            del self.holders[key]
            self.live -= self.serial_bytes[self.serials.pop(key)]
        elif holders is not None:
            self.holders[key] = holders - 1

    def _serial(self, nbytes: int) -> int:
        self.serial_bytes.append(nbytes)
        return len(self.serial_bytes) - 1

    def serial_of(self, tensor: torch.Tensor) -> int | None:
        """The serial of `tensor`'s storage, tracking a storage seen for the first time; None for parameters."""
        known = self.tensors.get(id(tensor))
        key = known.storage if known is not None and known() is tensor else _storage_key(tensor)
        if not key or key in self.parameter_keys:
            return None
        if key in self.state:
            return self.state[key]
        serial = self.serials.get(key)
        if serial is None:
            self.track(tensor, tensor.requires_grad)  # made outside the mode: a constant of the model
            serial = self.serials.get(key)
        return serial

    # --- saving (the Saver of `saving`) -----------------------------------------------------

    def save(self, tensor: Any) -> None:
        kind = type(tensor)
        # Parameters are the model's, not saved activations. (isinstance(x, nn.Parameter) runs a
        # Python-level __instancecheck__; the type itself is quicker to ask.)
        if kind is not torch.Tensor and (not issubclass(kind, torch.Tensor) or issubclass(kind, nn.Parameter)):
            return
        known = self.tensors.get(id(tensor))
        serial = self.serials.get(known.storage) if known is not None and known() is tensor else None
        if serial is None:
            serial = self.serial_of(tensor)
        if serial is not None and serial not in self.saved:
            self.saved.add(serial)
            self.saving.append(serial)

    def save_new(self, nbytes: int) -> None:
        serial = self._serial(nbytes)
        self.saved.add(serial)
        self.saving.append(serial)

    # --- ops and calls ------------------------------------------------------------------

    def op(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> None:
        """Charge one op to `call`: its FLOPs, its outputs' bytes and what its backward keeps."""
        if isinstance(output, torch.Tensor):
            grad = self._any_grad(args) or (bool(kwargs) and self._any_grad(kwargs.values()))
            self.track(output, grad and output.is_floating_point())
            self.ops += 1
            self.dtypes[call] = (self.ops, output.dtype)
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
        if formula is not None:
            self.flops[call] += formula(args, kwargs, output)
            if attention is not None:
                quadratic, tokens = attention(args, kwargs)
                self.attention_flops[call] += quadratic
                self.attention_tokens[call] = max(self.attention_tokens[call], tokens)
        if estimate is not None:
            self.other_flops[call] += estimate(args, kwargs, output)
        if grad and rule is not None:
            self.saving = self.saved_by_call[call]
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


def _storage_key(tensor: torch.Tensor) -> int:
    """The address of the tensor's StorageImpl, shared by its views; 0 where it has none."""
    try:
        return int(tensor.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError):
        return 0
