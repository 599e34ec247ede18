"""Where the DOT diagram puts each drawn row: the rows, the arms of the U, the rungs between them.

`shapetrace.dot` draws what this decides. The down path descends on the left, the bottleneck
lies along the bottom and the up path climbs on the right; each skip becomes a rung between a
down node and an up node, and the rungs that nest like the arms of a U are drawn flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from shapetrace.analysis import placement as analysis
from shapetrace.analysis.placement import CHAIN, DOWN, MID, UP
from shapetrace.records import LayerRecord, Shape, Trace


@dataclass(frozen=True, slots=True)
class Layout:
    """Which rows are drawn and where each one sits in the U."""

    rows: tuple[LayerRecord, ...]
    lead: tuple[LayerRecord, ...]
    """Rows without spatial input before the first spatial row: the timestep embedding."""
    main: tuple[LayerRecord, ...]
    """Every other row, in call order: the path the solid edges follow."""
    sides: dict[int, str]
    right: frozenset[int]
    """Rows on the climbing arm: the up path and the second half of the bottleneck."""
    bottom: tuple[int, int] | None
    """The flat edge across the bottom of the U, between the two halves of the bottleneck."""
    rungs: dict[tuple[int, int], list[Shape]]
    """(down node, up node) -> the skipped shapes; empty for a chain."""
    pinned: frozenset[tuple[int, int]]
    """The rungs drawn flat: at most one per node, nested like the arms of a U."""
    inputs: tuple[Shape, ...]


def layout_of(trace: Trace, depth: int) -> Layout:
    """The drawn rows of `trace` at `depth` and their places in the U."""
    rows = tuple(_frontier(trace, depth))
    first = next((position for position, row in enumerate(rows) if analysis.spatial(analysis.main_input(row))), 0)
    rungs = _rungs(trace, rows, depth)
    lead, main = (rows[:first], rows[first:]) if rungs else ((), rows)
    sides = _sides(main, rungs)
    middle = [row.index for row in main if sides[row.index] == MID]
    # The bottleneck splits in two halves joined by one flat edge, so any length of it keeps the U.
    half = math.ceil(len(middle) / 2)
    right = frozenset(index for index, side in sides.items() if side == UP) | frozenset(middle[half:])
    bottom = (middle[half - 1], middle[half]) if len(middle) >= 2 else None
    return Layout(rows, lead, main, sides, right, bottom, rungs, _pinned(rungs), trace.inputs)


def _frontier(trace: Trace, depth: int) -> list[LayerRecord]:
    """The display rows without displayed children: a parent and its parts never both show."""
    rows = analysis.display_rows(trace, depth)
    shown = {row.index for row in rows}
    parents = {row.parent for row in rows if row.parent in shown}
    return [row for row in rows if row.index not in parents]


def _sides(main: Sequence[LayerRecord], rungs: dict[tuple[int, int], list[Shape]]) -> dict[int, str]:
    """Down up to the last rung source, up from the first rung target, mid between.

    The rule of `analysis.placements`, applied to the drawn rung ends, so that it also holds
    when a deeper display depth splits a skip's block into parts.
    """
    if not rungs:
        return {row.index: CHAIN for row in main}
    last_source = max(source for source, _ in rungs)
    first_target = min(target for _, target in rungs)
    sides = {}
    for row in main:
        if row.index >= first_target:
            sides[row.index] = UP
        else:
            sides[row.index] = DOWN if row.index <= last_source else MID
    return sides


def _rungs(trace: Trace, rows: Sequence[LayerRecord], depth: int) -> dict[tuple[int, int], list[Shape]]:
    """Each skip lifted to the drawn nodes it joins; a skip inside one node is no rung."""
    drawn = {row.index for row in rows}
    rungs: dict[tuple[int, int], list[Shape]] = {}
    for skip in trace.skips:
        source = node_of(trace, drawn, skip.source, depth, last=True)
        target = node_of(trace, drawn, skip.target, depth, last=False)
        if source is None or target is None or source >= target:
            continue
        shapes = rungs.setdefault((source, target), [])
        if skip.shape not in shapes:
            shapes.append(skip.shape)
    return rungs


def _pinned(rungs: dict[tuple[int, int], list[Shape]]) -> frozenset[tuple[int, int]]:
    """The rungs to draw flat, innermost first, each node on one rung and no two rungs crossing.

    A down block may feed two up blocks (diffusers pairs them across blocks); pinning every rung
    would chain them all onto one rank. The rest are drawn as slanted dashed edges. Taken from
    the shortest span up, a rung nests with every pinned rung only if it encloses them all, so
    the innermost source and outermost target pinned so far decide.
    """
    pinned: list[tuple[int, int]] = []
    innermost_source, outermost_target = math.inf, -math.inf
    for source, target in sorted(rungs, key=lambda rung: (rung[1] - rung[0], rung)):
        if source < innermost_source and target > outermost_target:
            pinned.append((source, target))
            innermost_source, outermost_target = source, target
    return frozenset(pinned)


def node_of(trace: Trace, drawn: set[int], index: int, depth: int, *, last: bool) -> int | None:
    """The drawn node holding call `index`; a parent shown as parts maps to its last or first part."""
    if not 0 <= index < len(trace.layers):
        return None
    ancestor = analysis.ancestor_at(trace.layers, index, depth)
    if ancestor in drawn:
        return ancestor
    if trace.layers[ancestor].parent is None:
        return None  # the model itself: no single node stands for it
    parts = sorted(node for node in drawn if _descends(trace, node, ancestor))
    if not parts:
        return None
    return parts[-1] if last else parts[0]


def _descends(trace: Trace, index: int, ancestor: int) -> bool:
    parent = trace.layers[index].parent
    while parent is not None:
        if parent == ancestor:
            return True
        parent = trace.layers[parent].parent
    return False
