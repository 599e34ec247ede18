"""Verify each fix by re-tracing the model on meta with the fix applied.

A fix is verified only when its re-trace has none of the breaks its cause explains, no
break the original did not have, and the skips paired in mirror order (a re-trace that
aligns by joining the wrong levels is not a fix). The fixes are applied to the meta model
the probes use (the user's own when it is on meta, else a copy whose weights are shapes)
through hooks, an attribute and a function mode that are always removed or restored: the
model is left exactly as found. The actions' words are `shapetrace.analysis.fixes`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]

from shapetrace.analysis.causes import with_causes
from shapetrace.analysis.diagnosis import explain
from shapetrace.analysis.placement import full_name
from shapetrace.records import BreakKind, Cause, Fix, Shape, Trace
from shapetrace.size_search import Prober, observed_or_interrupted
from shapetrace.tracing.closures import deep_copy
from shapetrace.tracing.merges import resize
from shapetrace.tracing.rewire import Rewire
from shapetrace.tracing.values import tensors_in

MAX_RETRACES = 24
"""Fixes beyond this many re-traces stay unverified: a model with that many causes needs fixing first."""


def verify_fixes(trace: Trace, prober: Prober, *, first_break: bool = False) -> Trace:
    """The trace with each fix marked verified or not, verified fixes first.

    Args:
        trace: an explained trace.
        prober: traces the meta model at other sizes; its model is copied, never changed.
        first_break: the trace stopped at its first break: a re-trace may show later breaks.
    """
    budget = [MAX_RETRACES]
    causes = []
    for cause in trace.causes:
        fixes = tuple(_verdict(trace, cause, fix, prober, budget, first_break) for fix in cause.fixes)
        ordered = tuple(sorted(fixes, key=lambda fix: not fix.verified))
        causes.append(dataclasses.replace(cause, fixes=ordered))
    return with_causes(trace, tuple(causes))


def _verdict(trace: Trace, cause: Cause, fix: Fix, prober: Prober, budget: list[int], first_break: bool) -> Fix:
    if not fix.action or budget[0] <= 0:
        return dataclasses.replace(fix, verified=False)
    try:
        steps = [_parse(step) for step in fix.action]
        sizes = [tuple(int(word) for word in words) for verb, words in steps if verb == "size"]
        others = [(verb, words) for verb, words in steps if verb != "size"]
        retraces = [prober.trace_at(size) for size in sizes]
        if others:
            budget[0] -= 1
            retraces.append(_retrace(prober, others, _requested(trace)))
    except (ValueError, LookupError, AttributeError, TypeError, RuntimeError):
        return dataclasses.replace(fix, verified=False)  # a fix this tool cannot apply: say so
    verified = bool(retraces) and all(_clean_for(trace, cause, explain(retrace), first_break) for retrace in retraces)
    return dataclasses.replace(fix, verified=verified)


def _parse(step: str) -> tuple[str, list[str]]:
    verb, _, arguments = step.partition(":")
    return verb, [word for word in arguments.split(",") if word] if arguments else []


def _requested(trace: Trace) -> Shape:
    image = next((shape for shape in trace.inputs if len(shape) >= 3), None)
    if image is None:
        raise ValueError("no spatial input")
    return tuple(image[2:])


def _clean_for(original: Trace, cause: Cause, retrace: Trace, first_break: bool) -> bool:
    """No break of `cause` left, none new, as many skips, all in mirror order (no ORDER break).

    After --first-break the original knows only its first break, so only that one must go.
    A forward the break stopped saw only the skips before it: the fix must keep those, and
    may find the rest.
    """
    mine = {_break_key(original, original.breaks[index]) for index in cause.breaks}
    others = {_break_key(original, brk) for index, brk in enumerate(original.breaks) if index not in cause.breaks}
    for brk in retrace.breaks:
        key = _break_key(retrace, brk)
        if key in mine or (brk.kind == BreakKind.ORDER and key not in others):
            return False
        if key not in others and not first_break:
            return False
    if first_break:
        return True
    stopped = not original.outputs
    return len(retrace.skips) >= len(original.skips) if stopped else len(retrace.skips) == len(original.skips)


def _break_key(trace: Trace, brk: Any) -> tuple[str, str]:
    return str(brk.kind), full_name(trace, brk.layer) if brk.layer >= 0 else ""


def _retrace(prober: Prober, steps: list[tuple[str, list[str]]], size: Shape) -> Trace:
    """Trace the prober's meta model at `size` with every step applied, and every step undone after."""
    args, kwargs = prober.arguments_at(size)
    with applied(prober.model, steps):
        return observed_or_interrupted(prober.model, args, kwargs)


@contextlib.contextmanager
def applied(model: nn.Module, steps: Sequence[tuple[str, list[str]]]) -> Iterator[None]:
    """The model behaves as if each step (but "size") were made, until the block ends.

    The steps are hooks on the model, an attribute set and restored, a wrapped forward and a
    function mode for the length of its forward: temporary, always undone, so the model is
    left as found. On a real device the same steps let a real forward run with the fix.

    Raises:
        LookupError, AttributeError, TypeError, ValueError: a step names no module of the
            model, or a module that cannot take it.
    """
    rewire = Rewire(model)
    with contextlib.ExitStack() as undo:
        for verb, words in steps:
            if verb != "size":
                undo.callback(_APPLY[verb](model, rewire, words))
        undo.enter_context(rewire.installed())
        yield


def parse_action(action: Sequence[str]) -> list[tuple[str, list[str]]]:
    """A fix's action as (verb, words) steps."""
    return [_parse(step) for step in action]


Undo = Callable[[], object]


def _in_channels(model: nn.Module, rewire: Rewire, words: list[str]) -> Undo:
    """The module behaves as one built for `got` input channels: it takes exactly that many."""
    name, got, expected = words[0], int(words[1]), int(words[2])

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(resize(arg, 1, expected) if _channels(arg) == got else arg for arg in args)

    return model.get_submodule(name).register_forward_pre_hook(hook).remove


def _channels(value: Any) -> int:
    return value.shape[1] if isinstance(value, torch.Tensor) and value.dim() >= 2 else -1


def _out_channels(model: nn.Module, rewire: Rewire, words: list[str]) -> Undo:
    """The module behaves as one built for `want` output channels.

    Its forward is wrapped rather than hooked: the stand-in is then made inside the call,
    so the tracer knows the module made it (a hook's output would come from nowhere).
    """
    name, want, have = words[0], int(words[1]), int(words[2])
    module = model.get_submodule(name)
    original = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        output = original(*args, **kwargs)
        return resize(output, 1, want) if _channels(output) == have else output

    own = module.__dict__.get("forward")  # a forward the user set on the instance stays theirs
    module.forward = forward

    def restore() -> None:
        if own is None:
            del module.forward
        else:
            module.forward = own

    return restore


def _output_padding(model: nn.Module, rewire: Rewire, words: list[str]) -> Undo:
    module = model.get_submodule(words[0])
    if not isinstance(module, nn.modules.conv._ConvTransposeNd):
        raise TypeError(f"{words[0]} is not a transposed convolution")
    before = module.output_padding
    module.output_padding = tuple(int(word) for word in words[1:])
    return lambda: setattr(module, "output_padding", before)


def _reroute(model: nn.Module, rewire: Rewire, words: list[str]) -> Undo:
    rewire.reroute(words[0], words[1], int(words[2]), *words[3:4])
    return lambda: None


def _resize(model: nn.Module, rewire: Rewire, words: list[str]) -> Undo:
    rewire.resize_to_skips = True
    return lambda: None


def _crop(model: nn.Module, rewire: Rewire, words: list[str]) -> Undo:
    rewire.crop_to_smallest = True
    return lambda: None


_APPLY: dict[str, Callable[[nn.Module, Rewire, list[str]], Undo]] = {
    "in_channels": _in_channels,
    "out_channels": _out_channels,
    "output_padding": _output_padding,
    "reroute": _reroute,
    "crop": _crop,
    "resize": _resize,
}


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters and buffers are empty meta tensors of the same shapes."""
    memo: dict[int, Any] = {}
    for _, tensor in [*model.named_parameters(remove_duplicate=True), *model.named_buffers(remove_duplicate=True)]:
        if id(tensor) in memo or isinstance(tensor, UninitializedTensorMixin):
            continue  # a lazy layer's parameter has no shape yet: copied as it is
        empty = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
    return deep_copy(model, memo)  # a forward that closes over modules must call the copy's, not the original's


def resized_arguments(
    args: Sequence[Any], kwargs: dict[str, Any]
) -> Callable[[Shape], tuple[list[Any], dict[str, Any]]]:
    """(args, kwargs) on meta at another spatial size: every tensor of the image input's size is resized."""
    image = next((t for t in tensors_in((args, kwargs)) if t.dim() >= 3), None)

    def at(size: Shape) -> tuple[list[Any], dict[str, Any]]:
        def convert(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                shape = tuple(value.shape)
                if image is not None and value.dim() == image.dim() and shape[2:] == tuple(image.shape[2:]):
                    shape = (*shape[:2], *size)
                return torch.empty(shape, dtype=value.dtype, device="meta")
            if isinstance(value, (list, tuple)):
                return type(value)(convert(item) for item in value)
            if isinstance(value, dict):
                return {key: convert(item) for key, item in value.items()}
            return value

        return [convert(arg) for arg in args], {key: convert(value) for key, value in kwargs.items()}

    return at
