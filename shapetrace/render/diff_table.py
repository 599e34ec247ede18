"""TraceDiff -> a rich Table: the changed layers side by side, then the skips only one side has."""

from __future__ import annotations

from rich.table import Table

from shapetrace.analysis.diff import TraceDiff
from shapetrace.formatting import format_shape
from shapetrace.records import LayerRecord


def diff_table(diff: TraceDiff, before_label: str, after_label: str) -> Table:
    """The changed layers side by side, then the skips only one side has."""
    table = Table(title=f"{before_label} → {after_label}", title_justify="left")
    table.add_column("layer")
    table.add_column(f"{before_label}", style="red")
    table.add_column(f"{after_label}", style="green")
    for change in diff.layers:
        name = change.key[0] or "(model)"
        label = name if change.key[1] == 0 else f"{name} (call {change.key[1] + 1})"
        table.add_row(label, _describe(change.before), _describe(change.after))
    if diff.skips_removed or diff.skips_added:
        table.add_section()
        for line in diff.skips_removed:
            table.add_row("skip", line, "—")
        for line in diff.skips_added:
            table.add_row("skip", "—", line)
    return table


def _describe(layer: LayerRecord | None) -> str:
    if layer is None:
        return "—"
    inputs = " ".join(format_shape(shape) for shape in layer.inputs)
    outputs = " ".join(format_shape(shape) for shape in layer.outputs) or "—"
    return f"{layer.type} {inputs} → {outputs}"
