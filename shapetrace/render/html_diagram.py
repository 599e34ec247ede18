"""The DOT diagram as inline SVG for the HTML report: each drawn layer's group names its layer.

Graphviz writes each node as `<g id="nodeN" class="node"><title>157</title>…`, the title being
the DOT node id, which `shapetrace.render.dot` makes the record index. This turns that into
`<g class="node layer" data-layer="ups.9" data-index="157">`, marks each edge with its two ends,
and drops what an inline SVG does not need: the XML prolog, the DOCTYPE and its URL, comments,
namespace declarations and any link.
"""

from __future__ import annotations

import re

from shapetrace.analysis.placement import CHAIN, DOWN, MID, UP
from shapetrace.records import DOWNSTREAM, Trace
from shapetrace.render.dot import (
    BORDERS,
    BREAK_COLOR,
    BREAK_FILL,
    DOWNSTREAM_FILL,
    DOWNSTREAM_TEXT,
    FILLS,
    SKIP_COLOR,
    TIMESTEP_COLOR,
)
from shapetrace.render.dot_layout import Layout
from shapetrace.render.html_page import attribute, escape

__all__ = ["annotate_svg", "legend"]

_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_NAMESPACES = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_LINKS = re.compile(r'\s+(?:xlink:)?href="[^"]*"')
_SIZE = re.compile(r'<svg width="[^"]*"\s+height="[^"]*"')
_NODE = re.compile(r'<g id="node\d+" class="node">\s*<title>([^<]*)</title>')
_EDGE = re.compile(r'<g id="edge\d+" class="edge">\s*<title>([^<]*)</title>')
_ARROW = "&#45;&gt;"


def annotate_svg(svg: str, trace: Trace) -> str:
    """Graphviz's SVG of `trace_dot(trace)`, ready to sit inline in the report.

    Args:
        svg: the output of `dot -Tsvg` for the trace's DOT source.
        trace: the trace that DOT source was written from (its indices name the nodes).

    Returns:
        An `<svg>` element whose layer nodes carry data-layer, data-index and a readable title.
    """
    svg = _PROLOG.sub("", svg)
    svg = _COMMENT.sub("", svg)
    svg = _NAMESPACES.sub("", svg)
    svg = _LINKS.sub("", svg)
    # The report sizes the drawing itself (zoom); the viewBox keeps its proportions.
    svg = _SIZE.sub('<svg id="diagram-svg" role="img" aria-label="the model drawn as a U"', svg, count=1)
    svg = _NODE.sub(lambda found: _node_group(found.group(1), trace), svg)
    return _EDGE.sub(_edge_group, svg)


def _node_group(title: str, trace: Trace) -> str:
    if not title.isdigit() or int(title) >= len(trace.layers):
        return f'<g class="node"><title>{title}</title>'  # an input, the output or a rail point
    layer = trace.layers[int(title)]
    name = layer.name or layer.type
    return (
        f'<g id="layer-{layer.index}" class="node layer" data-layer="{attribute(name)}" '
        f'data-index="{layer.index}" tabindex="0"><title>{escape(name)} ({escape(layer.type)})</title>'
    )


def _edge_group(found: re.Match[str]) -> str:
    ends = found.group(1).split(_ARROW)
    if len(ends) == 2 and all(end.isdigit() for end in ends):
        return f'<g class="edge" data-ends="{ends[0]} {ends[1]}">'
    return '<g class="edge">'


def legend(trace: Trace, layout: Layout) -> str:
    """The diagram's key in HTML (the DOT title is left out: the page's header says the rest).

    A swatch for each kind of node the diagram has, in the DOT renderer's colours, and the skip
    and timestep edges where it draws them.
    """
    sides = [side for side in (DOWN, MID, UP, CHAIN) if side in layout.sides.values()]
    keys = [(FILLS[side], BORDERS[side], "layer" if side == CHAIN else side) for side in sides]
    keys += [(BREAK_FILL, BREAK_COLOR, "break")] if trace.breaks else []
    if any(row.status == DOWNSTREAM for row in layout.rows):
        keys.append((DOWNSTREAM_FILL, DOWNSTREAM_TEXT, "after a break"))
    parts = [
        f'<span class="key"><span class="swatch" style="background:{fill};border:1px solid {border}"></span>'
        f"{escape(text)}</span>"
        for fill, border, text in keys
    ]
    if layout.rungs:
        parts.append(f'<span class="key" style="color:{SKIP_COLOR}">- - skip C×H×W</span>')
    if layout.lead or any(len(shape) < 3 for row in layout.main for shape in row.inputs):
        parts.append(f'<span class="key" style="color:{TIMESTEP_COLOR}">── timestep</span>')
    return f'<span class="legend-keys">{"".join(parts)}</span>'
