"""Trace -> rich Tree: every call nested under its parent, to the display depth."""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from shapetrace.analysis.placement import main_input
from shapetrace.formatting import describe_change, format_shape
from shapetrace.records import Trace
from shapetrace.render.table import STATUS_STYLES, title


def trace_tree(trace: Trace, depth: int = 1) -> Tree:
    """The call tree: one node per call up to `depth`, with its shapes and what changed."""
    root = Tree(Text(title(trace), style="bold"))
    nodes = {}
    for layer in trace.layers:
        if layer.depth == 0:
            nodes[layer.index] = root
            continue
        if layer.depth > depth or layer.parent not in nodes:
            continue
        output = format_shape(layer.outputs[0]) if layer.outputs else "—"
        change = describe_change(main_input(layer), layer.outputs[0] if layer.outputs else ())
        label = Text(f"{layer.name} ", style=STATUS_STYLES.get(layer.status, "bold"))
        label.append(f"{layer.type} {format_shape(main_input(layer))} → {output}", style="")
        if change:
            label.append(f"  ({change})", style="dim")
        nodes[layer.index] = nodes[layer.parent].add(label)
    return root
