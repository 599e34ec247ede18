"""Trace -> one self-contained, interactive HTML page: the U, the causes, the details, the table.

Everything is inline (the SVG, the CSS, the JS and the trace as JSON), so the file opens offline
and loads nothing. Pure functions: they return text and never write it.

DOM hooks that tests and users' scripts rely on: each drawn layer's `<g data-layer="NAME">`,
the classes `selected` and `partner` a click sets, `#details`, `#causes`, the `<table
id="layers">` with one `<tr data-index>` per call, and the filter `<input id="filter">`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shapetrace import jsonio
from shapetrace.analysis.placement import BLOCK_DEPTH
from shapetrace.formatting import format_shape
from shapetrace.records import Break, Trace
from shapetrace.render.dot import trace_dot
from shapetrace.render.dot_layout import Layout, layout_of, node_of
from shapetrace.render.html_diagram import annotate_svg, legend
from shapetrace.render.html_page import attribute, escape, json_script, page
from shapetrace.render.html_table import layer_table, max_depth
from shapetrace.render.images import GraphvizMissingError, render_svg
from shapetrace.render.table import verdict

__all__ = ["notebook_html", "trace_html"]

NOTEBOOK_HEIGHT = 760
"""Pixels: a notebook cell shows the report in a frame this tall, as wide as the cell."""


def trace_html(trace: Trace, depth: int = BLOCK_DEPTH) -> str:
    """The trace as one self-contained HTML page.

    Args:
        trace: the trace to show.
        depth: display depth of the diagram and of the table's first view.

    Returns:
        The page's text. Without Graphviz's `dot` the page says so in place of the diagram.

    Raises:
        ValueError: if depth is below 1.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1: depth={depth}")
    data = jsonio.to_dict(trace)
    layout = layout_of(trace, depth)
    body = "\n".join(
        [
            _header(trace, data),
            '<main class="layout">',
            _diagram(trace, layout, depth),
            '<aside id="panel">',
            _causes(trace),
            '<section id="details"><h2>Details</h2>'
            '<p class="hint">Click a block in the diagram, a row of the table or a break to see its record.</p>'
            "</section>",
            "</aside>",
            _table_section(trace, data, depth),
            "</main>",
            json_script("trace-data", {"trace": data, "view": _view(trace, layout, depth)}),
        ]
    )
    return page(f"shapetrace · {trace.model}", body, scripts=("report.js",))


def notebook_html(trace: Trace, depth: int = BLOCK_DEPTH, height: int = NOTEBOOK_HEIGHT) -> str:
    """The same report in a frame as wide as a notebook cell, its scripts and styles kept inside.

    Args:
        trace: the trace to show.
        depth: display depth, as for `trace_html`.
        height: the frame's height in pixels; the report scrolls inside it.

    Returns:
        An `<iframe srcdoc=...>` element, for `Trace._repr_html_`.
    """
    report = trace_html(trace, depth)
    return (
        f'<iframe srcdoc="{attribute(report)}" sandbox="allow-scripts" title="shapetrace report of '
        f'{attribute(trace.model)}" style="box-sizing:border-box;width:100%;height:{height}px;border:1px solid #d0d4da;'
        'border-radius:4px"></iframe>'
    )


def _header(trace: Trace, data: Mapping[str, Any]) -> str:
    inputs = " ".join(format_shape(shape) for shape in trace.inputs) or "none"
    facts = [f"input {inputs}", f"device {trace.device}", *(f"{key} {value}" for key, value in trace.config)]
    facts.append(f"{trace.total_params:,} params")
    state = "ok" if trace.ok else "bad"
    lines = [
        "<header>",
        f"<h1>{escape(trace.model)}</h1>",
        f'<div class="facts">{escape(" · ".join(facts))}</div>',
        f'<p class="verdict {state}" id="verdict">{escape(verdict(trace).plain)}</p>',
    ]
    cost = data.get("cost")
    if isinstance(cost, Mapping):
        lines.append(f'<div class="facts" id="cost">{escape(_cost_line(cost))}</div>')
    lines.append("</header>")
    return "\n".join(lines)


def _cost_line(cost: Mapping[str, Any]) -> str:
    """The whole-model cost figures the JSON has, in order, scaled: "flops 1.20 T · …"."""
    parts = []
    for key, value in cost.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            unit = "B" if key.endswith("bytes") else ""
            parts.append(f"{key.replace('_', ' ')} {_scaled(value)}{unit}")
    budget = cost.get("budget")
    if isinstance(budget, Mapping):
        fits = "fits" if budget.get("fits") else "does not fit"
        parts.append(f"budget {_scaled(budget.get('bytes', 0))}B: {fits}")
        parts += [f"{key.replace('_', ' ')} {budget[key]}" for key in ("max_batch", "max_size") if key in budget]
    return " · ".join(parts)


def _scaled(value: float) -> str:
    for size, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.2f} {prefix}"
    return f"{value:g} "


def _diagram(trace: Trace, layout: Layout, depth: int) -> str:
    try:
        drawing = annotate_svg(render_svg(trace_dot(trace, depth, title=False)), trace)
    except GraphvizMissingError as error:
        note = f"No diagram: {error}. The causes, the details and the table still work."
        drawing = f'<p class="missing" id="no-diagram">{escape(note)}</p>'
    toolbar = "".join(
        f'<button type="button" id="zoom-{name}" title="{title}">{label}</button>'
        for name, label, title in (
            ("out", "−", "zoom out"),
            ("in", "+", "zoom in"),
            ("fit", "fit", "fit the width"),
            ("actual", "1:1", "actual size"),
        )
    )
    hint = '<span class="hint">click a block: its record, and its skip partners outlined</span>'
    return (
        f'<section class="diagram-panel"><div class="toolbar">{toolbar}{legend(trace, layout)}{hint}</div>'
        f'<div id="diagram">{drawing}</div></section>'
    )


def _causes(trace: Trace) -> str:
    """One item per distinct cause, each with its fix and a button per break it explains."""
    groups: dict[tuple[str, str], list[Break]] = {}
    for brk in trace.breaks:
        # Breaks without a cause stand alone; the same cause behind many breaks is told once.
        groups.setdefault((brk.cause, brk.fix) if brk.cause else (brk.message, str(id(brk))), []).append(brk)
    items = []
    for group in groups.values():
        first = group[0]
        cause, fix = first.cause, first.fix
        title = cause or f"{first.kind} break at {_name(trace, first.layer)}"
        parts = [f'<p class="cause-title" data-index="{first.layer}">{escape(title)}</p>']
        if fix:
            parts.append(f'<p><span class="label">fix:</span> {escape(fix)}</p>')
        parts += [_break_line(trace, brk) for brk in group]
        items.append(f"<li>{''.join(parts)}</li>")
    notes = [f'<li class="warning">warning: {escape(warning.message)}</li>' for warning in trace.warnings]
    rule = trace.size_rule
    if rule is not None:
        from shapetrace.render.table import size_rule_text

        notes.append(f"<li>{escape('size rule: ' + size_rule_text(trace))}</li>")
    count = f" · {len(items)} for {len(trace.breaks)} break{'s' * (len(trace.breaks) != 1)}" if items else ""
    lines = ['<section id="causes">', f"<h2>Causes{count}</h2>"]
    lines.append(f"<ol>{''.join(items)}</ol>" if items else '<p class="none">✓ aligned: nothing to fix</p>')
    lines += [f'<ul class="notes">{"".join(notes)}</ul>'] if notes else []
    return "\n".join([*lines, "</section>"])


def _break_line(trace: Trace, brk: Break) -> str:
    name = _name(trace, brk.layer)
    message = brk.message
    prefix = f"{name} ({trace.layers[brk.layer].type}): "
    message = message.removeprefix(prefix) if brk.layer >= 0 else message
    return (
        f'<p class="message"><button type="button" class="goto" data-index="{brk.layer}">{escape(name)}</button>'
        f"{escape(message)}</p>"
    )


def _name(trace: Trace, index: int) -> str:
    if not 0 <= index < len(trace.layers):
        return "input"
    layer = trace.layers[index]
    return layer.name or layer.type


def _table_section(trace: Trace, data: Mapping[str, Any], depth: int) -> str:
    deepest = max_depth(trace)
    options = "".join(
        f'<option value="{level}"{" selected" if level == min(depth, deepest) else ""}>{level}</option>'
        for level in range(1, deepest + 1)
    )
    controls = (
        '<div class="controls"><h2 style="margin:0">Layers</h2>'
        '<input id="filter" type="search" placeholder="filter by name or type" aria-label="filter layers">'
        f'<label>depth <select id="depth">{options}</select></label><span id="row-count"></span></div>'
    )
    return f'<section class="layers">{controls}{layer_table(trace, data["layers"], depth)}</section>'


def _view(trace: Trace, layout: Layout, depth: int) -> dict[str, Any]:
    """What the page's script needs beyond the trace: where each call is drawn, and skip partners."""
    drawn = {row.index for row in layout.rows}
    partners: dict[str, list[int]] = {}
    for source, target in layout.rungs:
        partners.setdefault(str(source), []).append(target)
        partners.setdefault(str(target), []).append(source)
    node = [node_of(trace, drawn, layer.index, depth, last=False) for layer in trace.layers]
    return {"depth": depth, "node_of": node, "partners": partners}
