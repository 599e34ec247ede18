"""The layer table of the HTML report: one <tr> per call, every depth, the deeper ones hidden.

The page's depth control and filter only show and hide rows, so the table is written once,
here, with the same cells as the terminal table; cost columns appear when the trace's JSON has
them (`flops`, `output_bytes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shapetrace.analysis.placement import ancestor_at, display_rows, main_input, placements
from shapetrace.formatting import compact_shape, describe_change
from shapetrace.records import DOWNSTREAM, FAILED, LayerRecord, Trace
from shapetrace.render.html_page import attribute, escape

__all__ = ["COST_COLUMNS", "layer_table", "max_depth"]

COST_COLUMNS = {"flops": "FLOPs", "output_bytes": "output bytes"}
"""Per-layer cost fields of the JSON schema, shown as columns when the trace has them."""
_LABELS = ("layer", "type", "input", "output", "change", "skip")


def max_depth(trace: Trace) -> int:
    """The deepest call's depth, at least 1."""
    return max((layer.depth for layer in trace.layers), default=1) or 1


def layer_table(trace: Trace, layers_json: Sequence[Mapping[str, Any]], depth: int) -> str:
    """The table element: calls deeper than `depth` carry `hidden`.

    Args:
        trace: the trace whose calls are the rows.
        layers_json: the trace's layers as its JSON has them (for the optional cost fields).
        depth: the display depth shown first.

    Returns:
        HTML of a `<table id="layers">`.
    """
    rows = display_rows(trace, max_depth(trace))
    where = placements(trace, rows)
    notes = _skip_notes(trace)
    broken = {ancestor for brk in trace.breaks for ancestor in _chain(trace, brk.layer)}
    costs = [key for key in COST_COLUMNS if any(key in layer for layer in layers_json)]
    head = '<th class="num">#</th>' + "".join(f"<th>{label}</th>" for label in _LABELS)
    head += '<th class="num">params</th>' + "".join(f'<th class="num">{COST_COLUMNS[key]}</th>' for key in costs)
    body = []
    previous_side = None
    for row in rows:
        side = where[row.index].side
        classes = [f"side-{side}"]
        if previous_side is not None and side != previous_side and row.depth == 1:
            classes.append("section")  # a rule between the down path, the bottleneck and the up path
        previous_side = side if row.depth == 1 else previous_side
        if row.index in broken:
            classes.append("broken")
        elif row.status in (DOWNSTREAM, FAILED):
            classes.append(str(row.status))
        cost_cells = [_cost_cell(layers_json[row.index].get(key)) for key in costs]
        body.append(_row(row, classes, notes.get(row.index, []), cost_cells, hidden=row.depth > depth))
    total = f'<tr><td></td><td>total</td><td></td><td class="shape">{escape(_first_shape(trace.inputs))}</td>'
    total += f'<td class="shape">{escape(_first_shape(trace.outputs))}</td><td></td><td></td>'
    total += f'<td class="num">{trace.total_params:,}</td>'
    total += "".join(f'<td class="num">{_cost_cell(layers_json[0].get(key))}</td>' for key in costs) + "</tr>"
    return (
        f'<table id="layers"><thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + f"\n</tbody>\n<tfoot>{total}</tfoot></table>"
    )


def _row(row: LayerRecord, classes: Sequence[str], notes: Sequence[str], costs: Sequence[str], *, hidden: bool) -> str:
    """One call's <tr>: its name and type as data for the filter, its depth for the depth control."""
    name = row.name or row.type
    output = compact_shape(row.outputs[0]) if row.outputs else "—"
    change = describe_change(main_input(row), row.outputs[0] if row.outputs else ())
    cells = [
        f'<td class="num">{row.index}</td>',
        f'<td style="padding-left:{10 + 14 * (row.depth - 1)}px">{escape(name)}</td>',
        f"<td>{escape(row.type)}</td>",
        f'<td class="shape">{escape(compact_shape(main_input(row)))}</td>',
        f'<td class="shape">{escape(output)}</td>',
        f"<td>{escape(change.replace('channels ', 'ch ').replace('size ', ''))}</td>",
        f'<td class="skip">{escape(chr(10).join(notes))}</td>',
        f'<td class="num">{row.params:,}</td>',
        *(f'<td class="num">{cell}</td>' for cell in costs),
    ]
    return (
        f'<tr class="{" ".join(classes)}" data-index="{row.index}" data-depth="{row.depth}" '
        f'data-name="{attribute(name)}" data-type="{attribute(row.type)}"{" hidden" if hidden else ""}>'
        f"{''.join(cells)}</tr>"
    )


def _chain(trace: Trace, index: int) -> list[int]:
    """`index` and its enclosing calls."""
    chain = []
    parent: int | None = index
    while parent is not None and 0 <= parent < len(trace.layers):
        chain.append(parent)
        parent = trace.layers[parent].parent
    return chain


def _skip_notes(trace: Trace) -> dict[int, list[str]]:
    """ "→ ups.9 64×225×225" on each call that holds a skip's source, "←" on its target, per depth."""
    notes: dict[int, list[str]] = {}
    for skip in trace.skips:
        size = compact_shape(skip.shape)
        for depth in range(1, max_depth(trace) + 1):
            source = ancestor_at(trace.layers, skip.source, depth)
            target = ancestor_at(trace.layers, skip.target, depth)
            if source == target or source < 0:
                continue
            for index, note in (
                (source, f"→ {_name(trace, target)} {size}"),
                (target, f"← {_name(trace, source)} {size}"),
            ):
                if note not in notes.setdefault(index, []):
                    notes[index].append(note)
    return notes


def _name(trace: Trace, index: int) -> str:
    layer = trace.layers[index]
    return layer.name or layer.type


def _first_shape(shapes: Sequence[Sequence[int]]) -> str:
    return compact_shape(shapes[0]) if shapes else "—"


def _cost_cell(value: object) -> str:
    if isinstance(value, int | float):
        return escape(_scaled(float(value)))
    return "" if value is None else escape(value)


def _scaled(value: float) -> str:
    for size, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.2f} {prefix}"
    return f"{value:g}"
