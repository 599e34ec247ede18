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

Every op of a forward passes through here, so it is written for speed: the common functions
take their own shorter paths (`fast.HANDLERS`, tried by the observer), the rest `op` with one
table lookup; one weak reference object per tensor carries the tensor's state itself.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shapetrace.tracing._torch_compat import is_lazy, own_buffers, own_parameters
from shapetrace.tracing.cost.fast import HANDLERS as _HANDLERS
from shapetrace.tracing.cost.flops import ATTENTION, FLOP_FORMULAS, OTHER_FLOPS
from shapetrace.tracing.cost.saving import SAVES
from shapetrace.tracing.walk import every_module

MODEL_INPUT = -1
_TENSOR = torch.Tensor
_PARAMETER = nn.Parameter

_ENTRIES = {
    func: (FLOP_FORMULAS.get(func), OTHER_FLOPS.get(func), ATTENTION.get(func), SAVES.get(func))
    for func in {*FLOP_FORMULAS, *OTHER_FLOPS, *SAVES}
}
"""Each function's FLOP formula, other-FLOPs estimate, attention formula and saving rule: one lookup per op."""


class _Reference(weakref.ref):  # type: ignore[type-arg]  # the referent is always a tensor
    """A weak reference to a tracked tensor that holds what is known of it."""

    __slots__ = ("grad", "storage")
    storage: int
    """The storage's key: its StorageImpl's address, which its views share."""
    grad: bool
    """The tensor would require grad in training."""


@dataclass(slots=True)
class ModelState:
    """The model's parameters, each counted once."""

    trainable: int = 0
    frozen: int = 0
    trainable_bytes: int = 0
    by_dtype: dict[torch.dtype, int] = field(default_factory=dict)
    weights: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Each module's own (weight and bias entries, other weight entries), where it has any."""


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
        self.dead: list[_Reference] = []
        """References whose tensors were collected, not yet accounted (see _release_dead)."""
        self._died = self.dead.append  # the weak references' callback: C, no Python frame per death
        self.model = ModelState()
        self.state: dict[int, int] = {}
        """Serials of the model's buffer storages, by key (parameters and buffers are never live activations)."""
        self.buffers: set[int] = set()
        """id() of each buffer: an op may hand one back as it is (`.float()` of a float)."""
        self.handlers = _HANDLERS
        """The shorter path of each common function (`fast`), which the observer tries before `op`."""
        self._collect(model)

    def _collect(self, model: nn.Module) -> None:
        """One walk of the model: its parameters' totals (each parameter once), each module's own
        weight entries (torchinfo's MACs count them), and its buffers."""
        seen: set[int] = set()
        state = self.model
        trainable: dict[torch.dtype, int] = {}
        frozen: dict[torch.dtype, int] = {}
        for module in every_module(model):
            per_position = per_row = 0
            for name, parameter in own_parameters(module).items():
                if parameter is None or (type(parameter) is not nn.Parameter and is_lazy(parameter)):
                    continue
                count = parameter.numel()
                if name in ("weight", "bias"):
                    per_position += count
                elif "weight" in name or "bias" in name:
                    per_row += count  # an RNN's weight_ih_l0
                identity = id(parameter)
                if identity not in seen:
                    seen.add(identity)
                    entries = trainable if parameter.requires_grad else frozen
                    dtype = parameter.dtype
                    entries[dtype] = entries.get(dtype, 0) + count
            if per_position or per_row:
                state.weights[id(module)] = (per_position, per_row)
            for buffer in own_buffers(module).values():
                if buffer is not None and id(buffer) not in self.buffers:
                    self.buffers.add(id(buffer))
                    key = _storage_key(buffer)
                    if key and key not in self.state:
                        self.state[key] = self._serial(buffer.untyped_storage().nbytes())
        state.trainable, state.frozen = sum(trainable.values()), sum(frozen.values())
        state.trainable_bytes = sum(count * dtype.itemsize for dtype, count in trainable.items())
        for dtype in {*trainable, *frozen}:
            state.by_dtype[dtype] = (trainable.get(dtype, 0) + frozen.get(dtype, 0)) * dtype.itemsize

    # --- tensors --------------------------------------------------------------------------

    def requires_grad(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` would require grad in training: as the op that made it, or as its base."""
        known = self.tensors.get(id(tensor))
        if known is not None and known() is tensor:
            return known.grad
        base = tensor._base
        if base is not None:  # a view follows its base
            known = self.tensors.get(id(base))
            if known is not None and known() is base:
                return known.grad
            return base.requires_grad
        return tensor.requires_grad  # a parameter, or one of the user's tensors

    def track(self, tensor: torch.Tensor, grad: bool, call: int | None = None) -> None:
        """Follow `tensor` until it is collected; its storage is live while any such tensor is.

        `grad`: an input of the op that made it requires grad (integer outputs never do).
        `call`: the call whose op returned `tensor`, which counts the op (one frame less per op
        than counting it apart); None for a tensor no single op returned.
        """
        if call is not None:
            ops = self.ops = self.ops + 1
            self.dtypes[call] = (ops, tensor.dtype)
        identity = id(tensor)
        tensors = self.tensors
        known = tensors.get(identity)
        if known is not None and known() is tensor:
            known.grad = known.grad or grad  # returned again (in place, or `.float()` of a float)
            return
        base = tensor._base
        if base is not None:
            # A view needs no following of its own: torch keeps its base's Python object while it
            # lives, and its grad is its base's. A base no op made (a kernel's own) is followed.
            known = tensors.get(id(base))
            if known is None or known() is not base:
                self.track(base, grad)
            return
        try:
            storage_object = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return  # no storage (a sparse or nested tensor): not counted
        key = storage_object._cdata
        reference = _Reference(tensor, self._died)
        reference.storage = key
        reference.grad = grad and tensor.is_floating_point()
        tensors[identity] = reference
        if self.dead:
            self._release_dead()  # before this storage counts: the peak is of tensors alive together
        holders = self.holders
        count = holders.get(key)
        if count is not None:
            holders[key] = count + 1
            return
        # No view here (views follow their base above): a parameter or buffer is the tensor itself.
        # issubclass, not isinstance: nn.Parameter's metaclass answers isinstance in Python.
        kind = type(tensor)
        if key in self.state or identity in self.buffers or (kind is not _TENSOR and issubclass(kind, _PARAMETER)):
            return  # a parameter or a buffer, handed back as it is: never a live activation here
        nbytes = storage_object.nbytes()
        serial_bytes = self.serial_bytes
        self.serials[key] = len(serial_bytes)
        serial_bytes.append(nbytes)
        holders[key] = 1
        live = self.live = self.live + nbytes
        if live > self.peak:  # noqa: PLR1730 - cheaper than max() on every new storage
            self.peak = live
        if nbytes > self.largest:  # noqa: PLR1730 - cheaper than max() on every new storage
            self.largest = nbytes

    def _is_model_state(self, tensor: torch.Tensor) -> bool:
        """A parameter or buffer handed back by an op, or a view of one."""
        owner = tensor._base if tensor._base is not None else tensor
        # issubclass, not isinstance: nn.Parameter's metaclass answers isinstance in Python.
        return issubclass(type(owner), nn.Parameter) or id(owner) in self.buffers

    def _release_dead(self) -> None:
        """Account the tensors collected since the last op: a storage is freed with its last tensor.

        Deaths are queued by the weak references' callback (a list's append) and settled here in
        one loop, before the next storage is counted. A dead reference stays in `tensors` until
        its id is reused: every lookup there asks the reference for its tensor first.
        """
        holders, dead = self.holders, self.dead
        for reference in dead:
            key = reference.storage
            count = holders.get(key)
            if count == 1:
                del holders[key]
                self.live -= self.serial_bytes[self.serials.pop(key)]
            elif count is not None:
                holders[key] = count - 1
        dead.clear()

    def _serial(self, nbytes: int) -> int:
        self.serial_bytes.append(nbytes)
        return len(self.serial_bytes) - 1

    def serial_of(self, tensor: torch.Tensor) -> int | None:
        """The serial of `tensor`'s storage, tracking a storage seen for the first time; None for parameters."""
        known = self.tensors.get(id(tensor))
        key = known.storage if known is not None and known() is tensor else _storage_key(tensor)
        if not key:
            return None
        if key in self.state:
            return self.state[key]
        if key not in self.serials and self._is_model_state(tensor):
            return None  # a parameter, or a view of one: the model's, not a saved activation
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
        tensors = self.tensors
        known = tensors.get(id(tensor))
        if known is None or known() is not tensor:
            # A view (a transpose, a reshape) is not followed itself: its base usually is.
            base = tensor._base
            known = tensors.get(id(base)) if base is not None else None
            if known is not None and known() is not base:
                known = None
        serial = self.serials.get(known.storage) if known is not None else None
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

    def op(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], output: Any, call: int) -> None:  # noqa: PLR0912 - every op runs this: written out, not split into calls
        """Charge one op to `call`: its FLOPs, its outputs' bytes and what its backward keeps."""
        if isinstance(output, torch.Tensor):
            base = output._base
            if base is not None and func not in _ENTRIES:
                # A view (transpose, reshape) of a followed tensor: its base holds its storage and
                # its grad, and no formula or rule waits for it. Nothing to ask of its inputs.
                known = self.tensors.get(id(base))
                if known is not None and known() is base:
                    self.ops += 1
                    self.dtypes[call] = (self.ops, output.dtype)
                    return
            # Whether an input requires grad, the loop of any_grad written out: every op asks.
            grad = False
            tensors = self.tensors
            for value in args:
                if isinstance(value, torch.Tensor):
                    known = tensors.get(id(value))
                    if known.grad if known is not None and known() is value else self.requires_grad(value):
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
            self.flops[call] += formula(args, kwargs, output)
            if attention is not None:
                quadratic, tokens = attention(args, kwargs)
                self.attention_flops[call] += quadratic
                self.attention_tokens[call] = max(self.attention_tokens[call], tokens)
        if estimate is not None:
            if isinstance(estimate, int):  # FLOPs per output element, the common case
                if isinstance(output, torch.Tensor):
                    self.other_flops[call] += estimate * output.numel()
            else:
                self.other_flops[call] += estimate(args, kwargs, output)
        if grad and rule is not None:
            self.saving = self.saved_by_call[call]
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
        tensors = self.tensors
        for value in values:
            if isinstance(value, torch.Tensor):
                known = tensors.get(id(value))
                if known.grad if known is not None and known() is value else self.requires_grad(value):
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


def _storage_key(tensor: torch.Tensor) -> int:
    """The address of the tensor's StorageImpl, shared by its views; 0 where it has none."""
    try:
        return int(tensor.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError):
        return 0
