"""Check a call against the model's `forward` signature before tracing it.

A forgotten timestep, an extra input or an unknown keyword is the user's mistake, not the
model's: Python would raise a TypeError at the call, which a trace would report as a break
("fix the forward"). Binding the call first names the argument and what forward expects.
Only the signature is read; a TypeError raised deeper inside the forward is still a break.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from shapetrace.errors import UsageError
from shapetrace.tracing._torch_compat import has_own_forward_hooks, own_buffers, own_parameters
from shapetrace.tracing.walk import compiled_original, every_module

__all__ = ["CallShape", "check_call", "check_devices", "weights_off_meta"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class CallShape:
    """How a call passes its inputs: how many by position and which by name."""

    positional: int
    """The number of positional inputs, the timestep included."""
    keywords: tuple[str, ...] = ()
    """The names of the keyword inputs."""
    timestep: bool = False
    """The last positional input is the timestep the CLI's --timestep (or trace_sizes' timestep) added."""
    flags: bool = False
    """Word the hints as the CLI's options (--input, --timestep, --kw) rather than as arguments."""


def check_call(model: nn.Module, call: CallShape) -> None:
    """Fail when `model.forward` cannot take a call of this shape.

    A forward with *args or **kwargs takes any number of positional or keyword inputs;
    parameters with defaults may be left out. A model whose call may not be plain `forward`
    (its own forward hooks, as a pre-hook may supply arguments, or its own `__call__`) is not checked.

    Raises:
        UsageError: an input is missing, extra, unknown, or given twice; the message names it
            and what forward takes.
    """
    model = compiled_original(model)
    if has_own_forward_hooks(model) or type(model).__call__ is not nn.Module.__call__:
        return
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return  # a forward without a signature Python can read: let the call decide
    problem = _problem(list(signature.parameters.values()), call)
    if problem is not None:
        raise UsageError(problem)


def _problem(parameters: Sequence[inspect.Parameter], call: CallShape) -> str | None:
    """The one-line message for the first way the call does not fit, or None when it fits."""
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    keyword_only = [p for p in parameters if p.kind == inspect.Parameter.KEYWORD_ONLY]
    any_positional = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters)
    any_keyword = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters)
    forward = _described(parameters)
    if not any_positional and call.positional > len(positional):
        return _too_many(forward, positional, keyword_only, call)
    by_name = [p.name for p in positional if p.kind != inspect.Parameter.POSITIONAL_ONLY] + [
        p.name for p in keyword_only
    ]
    for name in call.keywords:
        if name not in by_name and not any_keyword:
            option = f"--kw {name}: " if call.flags else ""
            takes = f"expected one of {', '.join(by_name)}" if by_name else "it takes no keyword inputs"
            return f"{option}{forward} has no argument {name!r}: {takes}"
        if name in [p.name for p in positional[: call.positional]]:
            by_position = "--input or --timestep" if call.flags else "position"
            by_keyword = f"--kw {name}" if call.flags else "keyword"
            return f"{forward} got {name} twice: by {by_position} and by {by_keyword}"
    missing = [p for p in positional[call.positional :] if _required(p) and p.name not in call.keywords]
    if missing:
        return _missing_positional(forward, positional, missing, call)
    missing_keywords = [p.name for p in keyword_only if _required(p) and p.name not in call.keywords]
    if missing_keywords:
        name = missing_keywords[0]
        hint = f": add --kw {name}=SHAPE" if call.flags else ""
        return f"{forward} is missing keyword {name}{hint}"
    return None


def _too_many(
    forward: str, positional: Sequence[inspect.Parameter], keyword_only: Sequence[inspect.Parameter], call: CallShape
) -> str:
    got = f"{call.positional} positional input{'s' if call.positional != 1 else ''}"
    if not positional and keyword_only:
        names = " ".join(f"--kw {p.name}=SHAPE" for p in keyword_only[: call.positional])
        hint = f": give {names} instead" if call.flags else f": pass {', '.join(p.name for p in keyword_only)} by name"
        return f"{forward} takes keywords only but got {got}{hint}"
    takes = _count(positional)
    message = f"{forward} takes {takes} positional input{'s' if takes != '1' else ''} but got {call.positional}"
    if not call.flags:
        return message
    if call.timestep and call.positional - 1 <= len(positional):
        return f"{message}: drop --timestep"
    return f"{message}: drop the --input after the {_ordinal(len(positional))}"


def _missing_positional(
    forward: str, positional: Sequence[inspect.Parameter], missing: Sequence[inspect.Parameter], call: CallShape
) -> str:
    takes = _count(positional)
    counted = f"takes {takes} positional input{'s' if takes != '1' else ''} but got {call.positional}"
    name = missing[0].name
    if not call.flags:
        return f"{forward} is missing {name}: it {counted}"
    last_is_time = len(missing) == 1 and not call.timestep and missing[0] is positional[-1]
    options = f"--timestep, or --input for {name}" if last_is_time else f"--input for {name}"
    return f"{forward} {counted}: add {options}"


def _required(parameter: inspect.Parameter) -> bool:
    return parameter.default is inspect.Parameter.empty


def _count(positional: Sequence[inspect.Parameter]) -> str:
    """ "2", or "2 to 3" when some of them have defaults."""
    required = sum(1 for p in positional if _required(p))
    return str(required) if required == len(positional) else f"{required} to {len(positional)}"


def _ordinal(number: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(number, f"{number}th")


def _described(parameters: Sequence[inspect.Parameter]) -> str:
    """forward's signature without annotations: `forward(x, t, context=None)`, `forward(*, sample)`."""
    parts: list[str] = []
    starred = False
    for parameter in parameters:
        if parameter.kind == inspect.Parameter.VAR_POSITIONAL:
            parts.append(f"*{parameter.name}")
            starred = True
        elif parameter.kind == inspect.Parameter.VAR_KEYWORD:
            parts.append(f"**{parameter.name}")
        else:
            if parameter.kind == inspect.Parameter.KEYWORD_ONLY and not starred:
                parts.append("*")
                starred = True
            default = "" if _required(parameter) else f"={parameter.default!r:.20}"
            parts.append(f"{parameter.name}{default}")
    return f"forward({', '.join(parts)})"


def check_devices(model: nn.Module, tensors: Sequence[torch.Tensor]) -> None:
    """Raise UsageError when every weight sits on one device and every input on another.

    Torch would raise deep inside the first layer ("Expected all tensors to be on the same
    device"), which would read as the model breaking. Meta inputs to a model with real weights
    are no mistake: the caller traces a meta copy (`weights_off_meta`). Models with weights on
    several devices, or without weights, are left to run as they are.

    Raises:
        UsageError: the weights' device and the inputs' device differ.
    """
    weights = weight_devices(model)
    given = {tensor.device.type for tensor in tensors}
    if len(weights) != 1 or len(given) != 1 or weights == given:
        return
    (held,), (sent,) = weights, given
    hint = f"give it {held} inputs" if held == "meta" else f"model.to({sent!r}), or give it {held} inputs"
    raise UsageError(
        f"{type(model).__name__}'s weights are on {held} but its inputs on {sent}: expected both on one device ({hint})"
    )


def weights_off_meta(model: nn.Module) -> bool:
    """Whether some weight of the model holds real memory (a meta trace then runs on a meta copy)."""
    return bool(weight_devices(model) - {"meta"})


def weight_devices(model: nn.Module) -> set[str]:
    """The device types of the model's parameters and buffers, read off each module's registries
    (`parameters()` is a generator over `named_modules()`, several times slower for a few hundred modules)."""
    return {
        tensor.device.type
        for module in every_module(model)
        for registry in (own_parameters(module), own_buffers(module))
        for tensor in registry.values()
        if tensor is not None
    }
