"""Build the reference UNet and its inputs, and trace it: what `shapetrace unet` runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from shapetrace.analysis.cost import with_levels
from shapetrace.analysis.placement import full_name
from shapetrace.api import diagnose
from shapetrace.models.unet import UNet
from shapetrace.records import BreakKind, CostOptions, SweepResult, Trace
from shapetrace.size_search import Prober
from shapetrace.sizes import spatial_extents
from shapetrace.sweep import sweep_model
from shapetrace.tracing.inputs import SizedInputs, activation, resolve_device, timesteps
from shapetrace.tracing.tracer import observe


def reference_config(chs: tuple[int, ...], n_channels: int, variant: str) -> list[tuple[str, str]]:
    config = [("chs", ",".join(str(c) for c in chs)), ("n_channels", str(n_channels))]
    if variant != "fixed":
        config.append(("variant", variant))
    return config


def trace_reference(
    *,
    size: tuple[int, int],
    chs: tuple[int, ...],
    n_channels: int = 64,
    img_channels: int = 3,
    batch: int = 2,
    variant: str = "fixed",
    dtype: str = "float32",
    device: str = "meta",
    first_break: bool = False,
    cost: CostOptions | None = None,
) -> Trace:
    """Trace UNet(img_channels, n_channels, chs, variant) on a [batch, img_channels, *size] input.

    `dtype` names the torch dtype of the weights and the image. `cost` counts FLOPs and bytes
    too, and searches its budget on a meta copy.
    """
    target = resolve_device(device)
    torch_dtype = getattr(torch, dtype)
    with torch.device(target):
        model = UNet(img_channels, n_channels, chs, variant).to(torch_dtype)  # type: ignore[arg-type]
    x = activation((batch, img_channels, *size), target, torch_dtype)
    t = timesteps(batch, target)
    config = reference_config(chs, n_channels, variant)
    trace = observe(model, (x, t), first_break=first_break, config=config, cost=cost)
    with torch.device("meta"):
        probe_model = UNet(img_channels, n_channels, chs, variant)  # type: ignore[arg-type]

    def arguments_at(size: tuple[int, ...]) -> tuple[tuple[torch.Tensor, ...], dict[str, object]]:
        meta = torch.device("meta")
        return (activation((batch, img_channels, *size), meta), timesteps(batch, meta)), {}

    if cost is not None and cost.budget is not None:
        from shapetrace.tracing.cost.budget import with_budget

        trace = with_budget(trace, probe_model, arguments_at(size)[0], {})
    prober = Prober(lambda: probe_model, arguments_at)
    return with_levels(explain_as_written(diagnose(trace, prober, first_break=first_break)))


def sweep_reference(
    sizes: Sequence[tuple[int, ...]],
    chs: tuple[int, ...],
    n_channels: int = 64,
    img_channels: int = 3,
    batch: int = 1,
    variant: str = "fixed",
    progress: Callable[[], None] | None = None,
) -> SweepResult:
    """Every size's outcome for one config; the model is built once, on meta.

    Raises:
        SweepInterrupted: Ctrl-C; it carries the sizes done so far.
    """
    with torch.device("meta"):
        model = UNet(img_channels, n_channels, chs, variant)  # type: ignore[arg-type]
    # The rule is read at the largest size swept: large enough for every level to have rounded.
    largest = spatial_extents(max(sizes, key=max), 2) if sizes else (64, 64)
    inputs = SizedInputs([((batch, img_channels, *largest), torch.float32)], timestep=True)
    label = " · ".join(f"{key} {value}" for key, value in reference_config(chs, n_channels, variant))
    return sweep_model(model, inputs, sizes, label=label, progress=progress)


AS_WRITTEN_CAUSE = (
    "; UNet(variant='as-written') builds the up path with the tutorial's "
    "`out_channels = n_channels * chs[ch_ind - 1]`, which takes chs[-1] at the first up level, "
    "and never updates in_channels"
)


def explain_as_written(trace: Trace) -> Trace:
    """The tutorial's own mistake named in the cause of each channel break of its up path.

    Specific to the reference model, so it lives beside it rather than in the diagnosis.
    """
    if dict(trace.config).get("variant") != "as-written":
        return trace
    hinted = {
        index
        for index, brk in enumerate(trace.breaks)
        if brk.kind == BreakKind.CHANNELS and brk.layer >= 0 and full_name(trace, brk.layer).startswith("ups.")
    }
    breaks = tuple(
        dataclasses.replace(brk, cause=brk.cause + AS_WRITTEN_CAUSE) if index in hinted else brk
        for index, brk in enumerate(trace.breaks)
    )
    causes = tuple(
        dataclasses.replace(cause, text=cause.text + AS_WRITTEN_CAUSE) if hinted & set(cause.breaks) else cause
        for cause in trace.causes
    )
    return dataclasses.replace(trace, breaks=breaks, causes=causes)
