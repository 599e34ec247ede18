"""Root causes: each break traced to the one thing that broke it, each cause once.

Reads the records and the chains: a merge whose sides differ is out of mirror order, or
joins two resolutions (a wrong-level skip), or meets a floor, a ceil or a ConvTranspose one
short on the way (rounding); a layer given another channel count than its weights expect
was built for the wrong count. Breaks with one cause share one Cause record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from shapetrace.analysis.chains import Axis
from shapetrace.analysis.fixes import (
    channel_fixes,
    level_fixes,
    occurrence,
    order_fixes,
    rounding_fixes,
    transpose_fixes,
)
from shapetrace.analysis.order import Misorder, intended_scale, level_source, resized_from, skip_scale
from shapetrace.analysis.placement import block_name, spatial
from shapetrace.analysis.rounding import Rounded, missing_output_padding, rounded_between
from shapetrace.analysis.texts import is_unpadded, level_text, order_text, rounding_text, transpose_text
from shapetrace.extents import rounding
from shapetrace.formatting import format_size
from shapetrace.records import Break, BreakKind, BreakSide, Cause, CauseKind, Fix, Resampling, SideRole, Trace

MERGE_OPS = ("cat", "stack", "add")

Key = tuple[object, ...]


def with_order_breaks(trace: Trace, order: Misorder | None) -> Trace:
    """An ORDER break at each misordered merge that no size or channel break reports already."""
    if order is None:
        return trace
    broken = {(brk.layer, side.producer) for brk in trace.breaks for side in brk.sides if side.role == "skip"}
    added = []
    for index in order.pairs:
        pair = trace.skips[index]
        if (pair.target, pair.source) in broken:
            continue
        sides = (
            BreakSide(SideRole.UP_PATH, pair.main_shape, pair.main_source),
            BreakSide(SideRole.SKIP, pair.shape, pair.source),
        )
        added.append(Break(pair.target, pair.target, BreakKind.ORDER, "", pair.op, pair.dim, sides=sides))
    return dataclasses.replace(trace, breaks=trace.breaks + tuple(added))


def pair_of(trace: Trace, brk: Break) -> int | None:
    """The skip pair a merge break (or a channel break after a merge) happened at."""
    skip = next((side for side in brk.sides if side.role == "skip"), None)
    if skip is None:
        return None
    candidates = [
        number
        for number, pair in enumerate(trace.skips)
        if pair.source == skip.producer and pair.target == brk.layer and pair.shape == skip.shape
    ]
    return candidates[0] if candidates else None


def find_causes(trace: Trace, axes: list[Axis], order: Misorder | None, size_fix: Callable[[], list[Fix]]) -> Trace:
    """The trace with its causes, and each break's cause and fix text taken from its cause.

    Args:
        trace: the trace, its breaks' messages written.
        axes: the chains of its spatial axes.
        order: the pairs out of mirror order.
        size_fix: the fixes that change the input size (from the size rule), for rounding causes.
    """
    groups: dict[Key, list[int]] = {}
    for index, brk in enumerate(trace.breaks):
        groups.setdefault(_key(trace, axes, order, brk, index), []).append(index)
    causes = []
    for key, indices in groups.items():
        cause = _cause(trace, axes, order, key, tuple(indices), size_fix)
        if cause is not None:
            causes.append(cause)
    return with_causes(trace, tuple(causes))


def with_causes(trace: Trace, causes: tuple[Cause, ...]) -> Trace:
    """Each break's `cause` and `fix` text from the cause that explains it (verified fixes first)."""
    breaks = list(trace.breaks)
    for cause in causes:
        for index in cause.breaks:
            breaks[index] = dataclasses.replace(breaks[index], cause=cause.text, fix=fixes_text(cause.fixes))
    return dataclasses.replace(trace, breaks=tuple(breaks), causes=causes)


def fixes_text(fixes: tuple[Fix, ...]) -> str:
    return "; or ".join(fix.text + ("" if fix.verified else " (unverified)") for fix in fixes)


def _key(  # noqa: PLR0911 - one return per kind of cause
    trace: Trace, axes: list[Axis], order: Misorder | None, brk: Break, index: int
) -> Key:
    pair = pair_of(trace, brk)
    if pair is not None and order is not None and pair in order.resized and _joined_twice(trace, pair):
        return (CauseKind.WRONG_LEVEL, pair)  # resized to a skip that another merge takes too
    if pair is not None and order is not None and pair in order.pairs:
        return (CauseKind.ORDER,)
    merge_size = brk.kind in (BreakKind.SIZE, BreakKind.ORDER) and brk.op in MERGE_OPS
    if pair is not None and (merge_size or brk.kind == BreakKind.CHANNELS):
        main, skip = intended_scale(trace, axes, pair), skip_scale(axes, pair)
        if main is not None and skip is not None and main != skip:
            return (CauseKind.WRONG_LEVEL, pair)
    if merge_size:
        rounded = _rounded(trace, axes, brk)
        if rounded.short_transposes:
            return (CauseKind.OUTPUT_PADDING,)
        if rounded.down:
            return (CauseKind.ROUNDING,)
        if not any(side.role == SideRole.SKIP for side in brk.sides):
            return (CauseKind.INPUT_SIZE, index)  # no skip, so no level: a map of fixed size, a branch that shrank
        return (CauseKind.WRONG_LEVEL, pair if pair is not None else -1, index)
    if brk.kind == BreakKind.CHANNELS:
        return (CauseKind.CHANNELS, _additive_origin(trace, brk, index))
    if brk.kind == BreakKind.SIZE and ("too small" in brk.message or "smaller than" in brk.message):
        return (CauseKind.TOO_SMALL, index)
    if brk.kind == BreakKind.SIZE:
        return (CauseKind.INPUT_SIZE, index)
    return (CauseKind.OTHER, index)


def _joined_twice(trace: Trace, pair: int) -> bool:
    source = trace.skips[pair].source
    return sum(1 for skip in trace.skips if skip.source == source) > 1


def _additive_origin(trace: Trace, brk: Break, index: int) -> int:
    """The earlier additive channel break whose sum this layer received, else the break itself.

    After `up(x) + skip` with two channel counts, the sum goes on with the up path's count,
    so the block's first layer breaks too: one cause, two breaks.
    """
    if len(brk.sides) != 1:
        return index
    received = brk.sides[0]
    for earlier, other in enumerate(trace.breaks[:index]):
        if other.kind == BreakKind.CHANNELS and other.op == "add":
            main = next((side for side in other.sides if side.role == "up path"), None)
            if main is not None and (main.producer, main.channels) == (received.producer, received.channels):
                return earlier
    return index


def _cause(
    trace: Trace,
    axes: list[Axis],
    order: Misorder | None,
    key: Key,
    indices: tuple[int, ...],
    size_fix: Callable[[], list[Fix]],
) -> Cause | None:
    kind = key[0]
    first = trace.breaks[indices[0]]
    if kind == CauseKind.ORDER and order is not None:
        return Cause(CauseKind.ORDER, first.layer, order_text(trace, order), order_fixes(trace, order), indices)
    if kind == CauseKind.WRONG_LEVEL:
        return _wrong_level(trace, axes, first, indices)
    if kind in (CauseKind.ROUNDING, CauseKind.OUTPUT_PADDING):
        return _rounding(trace, axes, CauseKind(str(kind)), indices, size_fix)
    if kind == CauseKind.CHANNELS:
        return Cause(CauseKind.CHANNELS, first.leaf, first.cause, channel_fixes(trace, first), indices)
    fixes = tuple(Fix(text) for text in [first.fix] if text)
    cause_kind = CauseKind(str(kind)) if kind in (CauseKind.TOO_SMALL, CauseKind.INPUT_SIZE) else CauseKind.OTHER
    text = first.cause or _unpaired_sizes(trace, first)
    if trace.size_rule is not None and (first.op == "AssertionError" or first.kind == BreakKind.SIZE):
        # A size failure away from a merge: the sizes the model accepts, then (for a map that
        # shrank too far) fewer levels.
        fixes = (*size_fix(), *(fixes if cause_kind == CauseKind.TOO_SMALL else ()))
    return Cause(cause_kind, first.leaf, text, fixes, indices) if text else None


def _unpaired_sizes(trace: Trace, brk: Break) -> str:
    """The cause of a merge of two sizes where neither side is a skip (no level to blame)."""
    if brk.kind != BreakKind.SIZE or brk.op not in MERGE_OPS or len(brk.sides) < 2:
        return ""
    sizes = " and ".join(format_size(spatial(side.shape)) for side in brk.sides)
    return (
        f"{block_name(trace, brk.layer)} joins maps of {sizes}, neither a skip: one side does not follow "
        "the input size (a map of fixed size, a branch that shrinks on its own)"
    )


def _wrong_level(trace: Trace, axes: list[Axis], brk: Break, indices: tuple[int, ...]) -> Cause:
    pair = pair_of(trace, brk)
    main_side = next((side for side in brk.sides if side.role == "up path"), brk.sides[0])
    skip_side = next((side for side in brk.sides if side.role == "skip"), brk.sides[-1])
    partner = level_source(trace, axes, pair) if pair is not None else None
    scales = (intended_scale(trace, axes, pair), skip_scale(axes, pair)) if pair is not None else (None, None)
    resized = resized_from(axes, pair) if pair is not None else None
    text = level_text(trace, brk.layer, main_side, skip_side, *scales, resized_from=resized)
    skip_pair = trace.skips[pair] if pair is not None else None
    fixes = level_fixes(trace, skip_pair, _occurrence(trace, pair), partner)
    return Cause(CauseKind.WRONG_LEVEL, brk.layer, text, fixes, indices)


def _occurrence(trace: Trace, pair: int | None) -> int:
    """How many earlier pairs take a skip from the same source by the same kind of merge (the reroute counts uses)."""
    return 0 if pair is None else occurrence(trace, pair)


def _rounding(
    trace: Trace, axes: list[Axis], kind: CauseKind, indices: tuple[int, ...], size_fix: Callable[[], list[Fix]]
) -> Cause:
    rounded = _all_rounded(trace, axes, indices)
    first = trace.breaks[indices[0]]
    main = next((side for side in first.sides if side.role == "up path"), first.sides[0])
    skip = next((side for side in first.sides if side.role == "skip"), first.sides[-1])
    if kind == CauseKind.OUTPUT_PADDING:
        transposes = rounded.short_transposes
        text = transpose_text(trace, transposes)
        sizes = tuple(size_fix()) if trace.size_rule is not None else ()  # no size helps without a rule
        fixes = transpose_fixes(trace, transposes, missing_output_padding) + sizes
        return Cause(kind, transposes[0].layer, text, fixes, indices)
    text = rounding_text(trace, rounded.down, spatial(main.shape), spatial(skip.shape))
    unpadded = any(is_unpadded(record) for record in rounded.down)
    return Cause(kind, rounded.down[0].layer, text, rounding_fixes(size_fix(), unpadded), indices)


def _rounded(trace: Trace, axes: list[Axis], brk: Break) -> Rounded:
    """The inexact ops behind a merge break: from the chains, or where they cannot tell, from the
    records that rounded before it, when the two sides are close enough for rounding to explain."""
    pair = pair_of(trace, brk)
    rounded = rounded_between(axes, pair) if pair is not None else None
    if rounded is not None:
        return rounded
    main = next((side for side in brk.sides if side.role == SideRole.UP_PATH), None)
    skip = next((side for side in brk.sides if side.role == SideRole.SKIP), None)
    if main is None or skip is None or not _close(spatial(main.shape), spatial(skip.shape)):
        return Rounded((), ())
    before = [record for record in trace.resamplings if record.position <= brk.layer]
    inexact = [record for record in before if any(rounding(record, axis) for axis in range(len(record.input_size)))]
    short = [record for record in inexact if _short(record)]
    return Rounded(tuple(record for record in inexact if record not in short), tuple(short))


def _close(first: tuple[int, ...], second: tuple[int, ...]) -> bool:
    """Within a few rows of each other (224 against 225); a level apart is twice or half."""
    return len(first) == len(second) and all(max(a, b) < 1.5 * min(a, b) for a, b in zip(first, second, strict=True))


def _short(record: Resampling) -> bool:
    return any(missing_output_padding(record, axis) is not None for axis in range(len(record.input_size)))


def _all_rounded(trace: Trace, axes: list[Axis], indices: tuple[int, ...]) -> Rounded:
    down: list[Resampling] = []
    short: list[Resampling] = []
    for index in indices:
        rounded = _rounded(trace, axes, trace.breaks[index])
        down += [record for record in rounded.down if record not in down]
        short += [record for record in rounded.short_transposes if record not in short]
    return Rounded(_by_position(down), _by_position(short))


def _by_position(records: list[Resampling]) -> tuple[Resampling, ...]:
    return tuple(sorted(records, key=lambda record: record.position))
