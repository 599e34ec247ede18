"""The words of each cause: what the records say happened, with the numbers a reader checks."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from shapetrace.analysis.order import Misorder
from shapetrace.analysis.placement import BLOCK_DEPTH, block_name, full_name, skip_source_name, spatial
from shapetrace.extents import rounding, scale_of
from shapetrace.formatting import format_size, format_size_change
from shapetrace.records import BreakSide, Resampling, Shape, Trace


def op_name(trace: Trace, record: Resampling, depth: int = BLOCK_DEPTH) -> str:
    """ "downs.2 (Downsample)" for a module's op; "max_pool2d in down1" for a function a forward called."""
    block = block_name(trace, record.layer, depth)
    layer = trace.layers[record.layer]
    if record.op == layer.type:
        top = next(row for row in trace.layers if (row.name or row.type) == block)
        return f"{block} ({top.type})"
    where = f"{trace.model}.forward" if record.layer == 0 else block
    return f"{record.op} in {where}"


def distinct_depth(trace: Trace, records: Sequence[Resampling]) -> int:
    """The shallowest display depth that names different calls' ops differently, among `records`
    and every other resampling of the trace.

    An encoder that runs every stage inside one forward (`features = encoder(x)`) would
    otherwise name each stage's downsampler "encoder", even where only one of them rounds;
    its stages are one level deeper.
    """
    records = [*records, *trace.resamplings]
    deepest = max((layer.depth for layer in trace.layers), default=BLOCK_DEPTH)
    for depth in range(BLOCK_DEPTH, deepest + 1):
        named: dict[str, int] = {}
        clash = False
        for record in records:
            name = block_name(trace, record.layer, depth)
            clash = clash or named.setdefault(name, record.layer) != record.layer
        if not clash:
            return depth
    return deepest


def rounding_text(trace: Trace, downs: Sequence[Resampling], main: Shape, skip: Shape) -> str:
    """The first inexact downsampler and what it did, the later ones, and the two sizes that met."""
    first = downs[0]
    change = format_size_change(first.input_size, first.output_size)
    depth = distinct_depth(trace, downs)
    if is_unpadded(first):
        text = f"{op_name(trace, first, depth)} shrank {change} (an unpadded kernel trims the border)"
    else:
        text = f"{op_name(trace, first, depth)} {_verb(first)} an odd size: {change} "
        text += f"({_odd(first)} is not divisible by {_stride(first)})"
    for later in downs[1:]:
        text += (
            f"; then {op_name(trace, later, depth)} {_verb(later)} "
            f"{format_size_change(later.input_size, later.output_size)}"
        )
    return text + f"; the up path doubles back to {format_size(main)} while the skip kept {format_size(skip)}"


def is_unpadded(record: Resampling) -> bool:
    """A stride-1 op that shrinks (an unpadded 3×3 conv: 20 → 18): no level change, only a trimmed border."""
    axes = range(len(record.input_size))
    return all(scale_of(record, axis) == 1 for axis in axes) and any(rounding(record, axis) < 0 for axis in axes)


def _verb(record: Resampling) -> str:
    """ "floored" (a pool: 225 → 112), "rounded up" (a padded strided conv: 65 → 33), "shrank" (unpadded)."""
    if is_unpadded(record):
        return "shrank"
    signs = [rounding(record, axis) for axis in range(len(record.input_size))]
    return "rounded up" if any(sign > 0 for sign in signs) else "floored"


def _odd(record: Resampling) -> int:
    axis = next((axis for axis in range(len(record.input_size)) if rounding(record, axis)), 0)
    return record.input_size[axis]


def _stride(record: Resampling) -> str:
    axis = next((axis for axis in range(len(record.input_size)) if rounding(record, axis)), 0)
    scale = scale_of(record, axis)
    return str(scale.denominator if scale.numerator == 1 else scale)


def transpose_text(trace: Trace, transposes: Sequence[Resampling]) -> str:
    """Each ConvTranspose one short: its geometry, what it made, and what doubling would make."""
    parts = []
    for record in transposes:
        axis = next(axis for axis in range(len(record.input_size)) if rounding(record, axis))
        stride = record.stride[axis]
        geometry = f"kernel {record.kernel[axis]}, stride {stride}, padding {record.padding[axis]}"
        made = f"{record.input_size[axis]} → {record.output_size[axis]}, not {record.input_size[axis] * stride}"
        if record.op == trace.layers[record.layer].type:  # a module: named, with its class
            where = f"{full_name(trace, record.layer)} ({record.op}, {geometry})"
        else:
            where = f"{op_name(trace, record)} ({geometry})"
        parts.append(f"{where} makes {made}")
    return (
        "; ".join(parts) + ": without output_padding a transposed convolution of this geometry falls one short "
        "of undoing its stride, so the up path never meets the skip of its level"
    )


def level_text(
    trace: Trace,
    target: int,
    main: BreakSide,
    skip: BreakSide,
    main_scale: Fraction | None,
    skip_scale: Fraction | None,
    *,
    resized_from: tuple[int, ...] | None = None,
) -> str:
    """A skip from another level than the up path it joins.

    `resized_from`: the up path's extents before it was resized to the skip, where it was;
    `main_scale` is then the level that resize should have reached.
    """
    if resized_from is not None and main_scale is not None and skip_scale is not None and main_scale != skip_scale:
        return (
            f"the up path reaches {full_name(trace, target)} at {format_size(resized_from)} and is resized to the "
            f"skip from {skip_source_name(trace, skip.producer)}, {format_size(spatial(skip.shape))} "
            f"({scale_text(skip_scale)}); the next level up works at {scale_text(main_scale)}, "
            "so the skip comes from another level than the up path"
        )
    text = (
        f"the up path reaches {full_name(trace, target)} at {format_size(spatial(main.shape))} but the skip from "
        f"{skip_source_name(trace, skip.producer)} is {format_size(spatial(skip.shape))}"
    )
    if main_scale is not None and skip_scale is not None and main_scale != skip_scale:
        return (
            f"{text}: the up path works at {scale_text(main_scale)} and the skip at {scale_text(skip_scale)}, "
            "so the skip comes from another level than the up path; no rounding explains it"
        )
    return f"{text}: more than rounding can explain, so the skip comes from another level than the up path"


def scale_text(scale: Fraction) -> str:
    """ "the input's resolution" or "1/4 of the input's resolution"."""
    return "the input's resolution" if scale == 1 else f"{scale} of the input's resolution"


def order_text(trace: Trace, order: Misorder) -> str:
    """Which skips were consumed out of mirror order, and which mirror order would have joined."""
    pairs = [trace.skips[index] for index in order.pairs]
    joined = ", ".join(
        f"{block_name(trace, pair.target)} at {format_size(spatial(pair.main_shape))} takes "
        f"{skip_source_name(trace, pair.source)}'s {format_size(spatial(pair.shape))}"
        for pair in pairs
    )
    if order.crossing:
        text = (
            f"the skips are consumed first in, first out ({joined}): the map saved first joins the first up "
            "block, where a UNet joins the map saved last"
        )
        if order.resized:
            text += "; the up path is resized to each skip, so every shape lines up and nothing else tells"
    else:
        text = (
            f"the up path is resized to a skip of another level before it joins it ({joined}): every shape lines "
            "up, but each up level takes the skip of a different resolution than its own"
        )
    mirror = ", ".join(
        f"{block_name(trace, trace.skips[index].target)} ← {skip_source_name(trace, source)}"
        for index, source in order.mirror.items()
    )
    return f"{text}; mirror order pairs {mirror}" if mirror else text
