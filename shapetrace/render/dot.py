"""Trace -> DOT source text: the UNet drawn as a U.

The down path descends on the left, the bottleneck lies along the bottom and the up path
climbs on the right, so each skip is a horizontal rung between two nodes of one rank
(`rank=same`). Up-path edges are written head -> tail with `dir=back`: dot ranks every edge
downwards, and this is how an arrow can point up. Models without skips are a top-down chain.
Where each row sits is decided in `shapetrace.dotlayout`; this module writes it out.
Pure text: no I/O, no torch, node ids are record indices, so a trace always gives the same bytes.
"""

from __future__ import annotations

import itertools
import re
import textwrap
from collections.abc import Sequence

from shapetrace.analysis import placement as analysis
from shapetrace.analysis.placement import CHAIN, DOWN, MID, UP
from shapetrace.formatting import format_extents, format_shape
from shapetrace.records import DOWNSTREAM, LayerRecord, Shape, Trace
from shapetrace.render.dot_cost import level_notes, node_cost
from shapetrace.render.dot_layout import Layout, layout_of, node_of

__all__ = ["trace_dot"]

FONT = "Helvetica,Arial,sans-serif"
FILLS = {DOWN: "#dce9f7", MID: "#fbefd2", UP: "#ddf0dc", CHAIN: "#dce9f7", "timestep": "#ffffff"}
BORDERS = {DOWN: "#6f95c4", MID: "#c9a04a", UP: "#6aa56a", CHAIN: "#6f95c4", "timestep": "#9a9a9a"}
BREAK_FILL, BREAK_COLOR = "#fde2e2", "#c62828"
DOWNSTREAM_FILL, DOWNSTREAM_TEXT = "#f3f3f3", "#9e9e9e"
SKIP_COLOR, TIMESTEP_COLOR, MUTED_TEXT = "#5a5a5a", "#b0b0b0", "#6b6b6b"
LEVEL_TEXT = "#7a3e9d"
TIMESTEP_STYLE = f'color="{TIMESTEP_COLOR}", penwidth=0.7, arrowsize=0.4'
WRAP = 46  # characters per line of a break message: a shape fits, and the node stays a column wide
NO_BREAK_SPACE = "\u00a0"

Node = int | str  # a record index, or "input0", "output", "rail6"


def trace_dot(trace: Trace, depth: int = analysis.BLOCK_DEPTH, *, title: bool = True) -> str:
    """The trace as Graphviz DOT source: a U for models with skips, a chain otherwise.

    Args:
        trace: the trace to draw.
        depth: display depth; deeper calls are folded into their ancestor at this depth.
        title: False leaves out the title, legend and unplaced breaks (the HTML report shows its own).

    Returns:
        DOT text, byte-identical for equal traces; `shapetrace.images.render_image` draws it.

    Raises:
        ValueError: if depth is below 1.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1: depth={depth}")
    layout = layout_of(trace, depth)
    messages, unplaced = _break_messages(trace, layout, depth)
    lines = [*_header(trace, layout, messages, unplaced, title), *_input_nodes(trace, layout)]
    notes = level_notes(trace, layout, depth)
    lines += [
        f"  {row.index} [label={_node_label(trace, layout, row, messages.get(row.index, []), notes.get(row.index))}];"
        for row in layout.rows
    ]
    lines += _main_edges(trace, layout)
    if layout.rungs:
        timestep, rail_pairs = _timestep_edges(layout)
        lines += [
            *_rung_edges(trace, layout, depth),
            *timestep,
            *_rank_groups(layout, [*sorted(layout.pinned), *rail_pairs]),
        ]
    return "\n".join([*lines, "}"]) + "\n"


def _break_messages(trace: Trace, layout: Layout, depth: int) -> tuple[dict[int, list[str]], list[str]]:
    """Each break's message on the node of its layer (else of its leaf); the rest go in the title."""
    drawn = {row.index for row in layout.rows}
    messages: dict[int, list[str]] = {}
    unplaced = []
    for brk in trace.breaks:
        node = node_of(trace, drawn, brk.layer, depth, last=False)
        if node is None:
            node = node_of(trace, drawn, brk.leaf, depth, last=False)
        if node is None:
            unplaced.append(brk.message)
        else:
            messages.setdefault(node, []).append(brk.message)
    return messages, unplaced


# --- text -------------------------------------------------------------------------------


def _header(
    trace: Trace, layout: Layout, messages: dict[int, list[str]], unplaced: Sequence[str], title: bool
) -> list[str]:
    label = f"label={_title(trace, layout, messages, unplaced)}, labelloc=t, " if title else ""
    return [
        "digraph shapetrace {",
        f'  graph [{label}fontname="{FONT}",',
        '         newrank=true, nodesep=0.25, ranksep=0.22, margin=0.15, bgcolor="white"];',
        f'  node [shape=plain, fontname="{FONT}", fontsize=10];',
        f'  edge [fontname="{FONT}", fontsize=9, arrowsize=0.6, color="#404040"];',
    ]


def _title(trace: Trace, layout: Layout, messages: dict[int, list[str]], unplaced: Sequence[str]) -> str:
    """Model, inputs, config and batch on one line, the legend under it, then unplaced breaks."""
    inputs = ", ".join(format_shape(shape) for shape in trace.inputs) or "none"
    facts = [f"inputs {inputs}", *(f"{key}={value}" for key, value in trace.config)]
    batch = _batch(trace)
    facts += [f"batch {batch}"] if batch is not None else []
    rows = [
        f'<tr><td><font point-size="13"><b>{_escape(trace.model)}</b></font>'
        f'<font point-size="10">   {_escape("   ".join(facts))}</font></td></tr>',
    ]
    legend = _legend(layout, bool(messages or unplaced))
    rows += [f"<tr><td>{legend}</td></tr>"] if legend else []
    for message in unplaced:
        rows.append(f'<tr><td align="left">{_red_lines(message, 10)}</td></tr>')
    return f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="1">{"".join(rows)}</table>>'


def _legend(layout: Layout, broken: bool) -> str:
    """A swatch for each kind of node and a sample of each kind of edge that this graph shows."""
    sides = [side for side in (DOWN, MID, UP, CHAIN) if side in layout.sides.values()]
    swatches = [(FILLS[side], BORDERS[side], "layer" if side == CHAIN else side) for side in sides]
    swatches += [(BREAK_FILL, BREAK_COLOR, "break")] if broken else []
    if any(row.status == DOWNSTREAM for row in layout.rows):
        swatches.append((DOWNSTREAM_FILL, DOWNSTREAM_TEXT, "after a break"))
    cells = [
        f'<td bgcolor="{fill}" color="{border}" border="1"> {text} </td><td> </td>' for fill, border, text in swatches
    ]
    if layout.rungs:
        cells.append(f'<td><font color="{SKIP_COLOR}">- - - skip C×H×W</font></td><td> </td>')
    if layout.lead or any(len(shape) < 3 for row in layout.main for shape in row.inputs):
        cells.append(f'<td><font color="{TIMESTEP_COLOR}">─── timestep</font></td>')
    if not cells:
        return ""  # an empty <tr> is a syntax error to dot
    return f'<table border="0" cellborder="0" cellspacing="0" cellpadding="2"><tr>{"".join(cells)}</tr></table>'


def _input_nodes(trace: Trace, layout: Layout) -> list[str]:
    """The model inputs (and, for a U, the output beside them) on the top rank."""
    lines = []
    for position, (shape, name) in enumerate(zip(trace.inputs, _input_names(trace.inputs), strict=True)):
        label = f"<<b>{_escape(name)}</b>  {_escape(_shape_text(shape, trace))}>"
        lines.append(f'  input{position} [shape=box, style="rounded", color="#7a7a7a", label={label}];')
    if trace.outputs:
        label = f"<<b>output</b>  {_escape(_shape_text(trace.outputs[0], trace))}>"
        lines.append(f'  output [shape=box, style="rounded", color="#7a7a7a", label={label}];')
    top = [f"input{position}" for position in range(len(trace.inputs))]
    top += ["output"] if layout.rungs and trace.outputs else []
    if top:
        # Invisible edges keep the top row in order: x on the left, the output on the right.
        order = f" {' -> '.join(top)} [style=invis];" if len(top) > 1 else ""
        lines.append(f"  {{ rank=min; {' '.join(f'{node};' for node in top)}{order} }}")
    return lines


def _input_names(inputs: Sequence[Shape]) -> list[str]:
    """x for a lone image-like input, t for a lone vector; positional names otherwise."""
    images = sum(len(shape) >= 3 for shape in inputs)
    vectors = sum(len(shape) == 1 for shape in inputs)
    names = []
    for position, shape in enumerate(inputs):
        if len(shape) >= 3 and images == 1:
            names.append("x")
        elif len(shape) == 1 and vectors == 1:
            names.append("t")
        else:
            names.append(f"input {position}")
    return names


def _node_label(
    trace: Trace, layout: Layout, row: LayerRecord, messages: Sequence[str], level: str | None = None
) -> str:
    """Name and type, then C×H×W; a break adds its messages in red; rows after a break are grey.

    A `--cost` trace adds the node's cost, and above the first node of each level its level's.
    """
    side = layout.sides.get(row.index, "timestep")
    fill, border, text = FILLS[side], BORDERS[side], "#000000"
    if messages:
        fill, border = BREAK_FILL, BREAK_COLOR
    elif row.status == DOWNSTREAM:
        fill, border, text = DOWNSTREAM_FILL, DOWNSTREAM_TEXT, DOWNSTREAM_TEXT
    shape = ", ".join(_shape_text(shape, trace) for shape in row.outputs) or "no output"
    cells = [
        f'<tr><td><font color="{text}"><b>{_escape(row.name or row.type)}</b>  '
        f'<font color="{MUTED_TEXT}" point-size="9">{_escape(row.type)}</font></font></td></tr>',
        f'<tr><td><font color="{text}">{_escape(shape)}</font></td></tr>',
    ]
    if trace.cost is not None:
        cells.append(
            f'<tr><td><font color="{MUTED_TEXT}" point-size="9">{_escape(node_cost(trace, row.index))}</font></td></tr>'
        )
    if level:
        cells.insert(0, f'<tr><td><font color="{LEVEL_TEXT}" point-size="9"><b>{_escape(level)}</b></font></td></tr>')
    for message in messages:
        cells.append(f'<tr><td align="left">{_red_lines(_strip_name(message, row), 9)}</td></tr>')
    return (
        f'<<table border="{2 if messages else 1}" cellborder="0" cellspacing="0" cellpadding="2" '
        f'style="rounded" bgcolor="{fill}" color="{border}">{"".join(cells)}</table>>'
    )


def _red_lines(message: str, size: int) -> str:
    """A break message, wrapped, left-aligned, in red."""
    lines = "".join(f'{_escape(line)}<br align="left"/>' for line in _wrap(message))
    return f'<font color="{BREAK_COLOR}" point-size="{size}">{lines}</font>'


def _strip_name(message: str, row: LayerRecord) -> str:
    """Drop the "ups.9 (ResBlock): " a break message starts with; the node already shows it."""
    for prefix in (f"{row.name} ({row.type}): ", f"{row.name}: "):
        if row.name and message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _wrap(text: str) -> list[str]:
    """Lines of at most WRAP characters that never split a shape such as [2, 64, 224, 224]."""
    joined = re.sub(r"\[[^\]]*\]", lambda found: found.group().replace(" ", NO_BREAK_SPACE), text)
    lines = textwrap.wrap(joined, WRAP, break_on_hyphens=False) or [""]
    return [line.replace(NO_BREAK_SPACE, " ") for line in lines]


def _shape_text(shape: Shape, trace: Trace) -> str:
    """C×H×W without the batch, which the title shows once; the full shape where it differs."""
    if len(shape) >= 2 and shape[0] == _batch(trace):
        return format_extents(shape[1:])
    return format_shape(shape)


def _batch(trace: Trace) -> int | None:
    sizes = {shape[0] for shape in trace.inputs if len(shape) >= 2}
    return sizes.pop() if len(sizes) == 1 else None


def _escape(text: str) -> str:
    """Text for a Graphviz HTML label: markup characters as entities, control characters spelled out."""
    text = "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    # Graphviz's label parser trips on text that starts with "]", and on a cell with no text.
    if text.startswith("]"):
        text = "&#93;" + text[1:]
    return text or "&#160;"


# --- edges ------------------------------------------------------------------------------


def _main_edges(trace: Trace, layout: Layout) -> list[str]:
    """Solid edges in call order from the image input, through the main rows, to the output."""
    images = [position for position, shape in enumerate(trace.inputs) if len(shape) >= 3]
    main = layout.main
    lines = [f"  input{(images or [0])[0]} -> {main[0].index};"] if trace.inputs and main else []
    for tail, head in itertools.pairwise(main):
        climbing = head.index in layout.right and (tail.index, head.index) != layout.bottom
        lines.append(_edge(tail.index, head.index, climbing))
    if trace.outputs and main:
        lines.append(_edge(main[-1].index, "output", main[-1].index in layout.right))
    return lines


def _edge(tail: Node, head: Node, climbing: bool) -> str:
    """A main-path edge; a climbing one is written head -> tail so that dot ranks its head higher."""
    if climbing:
        return f"  {head} -> {tail} [dir=back];"
    return f"  {tail} -> {head};"


def _rung_edges(trace: Trace, layout: Layout, depth: int) -> list[str]:
    """Dashed rungs labelled C×H×W; red where the skip itself does not fit (a size break)."""
    misfits = _misfit_rungs(trace, layout, depth)
    # Two flat edges between one pair of nodes, one of them labelled, make dot (2.43) fail
    # in routesplines and drop the edge: a rung beside a main edge takes an external label.
    neighbours = {frozenset(pair) for pair in itertools.pairwise(row.index for row in layout.main)}
    lines = []
    for (source, target), shapes in layout.rungs.items():
        label = _escape(", ".join(_shape_text(shape, trace) for shape in shapes))
        color = BREAK_COLOR if (source, target) in misfits else SKIP_COLOR
        loose = "" if (source, target) in layout.pinned else ", constraint=false"
        placement = "xlabel" if frozenset((source, target)) in neighbours else "label"
        style = f'style=dashed, color="{color}", fontcolor="{color}"'
        lines.append(f"  {source} -> {target} [{style}, {placement}=<{label}>{loose}];")
    return lines


def _misfit_rungs(trace: Trace, layout: Layout, depth: int) -> set[tuple[int | None, int | None]]:
    drawn = {row.index for row in layout.rows}
    misfits = set()
    for brk in trace.breaks:
        target = node_of(trace, drawn, brk.layer, depth, last=False)
        for side in brk.sides if brk.kind == "size" else ():
            if side.role == "skip":
                misfits.add((node_of(trace, drawn, side.producer, depth, last=True), target))
    return misfits


def _timestep_edges(layout: Layout) -> tuple[list[str], list[tuple[str, int]]]:
    """The timestep path: the vector input through the lead rows, then rails into the blocks.

    Returns the lines and the (rail point, row) pairs that must share a rank.
    """
    vectors = [f"input{position}" for position, shape in enumerate(layout.inputs) if len(shape) < 3]
    chain: list[Node] = [*vectors[:1], *(row.index for row in layout.lead)] if layout.lead else []
    lines = [f"  {tail} -> {head} [{TIMESTEP_STYLE}, weight=8];" for tail, head in itertools.pairwise(chain)]
    links = [
        (source, row)
        for row in layout.main
        for source in dict.fromkeys(_timestep_source(layout, shape) for shape in row.inputs if len(shape) < 3)
        if source is not None
    ]
    if not links:
        return lines, []
    rail_source = links[0][0]
    for source, row in links:
        if source != rail_source:
            lines.append(f"  {source} -> {row.index} [{TIMESTEP_STYLE}, constraint=false];")
    railed = [row for source, row in links if source == rail_source]
    left = [row.index for row in railed if row.index not in layout.right]
    right = [row.index for row in reversed(railed) if row.index in layout.right]
    left_lines, left_pairs = _rail(rail_source, left, climbing=False)
    right_lines, right_pairs = _rail(rail_source, right, climbing=True)
    return [*lines, *left_lines, *right_lines], [*left_pairs, *right_pairs]


def _rail(source: Node, rows: Sequence[int], *, climbing: bool) -> tuple[list[str], list[tuple[str, int]]]:
    """A vertical rail of points beside one arm of the U, with a short tick into each row.

    One fan of edges from the embedding into every block tangles across the whole U; a rail
    down the outer side of each arm stays out of the way.
    """
    points = [f"rail{row}" for row in rows]
    lines = [f'  {point} [shape=point, width=0.04, color="{TIMESTEP_COLOR}"];' for point in points]
    for tail, head in zip([source, *points], points, strict=False):
        # Heavy keeps the rail straight; the first segment is light so that it, not the source, bends.
        weight = 1 if tail == source else 4
        lines.append(f"  {tail} -> {head} [{TIMESTEP_STYLE}, arrowhead=none, weight={weight}];")
    for point, row in zip(points, rows, strict=True):
        # The up arm's rail is on its right: a flat edge's tail goes left, so write it row -> point.
        tick = f"{row} -> {point} [dir=back, " if climbing else f"{point} -> {row} ["
        lines.append(f"  {tick}{TIMESTEP_STYLE}];")
    return lines, [(point, row) for point, row in zip(points, rows, strict=True)]


def _timestep_source(layout: Layout, shape: Shape) -> Node | None:
    """The lead row that made a vector of this shape, else the model input of that shape."""
    for row in reversed(layout.lead):
        if shape in row.outputs:
            return row.index
    for position, input_shape in enumerate(layout.inputs):
        if input_shape == shape:
            return f"input{position}"
    return layout.lead[-1].index if layout.lead else None


def _rank_groups(layout: Layout, pairs: Sequence[tuple[Node, Node]]) -> list[str]:
    """One rank=same subgraph per set of nodes that pairs join: rung ends, rail ticks, the bottom."""
    leader: dict[Node, Node] = {}  # union-find: each node points towards its group's leader

    def find(node: Node) -> Node:
        leader.setdefault(node, node)
        while leader[node] != node:
            leader[node] = leader[leader[node]]
            node = leader[node]
        return node

    for first, second in [*pairs, *([layout.bottom] if layout.bottom else [])]:
        leader[find(first)] = find(second)
    members: dict[Node, list[Node]] = {}
    for node in leader:
        members.setdefault(find(node), []).append(node)
    groups = list(members.values())

    def position(node: Node) -> tuple[int, str]:
        return (node, "") if isinstance(node, int) else (int(node.removeprefix("rail")), node)  # rail6 by 6

    lines = []
    for group in sorted(groups, key=lambda group: min(map(position, group))):
        lines.append(f"  {{ rank=same; {' '.join(f'{node};' for node in sorted(group, key=position))} }}")
    return lines
