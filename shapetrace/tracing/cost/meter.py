"""The cost of one forward, op by op: FLOPs, live bytes, and what training would save.

Each op the function mode sees is charged to the innermost call running. Its outputs are
tracked by storage, with a weak reference to the storage's Python object: torch keeps that
one object for as long as the storage lives (PyObject preservation, torch 2.1), so it is
collected when the last tensor or view on the storage is, as in the real forward (Python
frees a tensor when nothing refers to it). The live total after each op gives the activation
peak at op boundaries.

Training is simulated beside the no_grad forward: a tensor requires grad if it is a
trainable parameter or an op made it from one that does (a view as its storage), and
`saving.SAVES` names what each op's backward would keep. Storages get serial numbers that are never reused, so a saved
tensor freed by this no_grad forward is still counted once however its memory is reused.

Every op of a forward passes through here, so it is written for speed: the common functions
take their own shorter paths (`fast.HANDLERS`, tried by the observer), the rest `op` with one
table lookup; the weak reference to each storage carries what is known of it.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from shapetrace.tracing.cost.fast import HANDLERS as _HANDLERS
from shapetrace.tracing.cost.flops import ATTENTION, FLOP_FORMULAS, OTHER_FLOPS
from shapetrace.tracing.cost.model_state import model_state, storage_key
from shapetrace.tracing.cost.saving import SAVES

MODEL_INPUT = -1
_TENSOR = torch.Tensor
_PARAMETER = nn.Parameter

_ENTRIES = {
    func: (FLOP_FORMULAS.get(func), OTHER_FLOPS.get(func), ATTENTION.get(func), SAVES.get(func))
    for func in {*FLOP_FORMULAS, *OTHER_FLOPS, *SAVES}
}
"""Each function's FLOP formula, other-FLOPs estimate, attention formula and saving rule: one lookup per op."""


class _Storage(weakref.ref):  # type: ignore[type-arg]  # the referent is always a storage
    """A weak reference to a live storage's Python object that holds what is known of the storage."""

    __slots__ = ("grad", "serial")
    serial: int
    grad: bool
    """Its tensors would require grad in training."""


class CostMeter:
    """Per-call FLOPs and saved bytes, the live-bytes peak, and the largest tensor made."""

    def __init__(self, model: nn.Module) -> None:
        # Flat logs of call, value, call, value... in the order the ops ran: the summary adds them
        # up per call. Nearly every op runs in a call of its own (a layer), where a per-call dict
        # would insert a new key on every op, several times the cost of an append; and a pair
        # kept per op would be one more object for the garbage collector to count and walk.
        self.flops: list[int] = []
        self.other_flops: list[int] = []
        self.saved_by_call: list[int] = []
        """Call and serial of each storage saved, by the call whose op saved it first."""
        self.made: list[int | torch.dtype] = []
        """Call and dtype of each op that made a tensor: a call's last one is its output's, usually."""
        # Attention is rare: per call.
        self.attention_flops: defaultdict[int, int] = defaultdict(int)
        self.attention_tokens: defaultdict[int, int] = defaultdict(int)
        self.inputs: dict[int, list[int]] = {}
        """Serials of each block's input storages (checkpointing keeps them)."""
        self.storages: dict[int, _Storage] = {}
        """Each storage an op made, by its key (its StorageImpl's address, which every tensor on it
        gives as `untyped_storage()._cdata`); an entry whose storage died answers None when called."""
        self.serial_bytes: list[int] = []
        """Bytes of each storage ever seen, by serial."""
        self.saved: set[int] = set()
        self.live = 0
        self.peak = 0
        self.largest = 0
        self.saving = MODEL_INPUT
        """The call whose op runs its saving rule: what `save` charges."""
        self.dead: list[_Storage] = []
        """References whose storages were collected, not yet accounted (see track)."""
        self._died = self.dead.append  # the weak references' callback: C, no Python frame per death
        self.model = model_state(model)
        self.parameter_storages = self.model.parameter_storages
        """Keys of the parameters' storages: an op may hand one back (`.float()` of a float), or a view of one."""
        self.state = {key: self._serial(nbytes) for key, nbytes in self.model.buffer_storages.items()}
        """Serials of the model's buffer storages, by key (parameters and buffers are never live activations)."""
        self.handlers = _HANDLERS
        """The shorter path of each common function (`fast`), which the observer tries before `op`."""

    # --- tensors --------------------------------------------------------------------------

    def requires_grad(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` would require grad in training: as the op that made its storage."""
        try:
            entry = self.storages.get(tensor.untyped_storage()._cdata)
        except (RuntimeError, NotImplementedError):
            entry = None
        if entry is not None and entry() is not None:
            return entry.grad
        base = tensor._base
        # A parameter, a view of one (made under no_grad, so it answers False itself), or one of the user's tensors.
        return (base if base is not None else tensor).requires_grad

    def track(self, tensor: torch.Tensor, grad: bool, call: int | None = None) -> None:
        """Follow `tensor`'s storage until it is collected: it is live while any tensor or view on it is.

        `grad`: an input of the op that made it requires grad (integer outputs never do).
        `call`: the call whose op returned `tensor`, which counts the op (one frame less per op
        than counting it apart); None for a tensor no single op returned.
        """
        if call is not None:
            self.made += (call, tensor.dtype)
        try:
            storage_object = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return  # no storage (a sparse or nested tensor): not counted
        key = storage_object._cdata
        storages = self.storages
        entry = storages.get(key)
        if entry is not None and entry() is storage_object:
            # A view, or an input handed back (in place, or `.float()` of a float): its storage's.
            if grad and not entry.grad:
                entry.grad = tensor.is_floating_point()
            return
        dead = self.dead
        if dead:
            # The storages collected since the last op, queued by their weak references' callback
            # (a list's append), are freed before this one counts: the peak is of tensors alive
            # together. Written out here, not called: nearly every new storage follows a death.
            # A dead entry stays in `storages` until its key is reused: every lookup there asks the
            # reference for its storage first.
            freed, sizes = 0, self.serial_bytes
            for collected in dead:
                freed += sizes[collected.serial]
            self.live -= freed
            dead.clear()
        # issubclass, not isinstance: nn.Parameter's metaclass answers isinstance in Python.
        base = tensor._base
        kind = type(tensor if base is None else base)
        state = key in self.parameter_storages or key in self.state
        if state or (kind is not _TENSOR and issubclass(kind, _PARAMETER)):
            return  # the model's parameters and buffers, or views of them: never live activations here
        nbytes = storage_object.nbytes()
        entry = _Storage(storage_object, self._died)
        entry.grad = grad and tensor.is_floating_point()
        serial_bytes = self.serial_bytes
        entry.serial = len(serial_bytes)
        serial_bytes.append(nbytes)
        storages[key] = entry
        live = self.live = self.live + nbytes
        if live > self.peak:  # noqa: PLR1730 - cheaper than max() on every new storage
            self.peak = live
        if nbytes > self.largest:  # noqa: PLR1730 - cheaper than max() on every new storage
            self.largest = nbytes

    def _serial(self, nbytes: int) -> int:
        self.serial_bytes.append(nbytes)
        return len(self.serial_bytes) - 1

    def serial_of(self, tensor: torch.Tensor) -> int | None:
        """The serial of `tensor`'s storage, tracking a storage seen for the first time; None for parameters."""
        key = storage_key(tensor)
        if not key:
            return None
        if key in self.state:
            return self.state[key]
        entry = self.storages.get(key)
        if entry is None or entry() is None:
            base = tensor._base
            if key in self.parameter_storages or issubclass(type(tensor if base is None else base), nn.Parameter):
                return None  # a parameter, or a view of one: the model's, not a saved activation
            self.track(tensor, tensor.requires_grad)  # made outside the mode: a constant of the model
            entry = self.storages.get(key)
        return entry.serial if entry is not None else None

    # --- saving (the Saver of `saving`) -----------------------------------------------------

    def save(self, tensor: Any) -> None:
        kind = type(tensor)
        # Parameters are the model's, not saved activations. (isinstance(x, nn.Parameter) runs a
        # Python-level __instancecheck__; the type itself is quicker to ask.)
        if kind is not _TENSOR and (not issubclass(kind, _TENSOR) or issubclass(kind, _PARAMETER)):
            return
        try:
            entry = self.storages.get(tensor.untyped_storage()._cdata)
        except (RuntimeError, NotImplementedError):
            return
        serial = entry.serial if entry is not None and entry() is not None else self.serial_of(tensor)
        if serial is not None and serial not in self.saved:
            self.saved.add(serial)
            self.saved_by_call += (self.saving, serial)

    def save_new(self, nbytes: int) -> None:
        serial = self._serial(nbytes)
        self.saved.add(serial)
        self.saved_by_call += (self.saving, serial)

    # --- ops and calls ------------------------------------------------------------------

    def op(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> None:  # noqa: PLR0912 - every op runs this: written out, not split into calls
        """Charge one op to `call`: its FLOPs, its outputs' bytes and what its backward keeps."""
        if isinstance(output, torch.Tensor):
            if output._base is not None and func not in _ENTRIES:
                # A view (transpose, reshape) of a followed storage: the storage holds its bytes and
                # its grad, and no formula or rule waits for it. Nothing to ask of its inputs.
                storage_object = output.untyped_storage()
                followed = self.storages.get(storage_object._cdata)
                if followed is not None and followed() is storage_object:
                    self.made += (call, output.dtype)
                    return
            # Whether an input requires grad, the loop of any_grad written out: every op asks.
            grad = False
            for value in args:
                if isinstance(value, torch.Tensor):
                    if self.requires_grad(value):
                        grad = True
                        break
                elif isinstance(value, (list, tuple)) and self.any_grad(value):
                    grad = True
                    break
            if kwargs and not grad:
                grad = self.any_grad(kwargs.values())
            self.track(output, grad, call)
        else:
            made = self._track_all(args, kwargs, output)
            if made is None:
                return  # a size, a dtype, a bool: nothing was made
            grad = made
        entry = _ENTRIES.get(func)
        if entry is None:
            return
        formula, estimate, attention, rule = entry
        if formula is not None:
            self.flops += (call, formula(args, kwargs, output))
            if attention is not None:
                quadratic, tokens = attention(args, kwargs)
                self.attention_flops[call] += quadratic
                self.attention_tokens[call] = max(self.attention_tokens[call], tokens)
        if estimate is not None:
            if isinstance(estimate, int):  # FLOPs per output element, the common case
                if isinstance(output, torch.Tensor):
                    self.other_flops += (call, estimate * output.numel())
            else:
                self.other_flops += (call, estimate(args, kwargs, output))
        if grad and rule is not None:
            self.saving = call
            rule(self, args, kwargs, output)

    def _track_all(self, args: Sequence[Any], kwargs: dict[str, Any], output: Any) -> bool | None:
        """Track each tensor of a tuple or list output; whether an input requires grad, or None if none was made."""
        kind = type(output)
        if kind is torch.Size or not isinstance(output, (tuple, list)):  # a shape: every .shape asks the mode
            return None
        if not any(isinstance(item, torch.Tensor) for item in output):
            return None
        grad = self.any_grad(args) or (bool(kwargs) and self.any_grad(kwargs.values()))
        for tensor in output:
            if isinstance(tensor, torch.Tensor):
                self.track(tensor, grad)
        return grad

    def any_grad(self, values: Any) -> bool:
        """Whether a tensor among `values` (or in a list among them) requires grad."""
        for value in values:
            if isinstance(value, torch.Tensor):
                if self.requires_grad(value):
                    return True
            elif isinstance(value, (list, tuple)) and self.any_grad(value):
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
