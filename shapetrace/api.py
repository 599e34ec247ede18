"""The public entry points: trace a model on tensors, or on tensors made from sizes.

Each is the tracing (`shapetrace.tracing`) followed by the analysis (`shapetrace.analysis`):
the tracer records what happened, the diagnosis says what it means.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shapetrace.analysis.cost import with_levels
from shapetrace.analysis.diagnosis import explain
from shapetrace.records import Break, BreakKind, CostOptions, SizeRule, Trace
from shapetrace.size_search import Prober, ProbesUnavailable, size_rule_of, with_size_rule
from shapetrace.tracing.binding import CallShape, check_call, check_devices, weights_off_meta
from shapetrace.tracing.inputs import SizedInputs, cast_copy, floating_dtype, resolve_device
from shapetrace.tracing.tracer import observe
from shapetrace.tracing.values import tensors_in
from shapetrace.verify import meta_copy, resized_arguments, verify_fixes

__all__ = ["SizedInputs", "run_trace", "size_rule", "trace", "trace_inputs", "trace_sizes"]


def trace(model: nn.Module, *args: Any, **kwargs: Any) -> Trace:
    """Run `model(*args, **kwargs)` once and record every layer's shapes.

    A pure pass-through: every argument goes to the model's forward, exactly as in a call.
    Runs under no_grad; tensors on the meta device give shapes without compute.

    Returns:
        The frozen Trace: one record per module call, the skip pairs, and every break explained.

    Raises:
        UsageError: forward's signature cannot take these arguments (one missing, extra or
            unknown), where Python would raise a TypeError at the call; a TypeError from inside
            the forward is a break in the Trace.
    """
    return run_trace(model, args, kwargs)


def run_trace(
    model: nn.Module,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    first_break: bool = False,
    config: Sequence[tuple[str, str]] = (),
    verify: bool = True,
    cost: CostOptions | None = None,
) -> Trace:
    """`trace` with options.

    Args:
        model: any nn.Module; it is left exactly as it was found.
        args, kwargs: the forward's arguments.
        first_break: stop at the first break instead of reporting every independent one.
        config: key/value pairs kept in the Trace for titles.
        verify: find the size rule and verify each fix by re-tracing on meta (a few more
            traces); False explains the breaks only, every fix labelled unverified.
        cost: count FLOPs and bytes too (`Trace.cost`); a budget is searched when the
            arguments are on meta.

    Returns:
        The explained Trace. A forward that raises gives a Trace whose last break names the layer.

    Raises:
        UsageError: forward's signature cannot take these arguments (one missing, extra, unknown).
    """
    if isinstance(model, nn.Module):
        check_call(model, CallShape(len(args), tuple(kwargs or {})))
        model = _on_devices_of(model, tensors_in(list(args)) + tensors_in(kwargs or {}))
    trace = observe(model, args, kwargs, first_break=first_break, config=config, cost=cost)
    if cost is not None and cost.budget is not None and trace.device == "meta":
        from shapetrace.tracing.cost.budget import with_budget

        trace = with_budget(trace, model, args, kwargs or {})
    if not verify:
        return with_levels(explain(trace))
    prober = Prober(lambda: meta_copy(model), resized_arguments(args, kwargs or {}))
    return with_levels(diagnose(trace, prober, first_break=first_break))


def size_rule(model: nn.Module, *args: Any, **kwargs: Any) -> SizeRule | None:
    """The input sizes `model` accepts, per spatial axis, found from a call like `model(*args, **kwargs)`.

    Traces a meta copy of the model (the model itself is not run), so it costs a few meta traces
    whatever device the arguments are on. The first argument of three or more dims is the image
    (1-D, 2-D or 3-D); every tensor of its spatial size is resized with it.

    Returns:
        The rule (`rule.accepts(size)`, `rule.axes`, `rule.nearest`), or None when no argument has
        spatial axes, no size within reach runs, or the forward reads tensor values (which meta
        tensors lack, so its layers never run there).

    Raises:
        UsageError: forward's signature cannot take these arguments.
        KeyboardInterrupt: Ctrl-C stopped a probe.
    """
    check_call(model, CallShape(len(args), tuple(kwargs)))
    prober = Prober(lambda: meta_copy(model), resized_arguments(args, kwargs))
    image = next((arg for arg in (*args, *kwargs.values()) if isinstance(arg, torch.Tensor) and arg.dim() >= 3), None)
    if image is None:
        return None
    try:
        return size_rule_of(prober.trace_at(tuple(image.shape[2:])), prober)
    except ProbesUnavailable:
        return None


def trace_sizes(
    model: nn.Module,
    input_size: Sequence[Sequence[int]],
    *,
    timestep: bool | int = False,
    kwargs: dict[str, Sequence[int]] | None = None,
    device: str = "meta",
    dtypes: Sequence[torch.dtype] | None = None,
    cost: CostOptions | None = None,
) -> Trace:
    """Make tensors of the given sizes on `device` and trace `model` on them.

    Args:
        model: the model; it must already live on `device` (build it under
            `with torch.device("meta"):` to trace without weights).
        input_size: one shape per positional tensor, e.g. `[(2, 3, 64, 64)]`.
        timestep: True adds integer timesteps t of shape [batch] after them; an int sets t's value.
        kwargs: keyword tensors by shape, e.g. `{"encoder_hidden_states": (1, 77, 768)}`, of the
            model's dtype.
        device: "meta" (default), "cpu" or "cuda".
        dtypes: one dtype per positional tensor (default float32). The first floating one is
            the dtype the model runs in: a copy of the model is cast to it when its weights differ.
        cost: count FLOPs and bytes too (`Trace.cost`), and search a budget on meta.

    Returns:
        The Trace, with the size rule attached when a size broke.

    Raises:
        UsageError: forward's signature cannot take these inputs (one missing, extra, unknown),
            or the device has not the memory for them.
    """
    model_dtype = floating_dtype(dtypes or ())  # only a dtype asked for: no dtypes leave the model as it is
    model = cast_copy(model, model_dtype)
    inputs = SizedInputs(
        positional=[
            (tuple(shape), dtype)
            for shape, dtype in zip(input_size, dtypes or [torch.float32] * len(input_size), strict=True)
        ],
        timestep=timestep is not False,
        timestep_value=None if isinstance(timestep, bool) else timestep,
        keywords={name: (tuple(shape), model_dtype or torch.float32) for name, shape in (kwargs or {}).items()},
    )
    if device == "meta" and weights_off_meta(model):
        model = meta_copy(model)  # meta tensors, and probes at other sizes, need meta weights: a copy
    # Probes at other sizes and fixes are traced on meta whatever the device, as trace() does.
    probe_model = model if device == "meta" else meta_copy(model)
    return trace_inputs(model, inputs, resolve_device(device), probe_model=probe_model, cost=cost)


def trace_inputs(
    model: nn.Module,
    inputs: SizedInputs,
    device: torch.device,
    *,
    probe_model: nn.Module | None = None,
    first_break: bool = False,
    config: Sequence[tuple[str, str]] = (),
    cost: CostOptions | None = None,
) -> Trace:
    """Trace on tensors made from `inputs`; probe sizes (and a budget) on `probe_model`, a meta copy, if given.

    Raises:
        UsageError: forward's signature cannot take these inputs, or the device has not the memory for them.
    """
    positional = len(inputs.positional) + int(inputs.timestep)
    check_call(model, CallShape(positional, tuple(inputs.keywords), timestep=inputs.timestep))
    args, kwargs = inputs.make(device)
    model = _on_devices_of(model, tensors_in(args) + tensors_in(kwargs))
    trace = observe(model, args, kwargs, first_break=first_break, config=config, cost=cost)
    if inputs.timestep and _wants_float_timestep(trace):
        inputs = SizedInputs(inputs.positional, True, inputs.timestep_value, inputs.keywords, torch.float32)
        args, kwargs = inputs.make(device)
        trace = observe(model, args, kwargs, first_break=first_break, config=config, cost=cost)
    if probe_model is None:
        return with_levels(explain(trace))
    meta = torch.device("meta")
    if cost is not None and cost.budget is not None:
        from shapetrace.tracing.cost.budget import with_budget

        trace = with_budget(trace, probe_model, *inputs.make(meta))
    prober = Prober(lambda: probe_model, lambda size: inputs.make(meta, size))
    return with_levels(diagnose(trace, prober, first_break=first_break))


def diagnose(trace: Trace, prober: Prober | None, *, first_break: bool = False) -> Trace:
    """The analysis of a fresh trace: its size rule, its causes, and each fix verified by a re-trace.

    Args:
        trace: what `observe` recorded.
        prober: re-traces a meta model at other sizes and with fixes applied; None explains only.
        first_break: the trace stopped at its first break, so later breaks are unknown to it.
    """
    explained = explain(trace)
    if prober is None or not (explained.causes or explained.warnings):
        return explained  # nothing to probe or verify: no prober model is built
    try:
        explained = explain(with_size_rule(trace, prober))
        return verify_fixes(explained, prober, first_break=first_break) if explained.causes else explained
    except ProbesUnavailable:
        return explain(trace)  # every fix stays labelled unverified
    except KeyboardInterrupt:
        # Ctrl-C while probing sizes or checking fixes: the trace itself is whole; say it stopped.
        stopped = Break(0, 0, BreakKind.INTERRUPTED, "", "KeyboardInterrupt") if trace.layers else None
        breaks = trace.breaks + ((stopped,) if stopped is not None else ())
        return explain(dataclasses.replace(trace, breaks=breaks))


def _on_devices_of(model: nn.Module, tensors: list[torch.Tensor]) -> nn.Module:
    """The model to run on `tensors`: a meta copy for meta inputs to real weights, else the model itself.

    Raises:
        UsageError: every weight on one device and every input on another (meta inputs aside).
    """
    if tensors and all(tensor.device.type == "meta" for tensor in tensors) and weights_off_meta(model):
        return meta_copy(model)  # shapes only, as asked; the user's weights are neither moved nor touched
    check_devices(model, tensors)
    return model


def _wants_float_timestep(trace: Trace) -> bool:
    """True when the forward failed on an integer timestep (a model that wants float t)."""
    return any(brk.kind == "error" and ("Long" in brk.message or "dtype" in brk.message) for brk in trace.breaks)
