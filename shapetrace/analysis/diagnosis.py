"""Each break's message, each root cause once with its fixes, and the warnings, from the records alone.

The tracer records what happened; this says what it means. Causes are read from the
resampling records (`chains`, `rounding`, `order`) where they tell, and from the break's
own numbers where they do not. Fixes are not verified here: `shapetrace.verify`
re-traces each with the fix applied and marks the ones that come out clean.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from shapetrace.analysis.causes import find_causes, with_order_breaks
from shapetrace.analysis.chains import Axis, axes_of
from shapetrace.analysis.fixes import size_fixes
from shapetrace.analysis.order import misorder
from shapetrace.analysis.placement import block_name, full_name, skip_source_name, spatial
from shapetrace.analysis.texts import op_name, scale_text
from shapetrace.extents import has_channel_dim, rounding
from shapetrace.formatting import format_extents, format_shape, format_size, format_size_change
from shapetrace.records import Break, BreakKind, BreakSide, Shape, ShapeWarning, SideRole, Trace, WarningKind

_FUNCTION_NAMES = {"cat": "torch.cat", "stack": "torch.stack", "add": "+"}


def explain(trace: Trace) -> Trace:
    """The trace with every break's message, cause and fix, its causes, and every warning's message.

    Reads only the records: the tracer records what happened, this says what it means.
    """
    trace = dataclasses.replace(trace, breaks=tuple(_channels_at_add(brk, trace.inputs) for brk in trace.breaks))
    # An axis whose chain misses a size change (a crop, a pad) would match tensors to the wrong
    # nodes: causes then come from the break's own numbers instead.
    axes = [axis for axis in axes_of(trace) if axis.complete]
    order = misorder(trace, axes) if trace.skips else None
    trace = with_order_breaks(trace, order)
    trace = dataclasses.replace(
        trace,
        breaks=tuple(_explain(trace, brk) for brk in trace.breaks),
        warnings=_warnings(trace, axes),
    )
    return find_causes(trace, axes, order, lambda: size_fixes(trace.size_rule))


def _channels_at_add(brk: Break, inputs: tuple[Shape, ...]) -> Break:
    """`up(x) + skip` whose channel counts differ is a channel break, whatever else differs."""
    if brk.kind != BreakKind.SIZE or brk.op != "add" or len(brk.sides) < 2:
        return brk
    shapes = [side.shape for side in brk.sides]
    # A side with one channel broadcasts over the other's: no channel mismatch.
    # Only in feature maps: dim 1 of (B, N, C) tokens is no channel count.
    image_rank = next((len(shape) for shape in inputs if len(shape) >= 3), None)
    if not all(has_channel_dim(len(shape), image_rank) for shape in shapes) or len({s[1] for s in shapes} - {1}) < 2:
        return brk
    sides = tuple(dataclasses.replace(side, channels=side.shape[1]) for side in brk.sides)
    main = next((side for side in sides if side.role == "up path"), sides[0])
    return dataclasses.replace(brk, kind=BreakKind.CHANNELS, sides=sides, dim=1, expected=(main.channels,))


# --- warnings ------------------------------------------------------------------------------


def _warnings(trace: Trace, axes: list[Axis]) -> tuple[ShapeWarning, ...]:
    warnings = [w for w in trace.warnings if w.kind != WarningKind.OUTPUT_RESOLUTION]
    resolution = _output_resolution(trace, axes)
    if resolution is not None:
        warnings = [w for w in warnings if w.kind != WarningKind.CROPPED_OUTPUT] + [resolution]
    return tuple(dataclasses.replace(warning, message=_warning_message(trace, warning)) for warning in warnings)


def _output_resolution(trace: Trace, axes: list[Axis]) -> ShapeWarning | None:
    """A U whose output is at another resolution than its input (1/4 after skips taken out of order)."""
    image_in = next((shape for shape in trace.inputs if len(shape) >= 3), None)
    image_out = next((shape for shape in trace.outputs if image_in is not None and len(shape) == len(image_in)), None)
    if not trace.skips or not axes or image_in is None or image_out is None or spatial(image_in) == spatial(image_out):
        return None
    scales = []
    for axis in axes:
        node = axis.find(image_out[axis.dim], len(trace.layers))
        if node is None:
            return None
        scales.append(axis.scale(node))
    if all(scale == 1 for scale in scales) or any(scale == 0 for scale in scales):
        return None  # the same resolution, cropped or padded by a few rows; or a fixed size on purpose
    stride = max(int(1 / scale) if scale < 1 else int(scale) for scale in scales)
    return ShapeWarning(0, WarningKind.OUTPUT_RESOLUTION, "", spatial(image_in), spatial(image_out), stride)


def _warning_message(trace: Trace, warning: ShapeWarning) -> str:
    sizes = f"{format_size(warning.output_size)} but its input is {format_size(warning.input_size)}"
    if warning.kind == WarningKind.CROPPED_OUTPUT:
        return f"{trace.model}'s output is {sizes}: the model crops (unpadded convolutions), so its output is smaller"
    if warning.kind == WarningKind.OUTPUT_RESOLUTION:
        ratio = Fraction(warning.output_size[0], warning.input_size[0]) if warning.input_size[0] else Fraction(0)
        return (
            f"{trace.model}'s output is {sizes}: {scale_text(ratio)}, although nothing crops or pads on purpose; "
            "a UNet's output is at its input's resolution"
        )
    layer = trace.layers[warning.layer]
    size_in, size_out = _first_odd_change(warning)
    record = next(
        (r for r in trace.resamplings if r.layer == warning.layer and r.input_size == warning.input_size), None
    )
    where = f"{full_name(trace, warning.layer)} ({layer.type}) turns size {size_in} into {size_out}"
    if record is not None and record.op != layer.type:  # a function the forward called
        where = f"{op_name(trace, record)} turns size {size_in} into {size_out}"
    up = warning.kind == WarningKind.ROUNDED_UP
    if record is not None:
        up = any(rounding(record, axis) > 0 for axis in range(len(record.input_size)))
    if up:
        return f"{where}: {size_in} is not divisible by its stride {warning.stride}, so the size is rounded up"
    return f"{where}: {size_in} is not divisible by its stride {warning.stride}, so a row or column is lost"


def _first_odd_change(warning: ShapeWarning) -> tuple[int, int]:
    """The first spatial extent the stride does not divide, before and after the layer."""
    pairs = list(zip(warning.input_size, warning.output_size, strict=False))
    return next(((a, b) for a, b in pairs if a != b and a % warning.stride), pairs[0])


# --- messages ------------------------------------------------------------------------------


def _explain(trace: Trace, brk: Break) -> Break:
    if brk.kind in (BreakKind.SIZE, BreakKind.ORDER) and brk.op in _FUNCTION_NAMES:
        return dataclasses.replace(brk, message=_merge_message(trace, brk))
    if brk.kind == BreakKind.CHANNELS and brk.op == "add" and len(brk.sides) == 2:
        return _explain_added_channels(trace, brk)
    if brk.kind == BreakKind.CHANNELS:
        return _explain_channels(trace, brk)
    return _explain_error(trace, brk)


def _where(trace: Trace, brk: Break) -> str:
    layer = trace.layers[brk.layer]
    where = f"{full_name(trace, brk.layer)} ({layer.type})"
    if brk.leaf != brk.layer and trace.layers[brk.leaf].depth > layer.depth:
        where += f" at {full_name(trace, brk.leaf)}"
    return where


def _block(trace: Trace, index: int) -> str:
    """ "downs.2 (Downsample)": a call named at the display depth, with its type."""
    name = block_name(trace, index)
    block = next(layer for layer in trace.layers if (layer.name or layer.type) == name)
    return f"{name} ({block.type})"


def _side(trace: Trace, side: BreakSide, beside: BreakSide) -> str:
    return f"{side.role} {format_shape(side.shape)} from {_producer_name(trace, side, beside)}"


def _producer_name(trace: Trace, side: BreakSide, beside: BreakSide) -> str:
    """The side's block, or its full name where both sides come from the same block (nested levels)."""
    name = skip_source_name(trace, side.producer) if side.role == "skip" else block_name(trace, side.producer)
    if side.producer != beside.producer and name == block_name(trace, beside.producer):
        return full_name(trace, side.producer)
    return name


def _unpaired_message(trace: Trace, brk: Break) -> str:
    """Two inputs of a merge that disagree in size where neither is a skip (a map of fixed size)."""
    first, second = brk.sides[0], brk.sides[-1]
    differing = [
        d
        for d, (a, b) in enumerate(zip(first.shape, second.shape, strict=False))
        if a != b and d != brk.dim and 1 not in (a, b)
    ]
    sizes = [format_extents([shape[d] for d in differing]) for shape in (first.shape, second.shape)]
    names = [_producer_name(trace, side, beside) for side, beside in ((first, second), (second, first))]
    function = _FUNCTION_NAMES[brk.op] + (f"(dim={brk.dim})" if brk.dim >= 0 else "")
    dims = f"dim {differing[0]} differs" if len(differing) == 1 else f"dims {', '.join(map(str, differing))} differ"
    return (
        f"{_where(trace, brk)}: {function} joins {format_shape(first.shape)} from {names[0]} and "
        f"{format_shape(second.shape)} from {names[1]}; {dims} ({sizes[0]} vs {sizes[1]})"
    )


def _explain_added_channels(trace: Trace, brk: Break) -> Break:
    """An add whose inputs differ in channels (a residual from a network built for another width)."""
    main = next((side for side in brk.sides if side.role == SideRole.UP_PATH), brk.sides[0])
    other = next(side for side in brk.sides if side is not main)
    main_name, other_name = full_name(trace, main.producer), full_name(trace, other.producer)
    message = (
        f"{_where(trace, brk)}: + joins {main.channels} channels from {main_name} "
        f"and {other.channels} from {other_name}"
    )
    cause = f"{other_name} delivers {other.channels} channels where {main_name} has {main.channels}"
    fix = f"make {other_name} output {main.channels} channels, or {main_name} {other.channels}"
    return dataclasses.replace(brk, message=message, cause=cause, fix=fix)


def _merge_message(trace: Trace, brk: Break) -> str:
    if brk.kind == BreakKind.SIZE and not any(side.role == SideRole.SKIP for side in brk.sides):
        return _unpaired_message(trace, brk)  # neutral wording: no skip, so no up path either
    main = next((s for s in brk.sides if s.role == "up path"), brk.sides[0])
    others = [s for s in brk.sides if s is not main and s.shape != main.shape]
    other = others[0] if others else brk.sides[-1]
    function = _FUNCTION_NAMES[brk.op] + (f"(dim={brk.dim})" if brk.dim >= 0 else "")
    joins = f"{_where(trace, brk)}: {function} joins {_side(trace, main, other)} and {_side(trace, other, main)}"
    if brk.kind == BreakKind.ORDER:
        return f"{joins}, out of mirror order"
    differing = [d for d, (a, b) in enumerate(zip(main.shape, other.shape, strict=False)) if a != b and d != brk.dim]
    their = " vs ".join(format_extents([shape[d] for d in differing]) for shape in (main.shape, other.shape))
    plural = len(differing) > 1
    return (
        f"{joins}; {'dims' if plural else 'dim'} {', '.join(map(str, differing))} "
        f"{'differ' if plural else 'differs'} ({their})"
    )


def _explain_channels(trace: Trace, brk: Break) -> Break:
    expected = brk.expected[0]
    got = sum(side.channels for side in brk.sides)
    leaf = trace.layers[brk.leaf]
    leaf_text = f"{full_name(trace, brk.leaf)} ({leaf.type})"
    consumer = full_name(trace, brk.layer)
    if brk.op == "add":
        main = next((s for s in brk.sides if s.role == "up path"), brk.sides[0])
        skip = next((s for s in brk.sides if s.role == "skip"), brk.sides[-1])
        message = (
            f"{_where(trace, brk)}: + joins {_side(trace, main, skip)} and {_side(trace, skip, main)}; channels differ"
        )
        cause = (
            f"{block_name(trace, main.producer)} gives the up path {main.channels} channels but the skip from "
            f"{skip_source_name(trace, skip.producer)} has {skip.channels}: an addition needs equal channel counts"
        )
        return dataclasses.replace(brk, message=message, cause=cause)
    if len(brk.sides) > 1:
        parts = " + ".join(
            f"{side.channels} from the skip of {skip_source_name(trace, side.producer)}"
            if side.role == "skip"
            else f"{side.channels} from {block_name(trace, side.producer)}"
            for side in brk.sides
        )
        message = f"{leaf_text} expects {expected} channels but receives {got} = {parts}"
        cause = (
            f"{consumer} was built for {expected} input channels, but the concatenation before it "
            f"delivers {got} ({parts})"
        )
    else:
        source = block_name(trace, brk.sides[0].producer)
        message = f"{leaf_text} expects {expected} channels but receives {got} from {source}"
        cause = f"{leaf_text} was built for {expected} input channels; {source} outputs {got}"
    if brk.dim >= 0 and leaf.type != trace.layers[brk.layer].type:
        message = f"{consumer}: {message}"
    return dataclasses.replace(brk, message=message, cause=cause)


_INDEX_LAYERS = ("Embedding", "EmbeddingBag")
"""Layers whose input is integer indices, as nn.Embedding's."""


def _explain_error(trace: Trace, brk: Break) -> Break:
    leaf = trace.layers[brk.leaf] if trace.layers else None
    where = f"{full_name(trace, brk.leaf)} ({leaf.type})" if leaf is not None else trace.model
    detail = brk.message
    inputs = ", ".join(format_shape(side.shape) for side in brk.sides)
    message = f"{where} raised {brk.op}: {detail}"
    if brk.kind == "interrupted":
        return dataclasses.replace(brk, message=f"interrupted in {where}", cause="Ctrl-C", fix="")
    fix = "fix the forward, or trace with --device cpu if it needs real values"
    if brk.kind == "meta":
        cause = f"{where} reads tensor values (.item(), .tolist() or an `if` on a tensor); meta tensors have none"
        fix = "trace with --device cpu (shapetrace.trace on CPU tensors), or keep value reads out of forward"
    elif brk.kind == "size" and "too small" in detail:
        cause = f"the size shrank too far before {where} (its inputs: {inputs})"
        fix = "use a larger input, or fewer downsampling levels"
    elif brk.kind == "size":
        cause = f"{where} received {inputs or 'no tensors'}, which it cannot use"
        shrunk = next((w for w in trace.warnings if w.stride >= 2 and w.layer < brk.leaf), None)
        if shrunk is not None:
            sizes = format_size_change(shrunk.input_size, shrunk.output_size)
            cause += f"; {_block(trace, shrunk.layer)} floored {sizes} on the way"
        fix = (
            "use a larger input, or one that every stride divides"
            if shrunk
            else "see the shapes recorded before this layer"
        )
    elif brk.op == "AssertionError":
        cause = f"{where} asserts on its input before running a layer (its inputs: {inputs})"
    elif leaf is not None and leaf.type in _INDEX_LAYERS and brk.op == "RuntimeError":
        # An embedding looks up integer indices; a float tensor there is the input's dtype, not the model.
        cause = f"{where} looks up integer indices, and received {inputs or 'no tensors'} of another dtype"
        fix = "give it integer inputs: --input SHAPE:int64 or --kw NAME=SHAPE:int64 (a torch.long tensor)"
    else:
        cause = f"{where} raised something that is not a shape mismatch (its inputs: {inputs or 'none'})"
    return dataclasses.replace(brk, message=message, cause=cause, fix=fix)
