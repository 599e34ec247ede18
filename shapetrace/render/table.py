"""Trace -> rich renderables: the block table, the break explanations, the verdict.

Pure functions: they return renderables and never print.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text

from shapetrace.analysis.placement import (
    BLOCK_DEPTH,
    DOWN,
    MID,
    UP,
    ancestor_at,
    block_name,
    display_rows,
    placements,
)
from shapetrace.formatting import compact_shape, format_shape
from shapetrace.records import BROKEN, DOWNSTREAM, FAILED, Shape, Trace
from shapetrace.render.columns import chosen_columns
from shapetrace.render.fast_table import FastTable

SIDE_STYLES = {DOWN: "cyan", MID: "magenta", UP: "green"}
STATUS_STYLES = {BROKEN: "bold red", DOWNSTREAM: "bright_black", FAILED: "red"}


def trace_table(trace: Trace, depth: int = BLOCK_DEPTH, columns: Sequence[str] | None = None) -> FastTable:
    """One row per call at the display depth, grouped down / mid / up, with a totals footer.

    Args:
        trace: the trace to show.
        depth: display depth.
        columns: the columns after `#` and `layer`, by name (`shapetrace.render.columns`);
            None for the default set (with the cost columns when the trace has a cost).

    Raises:
        ValueError: for an unknown column name.
    """
    chosen = chosen_columns(trace, columns)
    rows = display_rows(trace, depth)
    where = placements(trace, rows)
    skip_notes = _skip_notes(trace, depth)
    broken = {ancestor_at(trace.layers, brk.layer, depth) for brk in trace.breaks}
    table = FastTable(title=title(trace), caption=verdict(trace))
    table.add_column("#", justify="right", footer="", no_wrap=True)
    table.add_column("layer", footer="total", overflow="fold")
    for column in chosen:
        table.add_column(
            column.header,
            footer=column.footer(trace),
            justify=column.justify,
            overflow=column.overflow,
            no_wrap=column.no_wrap,
        )
    previous_side = None
    for row in rows:
        side = where[row.index].side
        if previous_side is not None and side != previous_side:
            table.add_section()
        previous_side = side
        status = BROKEN if row.index in broken else row.status
        name = Text("  " * (row.depth - 1) + (row.name or row.type), style=SIDE_STYLES.get(side, ""))
        notes = skip_notes.get(row.index, ())
        table.add_row(
            str(row.index),
            name,
            *(column.cell(trace, row, notes) for column in chosen),
            style=STATUS_STYLES.get(status, ""),
        )
    return table


def title(trace: Trace) -> str:
    """Model, input shapes (the batch shown once, here), device and config."""
    inputs = " ".join(format_shape(shape) for shape in trace.inputs)
    config = "".join(f" · {key} {value}" for key, value in trace.config)
    return f"{trace.model} · input {inputs} · device {trace.device}{config}"


def verdict(trace: Trace) -> Text:
    """The one-line verdict under the table."""
    if trace.ok:
        skips = len(trace.skips)
        text = f"✓ aligned: {skips} skip{'s' * (skips != 1)} pair down and up; "
        text += f"{format_shape(_first(trace.inputs))} → {format_shape(_first(trace.outputs))}"
        return Text(text, style="bold green")
    count = len(trace.breaks)
    kinds = ", ".join(sorted({brk.kind for brk in trace.breaks}))
    first = block_name(trace, trace.breaks[0].layer)
    return Text(f"✗ {count} break{'s' * (count != 1)} ({kinds}); first at {first}", style="bold red")


def break_blocks(trace: Trace) -> list[RenderableType]:
    """A short explanation per break, and the warnings, for under the table."""
    blocks: list[RenderableType] = []
    for number, brk in enumerate(trace.breaks, start=1):
        block = Text()
        block.append(f"break {number} ({brk.kind}) at {block_name(trace, brk.layer)}\n", style="bold red")
        block.append(f"  {brk.message}\n")
        if brk.cause:
            block.append("  cause: ", style="bold")
            block.append(f"{brk.cause}\n")
        if brk.fix:
            block.append("  fix:   ", style="bold")
            block.append(f"{brk.fix}")
        blocks.append(block)
    for warning in trace.warnings:
        blocks.append(Text(f"warning: {warning.message}", style="yellow"))
    if trace.size_rule is not None:
        rule = trace.size_rule
        nearest = ", ".join(str(size) for size in rule.nearest)
        blocks.append(
            Text(f"size rule: H and W multiples of {rule.multiple}, at least {rule.minimum}; nearest valid: {nearest}")
        )
    return blocks


def trace_report(trace: Trace, depth: int = BLOCK_DEPTH, columns: Sequence[str] | None = None) -> Group:
    """The table, the cost summary of a `--cost` trace, and the break explanations.

    What `shapetrace unet` prints; `columns` as for `trace_table`.
    """
    from shapetrace.render.cost_summary import cost_blocks

    return Group(trace_table(trace, depth, columns), *cost_blocks(trace), *break_blocks(trace))


def _skip_notes(trace: Trace, depth: int) -> dict[int, list[str]]:
    notes: dict[int, list[str]] = {}
    for skip in trace.skips:
        source = ancestor_at(trace.layers, skip.source, depth)
        target = ancestor_at(trace.layers, skip.target, depth)
        size = compact_shape(skip.shape)
        notes.setdefault(source, []).append(f"→ {block_name(trace, target, depth)} {size}")
        notes.setdefault(target, []).append(f"← {block_name(trace, source, depth)} {size}")
    return notes


def _first(shapes: tuple[Shape, ...]) -> Shape:
    return shapes[0] if shapes else ()
