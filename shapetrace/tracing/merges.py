"""Merges and channel demands: what both tracers (the Observer and the sweep's light pass) check.

- Merge detection: which functions concatenate (`torch.cat`, `stack`) or add, a call's
  tensors and normalised dim, which inputs disagree, and which input is the main one.
- Channel expectations: on the meta device a Conv given the wrong channel count raises only
  "Invalid channel dimensions" and a ConvTranspose raises nothing at all, so the expected
  count is read from the weights and the received one from the input, before the function runs.
- Stand-ins: after a break, each input cropped or padded to the shape the merge or the
  layer expects, so the forward goes on and later breaks are found too.

The two tracers differ only in what they record; the decisions are made here, once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from shapetrace.tracing.metashapes import call_torch


def original(function: Callable[..., Any]) -> Callable[..., Any]:
    """The function itself, not a `functools.wraps` wrapper another tool (torchlens) put in its place.

    A TorchFunctionMode receives torch's own builtins even then, but Python-level functionals
    (`F.group_norm`) as whatever their module's global name holds now.
    """
    unwrapped: Callable[..., Any] = inspect.unwrap(function)
    return unwrapped


CONCATENATIONS: dict[Callable[..., Any], str] = {
    original(torch.cat): "cat",
    original(torch.concat): "cat",
    original(torch.concatenate): "cat",
    original(torch.stack): "stack",
}
"""The functions that join tensors along a dimension, as a TorchFunctionMode receives them, and their op."""

ADDITIONS = frozenset(
    original(function)
    for function in (torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__iadd__)
)
"""The additions that may join a skip to the main path (`x + skip`, `x += skip`, `torch.add`)."""


@dataclass(frozen=True, slots=True)
class Concatenation:
    """One torch.cat or torch.stack call, read from its arguments."""

    op: str
    """"cat" or "stack"."""
    tensors: tuple[torch.Tensor, ...]
    dim: int
    """The joined dimension, non-negative (of the output, for a stack)."""

    @property
    def keep(self) -> int | None:
        """The dimension the inputs may disagree in: the cat's dim; none for a stack."""
        return self.dim if self.op == "cat" else None


def concatenation(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Concatenation | None:
    """The call's tensors and normalised dim; None where torch alone should run it.

    None for anything but two or more tensors of one rank (at least 1) and an int dim:
    torch raises its own errors for those, and they are no merge of a skip.
    """
    op = CONCATENATIONS.get(func)
    if op is None:
        return None
    tensors = tuple(args[0] if args else kwargs.get("tensors", ()))
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if len(tensors) < 2 or not all(isinstance(t, torch.Tensor) for t in tensors) or not isinstance(dim, int):
        return None
    ndim = tensors[0].dim()
    if ndim == 0 or any(t.dim() != ndim for t in tensors):
        return None
    return Concatenation(op, tensors, dim % (ndim + 1 if op == "stack" else ndim))


def main_input(producers: Sequence[int]) -> int:
    """Which input of a merge is the main one: the one from the latest call (the first, on a tie).

    `producers` holds, per input, the number of the call that produced it, numbered in the
    order calls began; the model's own inputs count as -1.
    """
    return producers.index(max(producers))


def ancestry(source: int, main: int, inputs_of: Callable[[int], Sequence[int]]) -> set[int] | None:
    """Calls on paths from `source` to `main` (exclusive), or None if `source` does not feed it.

    `inputs_of(call)` gives the producers of that call's inputs: the call-level data flow.
    """
    if source < 0 or source >= main:
        return None
    seen: set[int] = set()
    frontier = [main]
    found = False
    while frontier:
        node = frontier.pop()
        for producer in inputs_of(node):
            if producer == source:
                found = True
            elif producer > source and producer not in seen:
                seen.add(producer)
                frontier.append(producer)
    return seen if found else None


def merge_roles(producers: Sequence[int], inputs_of: Callable[[int], Sequence[int]]) -> tuple[tuple[str, ...], int]:
    """Each merge input's role, and which one is the main input.

    "main": the input from the latest call (`main_input`); "skip": an input whose producer
    feeds the main input's (saved earlier on its path); "input": any other.
    """
    main = main_input(producers)
    roles = tuple(
        "main" if i == main else "skip" if ancestry(producer, producers[main], inputs_of) is not None else "input"
        for i, producer in enumerate(producers)
    )
    return roles, main


def mismatched(tensors: Sequence[torch.Tensor], main: int, keep: int | None) -> list[int]:
    """The inputs whose shape differs from the main input's outside dimension `keep`."""
    reference = tensors[main].shape
    return [i for i, t in enumerate(tensors) if differs(t.shape, reference, keep)]


def differs(shape: Sequence[int], reference: Sequence[int], keep: int | None) -> bool:
    return any(size != reference[d] for d, size in enumerate(shape) if d != keep)


def stand_ins(tensors: Sequence[torch.Tensor], shape: Sequence[int], keep: int | None) -> list[torch.Tensor]:
    """Each input cropped or padded to `shape` outside `keep`: what the merge would have joined."""
    return [resize_like(t, shape, keep) for t in tensors]


def concatenate(func: Callable[..., Any], op: str, tensors: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """The merge's output: computed here on meta, by torch elsewhere."""
    if all(t.device.type == "meta" for t in tensors):
        return meta_concatenate(tensors, dim, stack=op == "stack")
    output: torch.Tensor = call_torch(func, (list(tensors), dim), {})
    return output


def addition_operands(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The two tensors of an addition that could join a skip to the main path, or None.

    Both tensors of one rank, at least 3 (maps or token sequences), and not a broadcast:
    a bias or an embedding broadcast over the map (`h + t[:, :, None, None]`) is no skip,
    decided before tracing the data flow, which walks every call in between.
    """
    left = args[0] if args else kwargs.get("input")
    right = args[1] if len(args) > 1 else kwargs.get("other")
    if not (isinstance(left, torch.Tensor) and isinstance(right, torch.Tensor)):
        return None
    if left.dim() < 3 or left.dim() != right.dim():
        return None
    if left.shape != right.shape and broadcastable(left.shape, right.shape):
        return None
    return left, right


def broadcastable(left: Sequence[int], right: Sequence[int]) -> bool:
    return all(a == b or 1 in (a, b) for a, b in zip(reversed(left), reversed(right), strict=False))


@dataclass(frozen=True, slots=True)
class Expectation:
    """A function's demand on one input dimension, read from its weights."""

    argument: int
    """Position of the checked tensor in the call's arguments."""
    dim: int
    """The checked dimension of that tensor (non-negative)."""
    expected: int
    got: int


def _argument(args: Sequence[Any], kwargs: dict[str, Any], position: int, name: str) -> Any:
    if len(args) > position:
        return args[position]
    return kwargs.get(name)


def _convolution(transposed: bool, spatial: int) -> Callable[..., Expectation | None]:
    def expectation(args: Sequence[Any], kwargs: dict[str, Any]) -> Expectation | None:
        x, weight = _argument(args, kwargs, 0, "input"), _argument(args, kwargs, 1, "weight")
        if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
            return None
        groups = _argument(args, kwargs, 6, "groups") or 1  # 7th in conv and transposed conv
        if not isinstance(groups, int):
            return None
        # Weights are (out, in / groups, *k) for conv, (in, out / groups, *k) for transposed.
        expected = weight.shape[0] if transposed else weight.shape[1] * groups
        dim = 1 if x.dim() == spatial + 2 else 0
        if x.dim() <= dim:
            return None
        return Expectation(0, dim, expected, x.shape[dim])

    return expectation


def _linear(args: Sequence[Any], kwargs: dict[str, Any]) -> Expectation | None:
    x, weight = _argument(args, kwargs, 0, "input"), _argument(args, kwargs, 1, "weight")
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor) or x.dim() == 0:
        return None
    return Expectation(0, x.dim() - 1, weight.shape[-1], x.shape[-1])


def _channel_norm(*per_channel: tuple[int, str]) -> Callable[..., Expectation | None]:
    """A norm whose per-channel tensors (position, name), the first one given, fix C."""

    def expectation(args: Sequence[Any], kwargs: dict[str, Any]) -> Expectation | None:
        x = _argument(args, kwargs, 0, "input")
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            return None
        for position, name in per_channel:
            tensor = _argument(args, kwargs, position, name)
            if isinstance(tensor, torch.Tensor):
                return Expectation(0, 1, tensor.shape[0], x.shape[1])
        return None

    return expectation


def _layer_norm(args: Sequence[Any], kwargs: dict[str, Any]) -> Expectation | None:
    x = _argument(args, kwargs, 0, "input")
    normalized = _argument(args, kwargs, 1, "normalized_shape")
    if not isinstance(x, torch.Tensor) or not normalized or x.dim() == 0:
        return None
    # The common case, a single normalized dimension; others fall through to torch's error.
    if len(normalized) != 1:
        return None
    return Expectation(0, x.dim() - 1, int(normalized[0]), x.shape[-1])


EXPECTATIONS: dict[Callable[..., Any], Callable[..., Expectation | None]] = {
    original(torch.conv1d): _convolution(transposed=False, spatial=1),
    original(torch.conv2d): _convolution(transposed=False, spatial=2),
    original(torch.conv3d): _convolution(transposed=False, spatial=3),
    original(torch.conv_transpose1d): _convolution(transposed=True, spatial=1),
    original(torch.conv_transpose2d): _convolution(transposed=True, spatial=2),
    original(torch.conv_transpose3d): _convolution(transposed=True, spatial=3),
    original(F.linear): _linear,
    original(F.group_norm): _channel_norm((2, "weight")),
    # Without running statistics (track_running_stats=False), the affine weight fixes C.
    original(F.batch_norm): _channel_norm((1, "running_mean"), (3, "weight")),
    original(F.instance_norm): _channel_norm((3, "weight")),
    original(F.layer_norm): _layer_norm,
}
"""The functions whose weights fix a channel count, and how to read it."""


def channel_mismatch(func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Expectation | None:
    """The channel demand this call's input fails, or None (no demand, or one that is met)."""
    expectation = EXPECTATIONS.get(func)
    if expectation is None:
        return None
    found = expectation(args, kwargs)
    return found if found is not None and found.expected != found.got else None


def resize(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """A stand-in for `tensor` with `size` entries along `dim`: cropped, or zero-padded."""
    current = tensor.shape[dim]
    if current == size:
        return tensor
    if tensor.device.type == "meta":
        shape = list(tensor.shape)
        shape[dim] = size
        return torch.empty(shape, dtype=tensor.dtype, device="meta")
    if current > size:
        return tensor.narrow(dim, 0, size)
    padding_shape = list(tensor.shape)
    padding_shape[dim] = size - current
    padding = torch.zeros(padding_shape, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, padding], dim=dim)


def resize_like(tensor: torch.Tensor, shape: Sequence[int], keep_dim: int | None) -> torch.Tensor:
    """Crop or pad every dimension of `tensor` except `keep_dim` to match `shape`."""
    for dim, size in enumerate(shape):
        if dim != keep_dim and dim < tensor.dim():
            tensor = resize(tensor, dim, size)
    return tensor


def meta_concatenate(tensors: Sequence[torch.Tensor], dim: int, stack: bool) -> torch.Tensor:
    """torch.cat / torch.stack of aligned meta tensors, without torch's Python meta kernel.

    The first Python-implemented meta kernel in a process imports sympy (about 1.3 s here);
    the output of a concatenation is one shape computation away.
    """
    first = tensors[0]
    shape = list(first.shape)
    if stack:
        shape.insert(dim, len(tensors))
    else:
        shape[dim] = sum(t.shape[dim] for t in tensors)
    dtype = first.dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return torch.empty(shape, dtype=dtype, device="meta")
