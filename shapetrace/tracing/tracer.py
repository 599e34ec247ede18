"""Run a model once under observation and return its Trace.

Global forward hooks record the calls and a TorchFunctionMode the ops (`shapetrace.observer`
says what each one records). This is the only module that registers hooks, and it removes
every one of them, leaves the mode, and restores each module's training flag, whatever the
forward does.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.hooks import RemovableHandle

from shapetrace.errors import InternalError, UsageError
from shapetrace.records import BreakKind, CostOptions, Trace
from shapetrace.tracing._torch_compat import forget_global_forward_hook
from shapetrace.tracing.failures import failure_kind, internal_error, is_internal
from shapetrace.tracing.inputs import allocation_failed, out_of_memory
from shapetrace.tracing.observer import Observer, StopTracing
from shapetrace.tracing.recorder import MODEL_INPUT, Recorder
from shapetrace.tracing.values import tensors_in
from shapetrace.tracing.walk import compiled_original, every_module, module_names

__all__ = ["META_VALUES", "collector_paused", "observe", "observed"]

META_VALUES = BreakKind.META
"""Break kind: the forward read tensor values (.item(), .tolist(), `if tensor:`), which meta lacks."""


def observe(
    model: nn.Module,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    first_break: bool = False,
    config: Sequence[tuple[str, str]] = (),
    cost: CostOptions | None = None,
) -> Trace:
    """Run the forward once under observation and return its records, not yet explained.

    `shapetrace.trace` adds the analysis (messages, causes, fixes); this is the tracing alone.

    Args:
        model: any nn.Module; it is left exactly as it was found.
        args, kwargs: the forward's arguments.
        first_break: stop at the first break instead of reporting every independent one.
        config: key/value pairs kept in the Trace for titles.
        cost: also count FLOPs and bytes (`shapetrace.tracing.cost`); None leaves them out.

    Returns:
        The Trace. A forward that raises gives a Trace whose last break names the layer.

    Raises:
        TypeError: `model` is not an nn.Module.
        UsageError: the device ran out of memory inside the forward (not the model's mistake).
        InternalError: shapetrace's own code failed (a bug, never the model's); the model is
            left as it was found all the same.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"trace needs an nn.Module, got {type(model).__name__}")
    try:
        # The model itself, never its torch.compile wrapper.
        return _observe(compiled_original(model), args, dict(kwargs or {}), first_break, tuple(config), cost)
    except (InternalError, UsageError):
        raise
    except Exception as error:
        raise internal_error(error) from error


def _observe(
    model: nn.Module,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    first_break: bool,
    config: tuple[tuple[str, str], ...],
    cost: CostOptions | None,
) -> Trace:
    names = module_names(model)
    recorder = Recorder(names)
    inputs = tensors_in(args) + tensors_in(kwargs)
    for position, tensor in enumerate(inputs):
        recorder.set_tag(tensor, MODEL_INPUT, input_index=position)
    recorder.image_rank = image_rank(inputs)
    meta = any(t.device.type == "meta" for t in inputs)
    with collector_paused(meta):
        if cost is not None:
            from shapetrace.tracing.cost import observe_cost

            return observe_cost(model, args, kwargs, recorder, inputs, first_break, config, cost, meta=meta)
        observer = Observer(recorder, first_break, meta=meta)
        output = _observed_forward(model, args, kwargs, observer)
        from shapetrace.tracing.freeze import freeze

        return freeze(recorder, model, inputs, tensors_in(output), device=_device_of(inputs), config=config)


@contextlib.contextmanager
def collector_paused(meta: bool) -> Iterator[None]:
    """Python's cyclic garbage collector off while a meta forward is traced, on again after.

    A trace makes thousands of short-lived objects (tags, records, meta tensors), so the
    collector runs every few hundred ops, and now and then a full collection walks every
    object in the process: for an SD-sized model 150 ms, more than the whole trace. Nothing a
    meta trace makes is worth collecting early (meta tensors hold no memory). A forward on a
    real device keeps the collector, since a model's reference cycles may hold real tensors.
    """
    if not meta or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextlib.contextmanager
def observed(
    model: nn.Module,
    before: Callable[..., Any] | None = None,
    after: Callable[..., Any] | None = None,
    *,
    with_kwargs: bool = False,
) -> Iterator[None]:
    """Global forward hooks in place and every module in evaluation mode, both undone on exit.

    Two global hooks (the callbacks filter for the model's own modules) instead of two
    handles per module: registering and removing hundreds of handles costs more than a GPU
    forward's kernels. Evaluation mode keeps BatchNorm's running statistics untouched.
    """
    training = [module for module in every_module(model) if module.training]
    handles: list[RemovableHandle] = []
    try:
        if before is not None:
            handles.append(register_module_forward_pre_hook(before))
        if after is not None:
            handles.append(register_module_forward_hook(after, with_kwargs=with_kwargs, always_call=True))
        for module in training:
            module.training = False
        with _eager():
            yield
    finally:
        for handle in handles:
            handle.remove()
            forget_global_forward_hook(handle.id)
        for module in training:
            module.training = True


@contextlib.contextmanager
def _eager() -> Iterator[None]:
    """torch.compile'd submodules run eagerly: compiling them would cost seconds and hide their calls.

    Only once torch.compile has been used (it imports torch._dynamo, and with it sympy, which
    this would import otherwise). torch warns that a compiled module called under global
    hooks may miss them; run eagerly, it does not.
    """
    if "torch._dynamo" not in sys.modules or not hasattr(torch.compiler, "set_stance"):  # torch 2.6 and later
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using `torch.compile\(module\)` when there are global hooks")
        with torch.compiler.set_stance("force_eager"):
            yield


def _observed_forward(model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any], observer: Observer) -> Any:
    """The forward with hooks and the mode in place; always leaves the model as it was.

    The `with` has undone everything (hooks, mode, training flags) before any handler runs.

    Raises:
        InternalError: shapetrace's own code raised inside the forward (`failures.is_internal`),
            or in a post-hook while the forward failed (`Observer.bug`).
    """
    output = None
    try:
        with observed(model, observer.before, observer.after, with_kwargs=True), torch.no_grad(), observer:
            output = model(*args, **kwargs)
    except StopTracing:
        observer.recorder.unwind()
    except KeyboardInterrupt as interrupt:
        observer.fail(KeyboardInterrupt("interrupted"), failure_kind(interrupt, None))
    except Exception as error:  # noqa: BLE001 - the forward's failures become breaks; ours, an InternalError
        if observer.bug is None and is_internal(error):
            observer.bug = error
        elif observer.bug is None and allocation_failed(error):
            # The device's memory, not the model, is at fault: a usage error naming where it ran out.
            raise _out_of_memory(observer, _device_of(tensors_in(args) + tensors_in(kwargs))) from None
        elif observer.bug is None:
            observer.fail(error, failure_kind(error, observer.failure))
    if observer.bug is not None:
        raise internal_error(observer.bug) from observer.bug
    return output


def _out_of_memory(observer: Observer, device: str) -> UsageError:
    recorder = observer.recorder
    # The innermost call that raised, as Observer.fail finds it: post-hooks mark failed calls.
    leaf = max([recorder.unwind(), *(call.index for call in recorder.calls if call.status == "failed")])
    if leaf < 0:
        return out_of_memory("the forward", (), device)
    call = recorder.calls[leaf]
    name = recorder.name_of(call)  # "" for the model itself
    where = f"{name} ({type(call.module).__name__})" if name else f"{type(call.module).__name__}'s own forward"
    return out_of_memory(where, call.inputs, device)


def _device_of(tensors: list[torch.Tensor]) -> str:
    return tensors[0].device.type if tensors else "cpu"


def image_rank(tensors: Sequence[torch.Tensor]) -> int | None:
    """Dims of the first tensor with spatial dims (three or more), whose layout says what dim 1 counts."""
    return next((tensor.dim() for tensor in tensors if tensor.dim() >= 3), None)
