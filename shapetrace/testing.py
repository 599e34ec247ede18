"""Assertions for a project's own tests: its UNet aligns at the sizes it must, and its shapes stay put.

    from shapetrace.testing import assert_aligned, assert_trace_matches

    def test_unet_aligns():
        trace = assert_aligned(MyUNet, torch.randn(1, 3, 64, 64), torch.tensor([10]), sizes="64:256:32")
        assert_trace_matches(trace, "tests/golden/unet.json")

With shapetrace installed, pytest has a `shapetrace` fixture that returns this module, and
`pytest --shapetrace-update` (re)writes the golden traces (`shapetrace.pytest_plugin`).
Every trace runs on a meta copy of the model: the model itself is neither run nor changed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shapetrace import jsonio
from shapetrace.analysis.diff import diff_traces
from shapetrace.analysis.placement import block_name
from shapetrace.api import run_trace
from shapetrace.errors import TraceFileError
from shapetrace.formatting import format_extents
from shapetrace.records import BreakKind, Shape, Trace
from shapetrace.render.diff_table import diff_table
from shapetrace.render.plain import plain_text
from shapetrace.sizes import as_sizes, spatial_extents
from shapetrace.tracing.closures import deep_copy
from shapetrace.verify import meta_copy, resized_arguments

__all__ = ["UPDATE_OPTION", "assert_aligned", "assert_trace_matches"]

UPDATE_OPTION = "--shapetrace-update"
"""The pytest option that (re)writes golden traces."""
UPDATE_VARIABLE = "SHAPETRACE_UPDATE"
"""Set to 1 to (re)write golden traces where the pytest plugin is not loaded."""
MAX_LISTED_SIZES = 10


def assert_aligned(
    model: nn.Module | Callable[[], nn.Module],
    *inputs: Any,
    sizes: str | int | Iterable[int | Iterable[int]] | None = None,
    **kwargs: Any,
) -> Trace:
    """Assert that `model(*inputs, **kwargs)` aligns at every size: no merge or layer breaks.

    Args:
        model: the model, or a factory that builds it without arguments (called under
            `torch.device("meta")`, so no weights are allocated, where it allows).
        inputs, kwargs: the forward's arguments, real or meta tensors (and anything else).
        sizes: what `--sizes` takes: "32:256:8" (stop included), "64,96x128", an int, or a list of
            ints and tuples. The first input of three or more dims is the image: its spatial axes,
            and those of every tensor of its spatial size, take each size in turn. None checks the
            inputs' own size.

    Returns:
        The Trace at the first size checked (the inputs' own when `sizes` is None).

    Raises:
        AssertionError: a size breaks: the message gives that size, the block the first break
            is in, its cause and fix, and every other size that breaks.
        ValueError: bad `sizes`, or `sizes` given with no input that has spatial axes.
    """
    meta_model = _meta_model(model)
    checked = _sizes_to_check(inputs, kwargs, sizes)
    at = resized_arguments(inputs, kwargs)
    first: Trace | None = None
    failing: list[tuple[Shape, Trace]] = []
    traced_on = meta_model
    for size in checked:
        args, keywords = at(size) if size else ([_on_meta(arg) for arg in inputs], _on_meta(kwargs))
        if traced_on is not meta_model:
            args, keywords = _materialised(args), _materialised(keywords)
        trace = run_trace(traced_on, args, keywords, first_break=True, verify=False)
        if traced_on is meta_model and any(brk.kind == BreakKind.META for brk in trace.breaks):
            # The forward reads tensor values, which meta tensors lack: run a CPU copy for real, every size.
            traced_on = _cpu_model(model)
            args, keywords = _materialised(args), _materialised(keywords)
            trace = run_trace(traced_on, args, keywords, first_break=True, verify=False)
        first = first or trace
        if not trace.ok:
            failing.append((size, trace))
    if failing:
        size, _ = failing[0]
        args, keywords = at(size) if size else ([_on_meta(arg) for arg in inputs], _on_meta(kwargs))
        if traced_on is not meta_model:
            args, keywords = _materialised(args), _materialised(keywords)
        explained = run_trace(traced_on, args, keywords)  # every break, its cause and verified fixes
        raise AssertionError(_failure_message(explained, [size for size, _ in failing], len(checked)))
    assert first is not None
    return first


def assert_trace_matches(trace: Trace, path: str | os.PathLike[str], *, update: bool | None = None) -> None:
    """Assert that `trace` has the shapes and skip pairings of the golden trace saved at `path`.

    Args:
        trace: a trace (`assert_aligned`'s, `shapetrace.trace`'s).
        path: the golden trace, JSON as `trace.to_json()` writes it.
        update: True writes `trace` to `path` instead of comparing; None (the default) does so
            when pytest runs with --shapetrace-update, or SHAPETRACE_UPDATE=1 is set.

    Raises:
        AssertionError: the golden is missing or unreadable (the message says how to write it),
            or a layer's shapes or a skip changed: the message holds the diff table, golden
            against now, as `shapetrace diff` prints it.
    """
    golden = Path(path)
    if update if update is not None else _update_wanted():
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(jsonio.dumps(trace) + "\n", encoding="utf-8")
        return
    how = f"run pytest with {UPDATE_OPTION} to write it (or call assert_trace_matches(..., update=True))"
    if not golden.is_file():
        raise AssertionError(f"no golden trace at {golden}: {how}")
    try:
        saved = jsonio.loads(golden.read_text(encoding="utf-8"))
    except (TraceFileError, UnicodeDecodeError) as error:
        raise AssertionError(f"golden trace {golden} cannot be read ({error}): {how}") from None
    difference = diff_traces(saved, trace)
    if difference.same:
        return
    changed = [f"{len(difference.layers)} layers"] if difference.layers else []
    skips = len(difference.skips_removed) + len(difference.skips_added)
    changed += [f"{skips} skip pairings"] if skips else []
    table = plain_text(diff_table(difference, "golden", "now"))
    raise AssertionError(
        f"{trace.model} differs from its golden trace {golden} ({' and '.join(changed)} changed); "
        f"if the change is intended, {how.replace('write', 'rewrite')}\n{table}"
    )


def _update_wanted() -> bool:
    plugin = sys.modules.get("shapetrace.pytest_plugin")  # loaded by pytest; never imported from here
    requested = bool(getattr(plugin, "update_requested", False))
    return requested or os.environ.get(UPDATE_VARIABLE, "") not in ("", "0")


def _meta_model(model: nn.Module | Callable[[], nn.Module]) -> nn.Module:
    """A meta copy of the model (the user's is never traced), or a factory's model built on meta."""
    if isinstance(model, nn.Module):
        return meta_copy(model)
    if not callable(model):
        raise TypeError(f"model {model!r} is not an nn.Module or a factory of one")
    try:
        with torch.device("meta"):
            built = model()
    except Exception:  # noqa: BLE001 - a factory that cannot build on meta (it loads weights, say) builds as usual
        built = model()
    if not isinstance(built, nn.Module):
        raise TypeError(f"the factory returned {type(built).__name__}, not an nn.Module")
    return meta_copy(built)


def _sizes_to_check(
    inputs: tuple[Any, ...], kwargs: dict[str, Any], sizes: str | int | Iterable[int | Iterable[int]] | None
) -> list[Shape]:
    """The spatial extents to trace at, one tuple per size; [()] for the inputs' own size."""
    if sizes is None:
        return [()]
    image = next((a for a in (*inputs, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim() >= 3), None)
    if image is None:
        raise ValueError("sizes given, but no input has spatial axes: expected a (B, C, L), (B, C, H, W) or larger")
    checked = [spatial_extents(size, image.dim() - 2) for size in as_sizes(sizes)]
    if not checked:
        raise ValueError(f"sizes {sizes!r} gives no size")
    return checked


def _cpu_model(model: nn.Module | Callable[[], nn.Module]) -> nn.Module:
    """A CPU copy of the model to run for real (the user's own is never run), or a factory's CPU build."""
    built = deep_copy(model) if isinstance(model, nn.Module) else model()
    if any(tensor.device.type == "meta" for tensor in (*built.parameters(), *built.buffers())):
        built = built.to_empty(device="cpu")  # a meta model's weights: uninitialised, as shapes need no values
    return built.to("cpu").eval()


def _materialised(value: Any) -> Any:
    """Meta tensors as CPU tensors of the same shape and dtype: random floats, zero integers (valid indices)."""
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point:
            return torch.randn(value.shape, dtype=value.dtype)
        return torch.zeros(value.shape, dtype=value.dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_materialised(item) for item in value)
    if isinstance(value, dict):
        return {key: _materialised(item) for key, item in value.items()}
    return value


def _on_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty(value.shape, dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_on_meta(item) for item in value)
    if isinstance(value, dict):
        return {key: _on_meta(item) for key, item in value.items()}
    return value


def _failure_message(trace: Trace, failing: list[Shape], checked: int) -> str:
    """Where the first failing size breaks first, why, and which other sizes break."""
    first = trace.breaks[0]
    size = failing[0] or _spatial(trace)
    block = block_name(trace, first.layer) if first.layer >= 0 else trace.model
    cause = next((cause for cause in trace.causes if 0 in cause.breaks), None)
    lines = [
        f"{trace.model} does not align at size {format_extents(size)}: first break in {block}",
        f"  break: {first.message}",
        f"  cause: {cause.text if cause is not None else first.cause or first.message}",
    ]
    fixes = cause.fixes if cause is not None else ()
    fix = next((fix for fix in fixes if fix.verified), fixes[0] if fixes else None)
    if fix is not None:
        lines.append(f"  fix{' (verified)' if fix.verified else ''}: {fix.text}")
    elif first.fix:
        lines.append(f"  fix: {first.fix}")
    if checked > 1:
        listed = ", ".join(format_extents(size) for size in failing[:MAX_LISTED_SIZES])
        more = f", … ({len(failing) - MAX_LISTED_SIZES} more)" if len(failing) > MAX_LISTED_SIZES else ""
        every = "every size" if len(failing) == checked else f"{len(failing)} of {checked} sizes"
        lines.append(f"  breaks at {every}: {listed}{more}")
    return "\n".join(lines)


def _spatial(trace: Trace) -> Shape:
    image = next((shape for shape in trace.inputs if len(shape) >= 3), ())
    return tuple(image[2:])
