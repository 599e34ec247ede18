"""Each break's message, cause and fix, derived from the records alone."""

from __future__ import annotations

import dataclasses

from shapetrace.analysis.placement import DOWN, block_name, display_rows, full_name, placements, spatial
from shapetrace.formatting import format_extents, format_shape, format_size, format_size_change
from shapetrace.records import Break, BreakSide, Shape, ShapeWarning, SideRole, Trace, WarningKind

_FUNCTION_NAMES = {"cat": "torch.cat", "stack": "torch.stack", "add": "+"}


def explain(trace: Trace) -> Trace:
    """The trace with every break's message, cause and fix, and every warning's message, filled in.

    Reads only the records: the tracer records what happened, this says what it means.
    """
    breaks = tuple(_explain(trace, brk) for brk in trace.breaks)
    warnings = tuple(
        dataclasses.replace(warning, message=_warning_message(trace, warning)) for warning in trace.warnings
    )
    return dataclasses.replace(trace, breaks=breaks, warnings=warnings)


def _warning_message(trace: Trace, warning: ShapeWarning) -> str:
    if warning.kind == WarningKind.CROPPED_OUTPUT:
        sizes = f"{format_size(warning.output_size)} but its input is {format_size(warning.input_size)}"
        return f"{trace.model}'s output is {sizes}: the model crops (unpadded convolutions), so its output is smaller"
    layer = trace.layers[warning.layer]
    size_in, size_out = _first_odd_change(warning)
    where = f"{full_name(trace, warning.layer)} ({layer.type}) turns size {size_in} into {size_out}"
    if warning.kind == WarningKind.ROUNDED_UP:
        return f"{where}: {size_in} is not divisible by its stride {warning.stride}, so the size is rounded up"
    return f"{where}: {size_in} is not divisible by its stride {warning.stride}, so a row or column is lost"


def _first_odd_change(warning: ShapeWarning) -> tuple[int, int]:
    """The first spatial extent the stride does not divide, before and after the layer."""
    pairs = list(zip(warning.input_size, warning.output_size, strict=False))
    return next(((a, b) for a, b in pairs if a != b and a % warning.stride), pairs[0])


def _explain(trace: Trace, brk: Break) -> Break:
    if brk.kind == "size" and brk.op in _FUNCTION_NAMES:
        if not any(side.role == SideRole.SKIP for side in brk.sides):
            return _explain_unpaired(trace, brk)
        return _explain_merge(trace, brk)
    if brk.kind == "channels" and brk.op == "add" and len(brk.sides) == 2:
        return _explain_added_channels(trace, brk)
    if brk.kind == "channels":
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
    name = block_name(trace, side.producer)
    if side.producer != beside.producer and name == block_name(trace, beside.producer):
        return full_name(trace, side.producer)
    return name


def _explain_unpaired(trace: Trace, brk: Break) -> Break:
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
    message = (
        f"{_where(trace, brk)}: {function} joins {format_shape(first.shape)} from {names[0]} and "
        f"{format_shape(second.shape)} from {names[1]}; dims {', '.join(map(str, differing))} differ "
        f"({sizes[0]} vs {sizes[1]})"
    )
    cause = f"{names[0]} makes {sizes[0]} from this input size, but {names[1]} is {sizes[1]}"
    fix = _size_fix(trace) if trace.size_rule is not None else f"use an input size at which {names[0]} makes {sizes[1]}"
    return dataclasses.replace(brk, message=message, cause=cause, fix=fix)


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


def _explain_merge(trace: Trace, brk: Break) -> Break:
    main = next((s for s in brk.sides if s.role == "up path"), brk.sides[0])
    others = [s for s in brk.sides if s is not main and s.shape != main.shape]
    other = others[0] if others else brk.sides[-1]
    differing = [d for d, (a, b) in enumerate(zip(main.shape, other.shape, strict=False)) if a != b and d != brk.dim]
    function = _FUNCTION_NAMES[brk.op] + (f"(dim={brk.dim})" if brk.dim >= 0 else "")
    their = " vs ".join(format_extents([shape[d] for d in differing]) for shape in (main.shape, other.shape))
    message = (
        f"{_where(trace, brk)}: {function} joins {_side(trace, main, other)} and {_side(trace, other, main)}; "
        f"{'dims' if len(differing) > 1 else 'dim'} {', '.join(map(str, differing))} "
        f"{'differ' if len(differing) > 1 else 'differs'} ({their})"
    )
    floored = _floor_behind(trace, brk, main.shape, other.shape, differing)
    if floored is not None:
        before, after = floored.input_size, floored.output_size
        cause = (
            f"{_block(trace, floored.layer)} {_rounding(floored)} an odd size: "
            f"{format_size_change(before, after)} ({_first_odd(before, floored.stride)} is not divisible by "
            f"{floored.stride}); the up path doubles back to {format_size(spatial(main.shape))} "
            f"while the skip kept {format_size(spatial(other.shape))}"
        )
        fix = _size_fix(trace)
    else:
        cause = (
            f"the up path reaches the merge at {format_size(spatial(main.shape))} but the skip "
            f"from {block_name(trace, other.producer)} is {format_size(spatial(other.shape))}: more than "
            f"rounding can explain, so the skip comes from another level than the up path"
        )
        fix = _level_fix(trace, main.shape, other.shape)
    return dataclasses.replace(brk, message=message, cause=cause, fix=fix)


def _level_fix(trace: Trace, main: tuple[int, ...], skip: tuple[int, ...]) -> str:
    """Name a block whose output would fit the merge, when the skip came from the wrong level."""
    rows = display_rows(trace)
    sides = placements(trace, rows)
    fitting = [
        row
        for row in rows
        if sides[row.index].side == DOWN and row.outputs and row.outputs[0][1:] == (skip[1], *main[2:])
    ]
    resize = "or resize the skip to the up path (F.interpolate(skip, size=x.shape[-2:]))"
    if fitting:
        shape = format_shape(fitting[-1].outputs[0])
        return f"take the skip from {block_name(trace, fitting[-1].index)} (its output is {shape}); {resize}"
    return f"pair the skip with the up block of its own resolution; {resize}"


def _size_fix(trace: Trace) -> str:
    rule = trace.size_rule
    if rule is not None and rule.nearest:
        nearest = " or ".join(str(size) for size in rule.nearest)
        return (
            f"use an input size that is a multiple of {rule.multiple} (at least {rule.minimum}), e.g. {nearest}; "
            f"or pad the input to {rule.nearest[-1]}; or pass the skip's size to the upsampler "
            f"(F.interpolate(x, size=skip.shape[-2:]))"
        )
    return (
        "use an input size that every downsampling stride divides; or pad the input; or pass the skip's "
        "size to the upsampler (F.interpolate(x, size=skip.shape[-2:]))"
    )


def _floor_behind(trace: Trace, brk: Break, main: Shape, skip: Shape, differing: list[int]) -> ShapeWarning | None:
    """The first odd-size warning before the break, when rounding can explain it.

    Rounding leaves the up path within a few rows of the skip (224 against 225); a skip at
    twice or half the size comes from another level, whatever was rounded on the way.
    """
    if not all(max(main[d], skip[d]) < 1.5 * min(main[d], skip[d]) for d in differing):
        return None
    earlier = (
        warning for warning in trace.warnings if warning.stride >= 2 and warning.layer < max(brk.leaf, brk.layer)
    )
    return next(earlier, None)


def _rounding(warning: ShapeWarning) -> str:
    """ "floored" (pooling: 225 → 112) or "rounded up" (a padded strided conv: 65 → 33)."""
    return "rounded up" if warning.kind == WarningKind.ROUNDED_UP else "floored"


def _first_odd(size: tuple[int, ...], stride: int) -> int:
    return next((extent for extent in size if extent % stride), size[0])


def _explain_channels(trace: Trace, brk: Break) -> Break:
    expected = brk.expected[0]
    got = sum(side.channels for side in brk.sides)
    leaf = trace.layers[brk.leaf]
    leaf_text = f"{full_name(trace, brk.leaf)} ({leaf.type})"
    consumer = full_name(trace, brk.layer)
    if len(brk.sides) > 1:
        parts = " + ".join(
            f"{side.channels} from {'the skip of ' if side.role == 'skip' else ''}{block_name(trace, side.producer)}"
            for side in brk.sides
        )
        message = f"{leaf_text} expects {expected} channels but receives {got} = {parts}"
        cause = (
            f"{consumer} was built for {expected} input channels, but the concatenation before it "
            f"delivers {got} ({parts})"
        )
        fix = f"build {consumer} for {got} input channels ({' + '.join(str(s.channels) for s in brk.sides)})"
    else:
        side = brk.sides[0]
        source = block_name(trace, side.producer)
        message = f"{leaf_text} expects {expected} channels but receives {got} from {source}"
        cause = f"{leaf_text} was built for {expected} input channels; {source} outputs {got}"
        fix = f"build {full_name(trace, brk.leaf)} for {got} input channels, or make {source} output {expected}"
    if brk.dim >= 0 and leaf.type != trace.layers[brk.layer].type:
        message = f"{consumer}: {message}"
    return dataclasses.replace(brk, message=message, cause=cause, fix=fix)


def _explain_error(trace: Trace, brk: Break) -> Break:
    leaf = trace.layers[brk.leaf] if trace.layers else None
    where = f"{full_name(trace, brk.leaf)} ({leaf.type})" if leaf is not None else trace.model
    detail = brk.message
    inputs = ", ".join(format_shape(side.shape) for side in brk.sides)
    message = f"{where} raised {brk.op}: {detail}"
    if brk.kind == "interrupted":
        return dataclasses.replace(brk, message=f"interrupted in {where}", cause="Ctrl-C", fix="")
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
    elif brk.op == "AssertionError" and trace.size_rule is not None:
        cause = f"{where} asserts on its input before running a layer (its inputs: {inputs})"
        fix = _size_fix(trace)
    else:
        cause = f"{where} raised something that is not a shape mismatch (its inputs: {inputs or 'none'})"
        fix = "fix the forward, or trace with --device cpu if it needs real values"
    return dataclasses.replace(brk, message=message, cause=cause, fix=fix)
