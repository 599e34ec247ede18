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
    main_input,
    placements,
)
from shapetrace.analysis.size_rules import rule_text
from shapetrace.formatting import compact_shape, describe_change, format_shape, format_size
from shapetrace.records import BROKEN, DOWNSTREAM, FAILED, Break, Cause, LayerRecord, LayerStatus, Shape, Trace
from shapetrace.render.block_columns import BlockRow, Totals
from shapetrace.render.block_table import BlockTable
from shapetrace.render.columns import chosen_columns
from shapetrace.render.fast_table import FastTable

SIDE_STYLES = {DOWN: "cyan", MID: "magenta", UP: "green"}
STATUS_STYLES = {BROKEN: "bold red", DOWNSTREAM: "bright_black", FAILED: "red"}


def trace_table(trace: Trace, depth: int = BLOCK_DEPTH, columns: Sequence[str] | None = None) -> BlockTable | FastTable:
    """One row per call at the display depth, grouped down / mid / up, with a totals footer.

    Args:
        trace: the trace to show.
        depth: the display depth (1: the blocks the model's forward calls).
        columns: the columns after `#` and `layer`, by name (`shapetrace.render.columns`);
            None for the default set (with the cost columns when the trace has a cost).

    Returns:
        The default block table folds columns away as the console narrows (see block_table);
        chosen columns, or a trace with its cost, give one column per name.

    Raises:
        ValueError: for an unknown column name.
    """
    if columns is not None or trace.cost is not None:
        return _column_table(trace, depth, columns)
    rows = display_rows(trace, depth)
    where = placements(trace, rows)
    sides = [where[row.index].side for row in rows]
    notes = skip_notes(trace, depth)
    broken = {ancestor_at(trace.layers, brk.layer, depth) for brk in trace.breaks}
    block_rows = [
        _block_row(
            row,
            sides[number],
            BROKEN if row.index in broken else row.status,
            tuple(notes.get(row.index, ())),
            end_section=number + 1 < len(rows) and sides[number + 1] != sides[number],
        )
        for number, row in enumerate(rows)
    ]
    totals = Totals(
        compact_shape(_first(trace.inputs)), compact_shape(_first(trace.outputs)), f"{trace.total_params:,}"
    )
    return BlockTable(title(trace), verdict(trace), block_rows, totals)


def _column_table(trace: Trace, depth: int, columns: Sequence[str] | None) -> FastTable:
    """The table with one column per chosen name (`--columns`, or a trace with its cost)."""
    chosen = chosen_columns(trace, columns)
    rows = display_rows(trace, depth)
    where = placements(trace, rows)
    notes_by_row = skip_notes(trace, depth)
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
        notes = notes_by_row.get(row.index, ())
        table.add_row(
            str(row.index),
            name,
            *(column.cell(trace, row, notes) for column in chosen),
            style=STATUS_STYLES.get(status, ""),
        )
    return table


def _block_row(row: LayerRecord, side: str, status: LayerStatus, skips: tuple[str, ...], end_section: bool) -> BlockRow:
    output = _first(row.outputs)
    return BlockRow(
        index=row.index,
        indent="  " * (row.depth - 1),
        name=row.name or row.type,
        name_style=SIDE_STYLES.get(side, ""),
        type=row.type,
        input=compact_shape(main_input(row)),
        output=compact_shape(output) if row.outputs else "—",
        change=describe_change(main_input(row), output).replace("channels ", "ch ").replace("size ", ""),
        skips=skips,
        params=f"{row.params:,}",
        style=STATUS_STYLES.get(status, ""),
        end_section=end_section,
    )


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
        text += f"{format_shape(_first(trace.inputs))} → {_outputs(trace.outputs)}"
        return Text(text, style="bold green")
    count = len(trace.breaks)
    kinds = ", ".join(sorted({brk.kind for brk in trace.breaks}))
    first = block_name(trace, trace.breaks[0].layer)
    causes = len(trace.causes)
    from_causes = f", {causes} cause{'s' * (causes != 1)}" if causes else ""
    return Text(f"✗ {count} break{'s' * (count != 1)} ({kinds}){from_causes}; first at {first}", style="bold red")


def break_blocks(trace: Trace) -> list[RenderableType]:
    """Each cause once with the breaks it explains and its fixes, then the warnings and the size rule."""
    blocks: list[RenderableType] = []
    explained = {index for cause in trace.causes for index in cause.breaks}
    for number, cause in enumerate(trace.causes, start=1):
        blocks.append(_cause_block(trace, number, cause))
    for number, brk in enumerate(trace.breaks, start=1):
        if number - 1 not in explained:
            blocks.append(_break_block(trace, number, brk))
    for warning in trace.warnings:
        blocks.append(Text(f"warning: {warning.message}", style="yellow"))
    if trace.size_rule is not None:
        blocks.append(Text(f"size rule: {size_rule_text(trace)}"))
    return blocks


def _cause_block(trace: Trace, number: int, cause: Cause) -> Text:
    """ "cause 1 (rounding), 2 breaks", its text, each break on one line, each fix with its verdict."""
    count = len(cause.breaks)
    block = Text()
    block.append(f"cause {number} ({cause.kind}), {count} break{'s' * (count != 1)}\n", style="bold red")
    block.append(f"  {cause.text}\n")
    for index in cause.breaks:
        brk = trace.breaks[index]
        block.append(f"  break {index + 1} ({brk.kind}) at {block_name(trace, brk.layer)}\n", style="bold")
        block.append(f"    {brk.message}\n")
    for fix in cause.fixes:
        label = "  fix (verified):   " if fix.verified else "  fix (unverified): "
        block.append(label, style="bold green" if fix.verified else "bold")
        block.append(f"{fix.text}\n")
    block.rstrip()
    return block


def _break_block(trace: Trace, number: int, brk: Break) -> Text:
    """A break no cause explains (a trace written before causes were recorded)."""
    block = Text()
    block.append(f"break {number} ({brk.kind}) at {block_name(trace, brk.layer)}\n", style="bold red")
    block.append(f"  {brk.message}\n")
    if brk.cause:
        block.append("  cause: ", style="bold")
        block.append(f"{brk.cause}\n")
    if brk.fix:
        block.append("  fix:   ", style="bold")
        block.append(f"{brk.fix}")
    block.rstrip()
    return block


def size_rule_text(trace: Trace) -> str:
    """ "H and W multiples of 8, at least 8; nearest valid: 224, 232"."""
    rule = trace.size_rule
    if rule is None:
        return ""
    text = rule_text(rule) + ("" if rule.exact else " (probed, not read from the records)")
    image = next((shape for shape in trace.inputs if len(shape) >= 3), None)
    if image is not None and rule.nearest == (tuple(image[2:]),):
        return f"{text}; this size is valid"
    if rule.nearest:
        text += "; nearest valid: " + ", ".join(format_size(size) for size in rule.nearest)
    return text


def trace_report(trace: Trace, depth: int = BLOCK_DEPTH, columns: Sequence[str] | None = None) -> Group:
    """The table, the cost summary of a `--cost` trace, and the break explanations.

    What `shapetrace unet` prints; `columns` as for `trace_table`.
    """
    from shapetrace.render.cost_summary import cost_blocks

    return Group(trace_table(trace, depth, columns), *cost_blocks(trace), *break_blocks(trace))


def skip_notes(trace: Trace, depth: int = BLOCK_DEPTH) -> dict[int, list[str]]:
    """Per call at `depth`, where its skips go (`→ ups.9 64×224×224`) or come from (`← downs.1 …`)."""
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


def _outputs(shapes: tuple[Shape, ...]) -> str:
    """Every map the model returned (deep supervision returns one per level), else its first output."""
    maps = [shape for shape in shapes if len(shape) >= 3]
    return ", ".join(format_shape(shape) for shape in maps) if len(maps) > 1 else format_shape(_first(shapes))
