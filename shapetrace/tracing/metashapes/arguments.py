"""A call's arguments, read for the shape functions: bound by name, and the small checks they share.

Every op of a traced forward binds its arguments here, so the common call takes a fast path
(`bind`, with one cache of plain signatures for the whole package). The dtype sets and checks
say which arguments a shape function claims to reproduce exactly; the rest is left to torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

import torch

ShapeFunction = Callable[[Sequence[Any], dict[str, Any]], Any]
Shape = tuple[int, ...]
ShapeTable = dict[Callable[..., Any], ShapeFunction]
"""Shape functions keyed by the objects a TorchFunctionMode receives, as META_SHAPES holds them."""

FLOATING = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
INTEGRAL = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})


def bind(signature: inspect.Signature, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The call's arguments by name, defaults filled; None where torch would reject the call."""
    fast = _bind_plainly(signature, args, kwargs)
    if fast is not None:
        return fast
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return bound.arguments


_PLAIN_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_PLAIN_SIGNATURES: dict[int, tuple[inspect.Signature, tuple[inspect.Parameter, ...], frozenset[str], int] | None] = {}
"""By id(signature), holding the signature itself so the id cannot be reused (Signature hashes slowly)."""


def _bind_plainly(signature: inspect.Signature, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Signature.bind for the common call, in a fraction of its time; None to let bind decide.

    A sweep binds arguments for every op of every size, and inspect's general binder was its
    largest single cost. Only signatures without *args, **kwargs or positional-only
    parameters take this path; any irregular call falls back to Signature.bind.
    """
    key = id(signature)
    if key not in _PLAIN_SIGNATURES or (_PLAIN_SIGNATURES[key] or (signature,))[0] is not signature:
        parameters = tuple(signature.parameters.values())
        plain = all(parameter.kind in _PLAIN_KINDS for parameter in parameters)
        positional = sum(parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for parameter in parameters)
        names = frozenset(parameter.name for parameter in parameters)
        _PLAIN_SIGNATURES[key] = (signature, parameters, names, positional) if plain else None
    known = _PLAIN_SIGNATURES[key]
    if known is None:
        return None
    _, parameters, names, positional = known
    if len(args) > positional or not names.issuperset(kwargs):
        return None
    values: dict[str, Any] = {}
    for index, parameter in enumerate(parameters):
        if index < len(args):
            if parameter.name in kwargs:
                return None  # given twice: bind raises the error
            values[parameter.name] = args[index]
        elif parameter.name in kwargs:
            values[parameter.name] = kwargs[parameter.name]
        elif parameter.default is not inspect.Parameter.empty:
            values[parameter.name] = parameter.default
        else:
            return None  # missing: bind raises the error
    return values


def signature_of(function: Callable[..., Any]) -> inspect.Signature:
    """The signature of an F.* Python function, or of a lambda mirroring a builtin's."""
    return inspect.signature(function)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def floating(*tensors: Any) -> bool:
    """Whether every argument is a tensor, all of one floating dtype."""
    if not all(isinstance(tensor, torch.Tensor) for tensor in tensors):
        return False
    dtypes = {tensor.dtype for tensor in tensors}
    return len(dtypes) == 1 and dtypes <= FLOATING


def is_tensor_operand(value: Any) -> TypeGuard[torch.Tensor]:
    """Whether `value` is a tensor of a real dtype this package knows: floating, integral or bool."""
    return isinstance(value, torch.Tensor) and value.dtype in FLOATING | INTEGRAL


def same_dtype_or_none(reference: torch.Tensor, *tensors: Any) -> bool:
    return all(t is None or (isinstance(t, torch.Tensor) and t.dtype == reference.dtype) for t in tensors)


def expand(value: Any, count: int) -> Shape | None:
    """An int, or a sequence of one or `count` ints, as `count` ints (torch's expand_param)."""
    if is_int(value):
        return (value,) * count
    if isinstance(value, (list, tuple)) and len(value) in (1, count) and all(is_int(item) for item in value):
        return tuple(value) * (count // len(value))
    return None


def meta(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device="meta")


def joined(shape: Sequence[int], separator: str = " x ") -> str:
    return separator.join(str(size) for size in shape)
