"""The cost lines of the U diagram: each node's FLOPs and saved bytes, each level's totals.

A `--cost` trace's diagram gives every node one more line, and the first node of each level
of the U (down k, the mid, up k) a line with that level's FLOPs and memory: the activations
its layers make, what training saves there, and the skips a down level holds across the
bottleneck. `shapetrace.render.dot` places the lines; this module only words them.
"""

from __future__ import annotations

from shapetrace.analysis.placement import BLOCK_DEPTH, display_rows, placements
from shapetrace.formatting import format_bytes, format_count, format_size
from shapetrace.records import LevelCost, Trace
from shapetrace.render.dot_layout import Layout, node_of


def node_cost(trace: Trace, index: int) -> str:
    """ "3.70 GFLOPs · saved 9.63 MB" for one drawn row; "" without a cost."""
    if trace.cost is None or index >= len(trace.cost.layers):
        return ""
    cost = trace.cost.layers[index]
    return f"{format_count(cost.flops)}FLOPs · saved {format_bytes(cost.saved_bytes)}"


def level_notes(trace: Trace, layout: Layout, depth: int) -> dict[int, str]:
    """The level line of each level, by the drawn node where the level begins."""
    if trace.cost is None or not trace.cost.levels:
        return {}
    rows = display_rows(trace, BLOCK_DEPTH)
    where = placements(trace, rows)
    drawn = {row.index for row in layout.rows}
    notes: dict[int, str] = {}
    for level in trace.cost.levels:
        first = next(
            (row.index for row in rows if (where[row.index].side, where[row.index].level) == (level.side, level.level)),
            None,
        )
        node = None if first is None else node_of(trace, drawn, first, depth, last=False)
        if node is not None and node not in notes:
            notes[node] = level_text(level)
    return notes


def level_text(level: LevelCost) -> str:
    """ "down 0 · 224 · 37.3 GFLOPs · act 417 MB · saved 361 MB · skips 51.4 MB"."""
    name = level.side if level.side == "mid" else f"{level.side} {level.level}"
    parts = [name, format_size(level.size), f"{format_count(level.flops)}FLOPs"]
    parts += [f"act {format_bytes(level.activation_bytes)}", f"saved {format_bytes(level.saved_bytes)}"]
    if level.skip_bytes:
        parts.append(f"skips {format_bytes(level.skip_bytes)}")
    if level.attention_tokens:
        parts.append(f"attention {level.attention_tokens:,} tokens {format_count(level.attention_flops)}FLOPs")
    return " · ".join(parts)
