"""Trace -> rich Tree: every call nested under its parent, to the display depth, with its skips
and its breaks marked as the table marks them."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from shapetrace.analysis.placement import ancestor_at, main_input
from shapetrace.formatting import describe_change, format_shape
from shapetrace.records import BROKEN, LayerRecord, Trace
from shapetrace.render.table import STATUS_STYLES, break_blocks, skip_notes, title, verdict


def trace_tree(trace: Trace, depth: int = 1) -> Tree:
    """The call tree: one node per call up to `depth`, with its shapes and what changed.

    Args:
        trace: the trace to show.
        depth: the deepest calls shown (1: the blocks the model's forward calls).

    Returns:
        The tree. A node that a skip leaves shows where it goes (`→ ups.9 64×224×224`), a node
        that takes one shows where it comes from (`← downs.1 64×224×224`), one line each; a
        node that holds a break is styled as the table styles a broken row.
    """
    root = Tree(Text(title(trace), style="bold"))
    notes = skip_notes(trace, depth)
    broken = {ancestor_at(trace.layers, brk.layer, depth) for brk in trace.breaks}
    nodes = {}
    for layer in trace.layers:
        if layer.depth == 0:
            nodes[layer.index] = root
            continue
        if layer.depth > depth or layer.parent not in nodes:
            continue
        status = BROKEN if layer.index in broken else layer.status
        label = _label(layer, STATUS_STYLES.get(status, ""))
        for note in notes.get(layer.index, ()):
            label.append(f"\n{note}")
        nodes[layer.index] = nodes[layer.parent].add(label)
    return root


def tree_report(trace: Trace, depth: int = 1) -> Group:
    """The tree, the verdict and the break explanations: what `--format tree` prints."""
    return Group(trace_tree(trace, depth), verdict(trace), *break_blocks(trace))


def _label(layer: LayerRecord, row_style: str) -> Text:
    """`name type input → output  (change)`: the name bold, the whole line in the row's style."""
    output = format_shape(layer.outputs[0]) if layer.outputs else "—"
    change = describe_change(main_input(layer), layer.outputs[0] if layer.outputs else ())
    label = Text(style=row_style)
    label.append(layer.name, style="bold")
    label.append(f" {layer.type} {format_shape(main_input(layer))} → {output}")
    if change:
        label.append(f"  ({change})", style="dim")
    return label
