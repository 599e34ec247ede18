"""What a Trace means as a U: display rows, sides, levels and names. Reads records only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shapetrace.records import LayerRecord, Shape, Trace

DOWN, MID, UP, CHAIN = "down", "mid", "up", "chain"
BLOCK_DEPTH = 1
"""The calls the model's own forward makes: children of the model and of its ModuleLists."""


def ancestor_at(layers: Sequence[LayerRecord], index: int, depth: int) -> int:
    """The enclosing call of `index` at `depth` (itself when it is that shallow already)."""
    if index < 0:
        return index
    layer = layers[index]
    while layer.depth > depth and layer.parent is not None:
        layer = layers[layer.parent]
    return layer.index


def block_name(trace: Trace, index: int, depth: int = BLOCK_DEPTH) -> str:
    """A producer or consumer named at the display depth ("ups.8"); "input" for model inputs."""
    if index < 0:
        return "input"
    layer = trace.layers[ancestor_at(trace.layers, index, depth)]
    return layer.name or layer.type


def skip_source_name(trace: Trace, index: int) -> str:
    """A skip's producer at the display depth, or deeper where one block makes several skips.

    An encoder that returns every stage's features from one forward (`features = encoder(x)`)
    would otherwise name each skip "encoder"; its stages are named instead ("encoder.stages.1").
    """
    if index < 0:
        return "input"
    sources = {pair.source for pair in trace.skips if pair.source >= 0} | {index}
    deepest = max((layer.depth for layer in trace.layers), default=BLOCK_DEPTH)
    for depth in range(BLOCK_DEPTH, deepest + 1):
        named: dict[str, int] = {}
        if all(named.setdefault(block_name(trace, source, depth), source) == source for source in sources):
            return block_name(trace, index, depth)
    return full_name(trace, index)


def full_name(trace: Trace, index: int) -> str:
    if index < 0:
        return "input"
    layer = trace.layers[index]
    return layer.name or layer.type


def display_rows(trace: Trace, depth: int = BLOCK_DEPTH) -> list[LayerRecord]:
    """The calls shown at `depth`: every call from depth 1 to `depth`, in call order."""
    if len(trace.layers) == 1:
        return list(trace.layers)
    return [layer for layer in trace.layers if 1 <= layer.depth <= depth]


def spatial(shape: Shape) -> Shape:
    """The spatial part of an activation shape (B, C, *spatial); () for vectors."""
    return shape[2:] if len(shape) >= 3 else ()


def main_input(layer: LayerRecord) -> Shape:
    """The first input with spatial dimensions, else the first input."""
    for shape in layer.inputs:
        if spatial(shape):
            return shape
    return layer.inputs[0] if layer.inputs else ()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a display row sits in the U."""

    side: str
    """DOWN, MID, UP, or CHAIN for models without skips."""
    level: int
    """0 for the input resolution, growing as the size shrinks; -1 without spatial dims."""


def placements(trace: Trace, rows: Sequence[LayerRecord]) -> dict[int, Placement]:
    """Side and level of each row: down up to the last skip source, up from the first target."""
    # Sides are decided per block; a deeper row takes the side of the block it runs in.
    sources = [ancestor_at(trace.layers, skip.source, BLOCK_DEPTH) for skip in trace.skips]
    targets = [ancestor_at(trace.layers, skip.target, BLOCK_DEPTH) for skip in trace.skips]
    sizes = sorted({_area(spatial(main_input(row))) for row in rows if spatial(main_input(row))}, reverse=True)
    levels = {size: level for level, size in enumerate(sizes)}
    last_source = max(sources, default=-1)
    first_target = min(targets, default=-1)
    result = {}
    for row in rows:
        size = spatial(main_input(row))
        level = levels[_area(size)] if size else -1
        block = ancestor_at(trace.layers, row.index, BLOCK_DEPTH)
        if not sources:
            side = CHAIN
        elif block <= last_source and block < first_target:
            side = DOWN
        elif block >= first_target:
            side = UP
        else:
            side = MID
        result[row.index] = Placement(side, level)
    return result


def _area(size: Shape) -> int:
    area = 1
    for extent in size:
        area *= extent
    return area
