"""Whether the skips pair down and up in mirror order: last saved, first consumed.

A UNet consumes its skips last in, first out: the deepest saved map joins the first up
block. Two pairs cross when the one saved first is also consumed first (`skips.pop(0)`).
A merge is also out of order when the up path was resized to a skip of another resolution
than its own (`F.interpolate(x, size=skip.shape[2:])` after taking the wrong skip): every
shape then lines up and nothing else would tell. Reads only the records and the chains.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from shapetrace.analysis.chains import Axis
from shapetrace.records import ResamplingKind, Trace


@dataclass(frozen=True, slots=True)
class Misorder:
    """The skip pairs out of mirror order, and the source mirror order gives each."""

    pairs: tuple[int, ...]
    """Indices into Trace.skips."""
    mirror: dict[int, int]
    """Pair index -> the call whose output mirror order would join there."""
    resized: tuple[int, ...] = ()
    """The pairs whose up path was resized to a skip of another resolution."""
    crossing: tuple[int, ...] = ()
    """The pairs that cross another: saved first and consumed first."""


def misorder(trace: Trace, axes: list[Axis]) -> Misorder | None:
    """The pairs that cross or join another resolution through a resize; None when all are in order."""
    crossing = _crossing(trace)
    resized = _resized_from_other_level(trace, axes)
    blamed = sorted(set(crossing) | set(resized))
    if not blamed:
        return None
    return Misorder(tuple(blamed), _mirror(trace, blamed, axes), tuple(resized), tuple(crossing))


def _crossing(trace: Trace) -> list[int]:
    """Pairs consumed against mirror order: a finer skip before a coarser one, or, within one
    resolution, the skip saved first consumed first.

    Mirror order is read from the skips' resolutions before call order: an encoder's branches
    computed after its bottleneck (UNETR, SwinUNETR) are saved late but are still fine levels.
    Only skips consumed once count: a map joined twice while another level's goes unused is
    a skip of the wrong level, whatever the order.
    """
    pairs = trace.skips
    uses = Counter(pair.source for pair in pairs)
    found: set[int] = set()
    for first, a in enumerate(pairs):
        for second in range(first + 1, len(pairs)):
            b = pairs[second]
            if uses[a.source] > 1 or uses[b.source] > 1 or a.target == b.target:
                continue
            key_a, key_b = _mirror_key(trace, first), _mirror_key(trace, second)
            if key_a != key_b and (key_a < key_b) != (a.target < b.target):
                found.update((first, second))
    return sorted(found)


def _mirror_key(trace: Trace, pair: int) -> tuple[int, int]:
    """Where mirror order consumes a pair: coarser skips first, and within one resolution the
    last saved first (a source is saved when its call returns: an outer block after the
    inner calls it contains, although it began before them)."""
    skip = trace.skips[pair]
    saved = _end(trace, skip.source) if skip.source >= 0 else skip.source
    return _saved_area(trace, pair), -saved


def _saved_area(trace: Trace, pair: int) -> int:
    """The skip's resolution when it was saved: a centre crop (valid convs, Wave-U-Net) shrinks the
    map to the up path's size, which says nothing of its level once the up path shrinks too."""
    skip = trace.skips[pair]
    made = trace.layers[skip.source].outputs if skip.source >= 0 else ()
    cropped_from = [_area(shape) for shape in made if len(shape) == len(skip.shape) and shape[:2] == skip.shape[:2]]
    return max([_area(skip.shape), *cropped_from])


def _area(shape: tuple[int, ...]) -> int:
    area = 1
    for extent in shape[2:]:
        area *= extent
    return area


def _resized_from_other_level(trace: Trace, axes: list[Axis]) -> list[int]:
    """Pairs whose up path was resized to a skip of another level than the next one up.

    Interpolating to the skip's size may be the upsampler itself (`F.interpolate(x,
    size=skip.shape[2:])` from the level below); resizing to any other level's skip, or
    down to a smaller one, joins a level the up path is not at (out of order, or, for a
    skip joined twice while its neighbour level goes unused, a skip of the wrong level).
    """
    found = []
    for axis in axes:
        for constraint in axis.constraints:
            node = axis.nodes[constraint.main]
            if node.record is None or node.record.kind != ResamplingKind.RESIZE or node.alias != constraint.skip:
                continue
            before, skip = axis.scale(node.parent), axis.scale(constraint.skip)
            next_up = _next_level_up(trace, axis, before)
            if before and skip and skip not in (before, next_up) and constraint.pair not in found:
                found.append(constraint.pair)
    return sorted(found)


def _next_level_up(trace: Trace, axis: Axis, scale: Fraction) -> Fraction | None:
    """The finest-but-one resolution above `scale` that the down path works at, used as a skip or not.

    The down path is every op before the first merge that takes a skip; an unused level
    counts, so that a skip taken from the level above it is seen to skip it.
    """
    first_target = min((pair.target for pair in trace.skips), default=len(trace.layers))
    levels = {
        axis.scale(index)
        for index, node in enumerate(axis.nodes)
        if node.record is not None and node.record.kind != ResamplingKind.RESIZE and node.position < first_target
    }
    levels.add(Fraction(1))
    return min((level for level in levels if level > scale), default=None)


def intended_scale(trace: Trace, axes: list[Axis], pair: int) -> Fraction | None:
    """The scale of the level mirror pairing joins at `pair`: the up path's own.

    Where the up path is resized to the skip from a coarser scale, the resize is the
    upsampler itself, and the level it should join is the next one up from where it began.
    """
    for axis in axes:
        for constraint in axis.constraints:
            if constraint.pair != pair:
                continue
            node = axis.nodes[constraint.main]
            if node.record is None or node.record.kind != ResamplingKind.RESIZE:
                return axis.scale(constraint.main)
            before = axis.scale(node.parent)
            if not before or axis.scale(constraint.main) <= before:
                return before  # a resize that fixes rounding, or shrinks: the up path was at its level
            return _next_level_up(trace, axis, before) or before
    return None


def resized_from(axes: list[Axis], pair: int) -> tuple[int, ...] | None:
    """The up path's extents before it was resized to the skip at `pair`; None where it was not."""
    extents = []
    for axis in axes:
        constraint = next((c for c in axis.constraints if c.pair == pair), None)
        if constraint is None:
            return None
        node = axis.nodes[constraint.main]
        if node.record is None or node.record.kind != ResamplingKind.RESIZE:
            return None
        extents.append(axis.nodes[node.parent].value if node.parent >= 0 else node.value)
    return tuple(extents) or None


def _mirror(trace: Trace, blamed: list[int], axes: list[Axis]) -> dict[int, int]:
    """Mirror order among the blamed pairs' sources; by resolution where that gives none."""
    by_target = sorted(blamed, key=lambda index: (trace.skips[index].target, index))
    by_mirror = sorted(blamed, key=lambda index: _mirror_key(trace, index))
    sources = list(dict.fromkeys(trace.skips[index].source for index in by_mirror))
    if len(sources) == len(by_target):
        return dict(zip(by_target, sources, strict=True))
    return {index: source for index in blamed if (source := level_source(trace, axes, index)) is not None}


def skip_scale(axes: list[Axis], pair: int) -> Fraction | None:
    for axis in axes:
        for constraint in axis.constraints:
            if constraint.pair == pair:
                return axis.scale(constraint.skip)
    return None


def level_source(trace: Trace, axes: list[Axis], pair: int) -> int | None:
    """The call whose output a mirror pairing joins where `pair` joins: the down path at the up path's scale.

    Among the calls before the first merge, those whose input and output both work at that
    scale (a level's blocks, not the pool that enters it); a saved one first, else the last.
    """
    scale = intended_scale(trace, axes, pair)
    if scale is None or not axes:
        return None
    first_target = min(skip.target for skip in trace.skips)
    saved = {skip.source for skip in trace.skips}
    candidates = [index for index in range(1, first_target) if _works_at(trace, axes, index, scale)]
    preferred = [index for index in candidates if index in saved]
    chosen = preferred or candidates
    return chosen[-1] if chosen else None


def _works_at(trace: Trace, axes: list[Axis], index: int, scale: Fraction) -> bool:
    layer = trace.layers[index]
    if layer.depth != 1 or not layer.outputs or not layer.inputs:
        return False
    output, first = layer.outputs[0], layer.inputs[0]
    for axis in axes:
        if len(output) <= axis.dim or len(first) <= axis.dim:
            return False
        made = axis.find(output[axis.dim], _end(trace, index))
        given = axis.find(first[axis.dim], index)
        if made is None or given is None or axis.scale(made) != scale or axis.scale(given) != scale:
            return False
    return True


def _end(trace: Trace, index: int) -> int:
    depth = trace.layers[index].depth
    end = index + 1
    while end < len(trace.layers) and trace.layers[end].depth > depth:
        end += 1
    return end
