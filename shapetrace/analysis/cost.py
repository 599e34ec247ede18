"""The cost of each level of the U, read from a Trace's per-layer costs and its placements.

A level is the display rows (the calls of the model's own forward) at one resolution on one
side: down k, the mid, up k. Its FLOPs, saved bytes and parameters sum its rows' (a row's
include its parts'); its activation bytes sum the outputs of the leaf calls inside its rows;
a down level also holds the bytes of its skips across the bottleneck, until the up path
takes them back. Rows without a spatial size (the timestep embedding) belong to no level.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from shapetrace.analysis.placement import (
    BLOCK_DEPTH,
    DOWN,
    MID,
    UP,
    Placement,
    ancestor_at,
    display_rows,
    main_input,
    placements,
    spatial,
)
from shapetrace.records import LayerCost, LevelCost, Trace

SIDES = (DOWN, MID, UP)
ITEM_SIZES = {
    "float64": 8,
    "complex64": 8,
    "int64": 8,
    "float32": 4,
    "int32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
"""Bytes per element of the dtypes a LayerCost names (float32 where unknown)."""


def with_levels(trace: Trace) -> Trace:
    """The trace with `cost.levels` filled; unchanged without a cost."""
    if trace.cost is None:
        return trace
    return dataclasses.replace(trace, cost=dataclasses.replace(trace.cost, levels=cost_levels(trace)))


def cost_levels(trace: Trace) -> tuple[LevelCost, ...]:
    """One LevelCost per (side, level) of the U, in the order the forward reaches them."""
    if trace.cost is None or len(trace.cost.layers) != len(trace.layers):
        return ()
    costs = trace.cost.layers
    rows = display_rows(trace, BLOCK_DEPTH)
    where = placements(trace, rows)
    activations = _leaf_outputs_by_block(trace, costs)
    levels: dict[tuple[str, int], LevelCost] = {}
    for row in rows:
        place = where[row.index]
        if place.side not in SIDES or place.level < 0:
            continue
        cost = costs[row.index]
        key = (place.side, place.level)
        level = levels.get(key) or LevelCost(place.level, place.side, spatial(main_input(row)), 0, 0, 0, 0)
        levels[key] = dataclasses.replace(
            level,
            flops=level.flops + cost.flops,
            activation_bytes=level.activation_bytes + activations.get(row.index, 0),
            saved_bytes=level.saved_bytes + cost.saved_bytes,
            params=level.params + cost.trainable_params + cost.frozen_params,
            attention_tokens=max(level.attention_tokens, cost.attention_tokens),
            attention_flops=level.attention_flops + cost.attention_flops,
        )
    for (side, level_index), skip_bytes in _held_skips(trace, where, costs).items():
        if (side, level_index) in levels:
            level = levels[side, level_index]
            levels[side, level_index] = dataclasses.replace(level, skip_bytes=level.skip_bytes + skip_bytes)
    return tuple(levels.values())


def _leaf_outputs_by_block(trace: Trace, costs: Sequence[LayerCost]) -> dict[int, int]:
    """Bytes of the outputs of the leaf calls (calls without children) inside each block."""
    parents = {layer.parent for layer in trace.layers}
    found: dict[int, int] = {}
    for layer in trace.layers:
        if layer.index not in parents and layer.depth >= BLOCK_DEPTH:
            block = ancestor_at(trace.layers, layer.index, BLOCK_DEPTH)
            found[block] = found.get(block, 0) + costs[layer.index].output_bytes
    return found


def _held_skips(trace: Trace, where: Mapping[int, Placement], costs: Sequence[LayerCost]) -> dict[tuple[str, int], int]:
    """Bytes of each skip from a down level to an up level, charged to its down level."""
    held: dict[tuple[str, int], int] = {}
    for skip in trace.skips:
        source = where.get(ancestor_at(trace.layers, skip.source, BLOCK_DEPTH))
        target = where.get(ancestor_at(trace.layers, skip.target, BLOCK_DEPTH))
        if source is None or target is None or source.side != DOWN or target.side != UP:
            continue
        key = (DOWN, source.level)
        held[key] = held.get(key, 0) + math.prod(skip.shape) * element_size(costs[skip.source].dtype)
    return held


def element_size(dtype: str) -> int:
    """Bytes per element of a dtype named as in a LayerCost ("float16")."""
    return ITEM_SIZES.get(dtype, 4)
