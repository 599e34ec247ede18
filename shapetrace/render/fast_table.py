"""A table that looks exactly like rich's `Table` and draws hundreds of rows in one pass.

rich's Table measures and renders every cell through its general renderable pipeline: about
2 ms a row here, so a trace shown call by call (`--depth 9`, 500 rows) took a second. Most
cells of a shape table are a few short lines. This table asks rich only for what rich decides:

- the column widths, from a stand-in rich Table holding, per column, the widest cell and the
  cell with the longest word (a column's measure is the maximum over its cells, so the widths
  come out the same), read off the stand-in's top border;
- the cells that wrap, fold or span lines, rendered by rich as its Table would render them.

Every cell whose lines all fit is padded and styled here, character for character as rich
would. `tests/test_table.py` holds the output, styles included, equal to rich's Table for the
same rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

Justify = Literal["left", "right"]
Overflow = Literal["fold", "ellipsis"]
CELL_PADDING = (0, 1, 0, 1)
BOX = box.HEAVY_HEAD
"""rich's default box for a Table."""


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    footer: str = ""
    justify: Justify = "left"
    overflow: Overflow = "ellipsis"
    no_wrap: bool = False


@dataclass(slots=True)
class _Row:
    cells: tuple[Text, ...]
    style: str
    end_section: bool = False


@dataclass
class FastTable:
    """The subset of rich's Table that shapetrace uses: columns, rows, sections, title and caption."""

    title: str = ""
    caption: Text | str = ""
    columns: list[Column] = field(default_factory=list)
    rows: list[_Row] = field(default_factory=list)

    def add_column(
        self,
        header: str,
        *,
        footer: str = "",
        justify: Justify = "left",
        overflow: Overflow = "ellipsis",
        no_wrap: bool = False,
    ) -> None:
        self.columns.append(Column(header, footer, justify, overflow, no_wrap))

    def add_row(self, *cells: Text | str, style: str = "") -> None:
        # Text, never markup: a module named "blocks[0]" is a name, not a style tag.
        self.rows.append(_Row(tuple(cell if isinstance(cell, Text) else Text(cell) for cell in cells), style))

    def add_section(self) -> None:
        if self.rows:
            self.rows[-1].end_section = True

    def as_rich_table(self, rows: Sequence[_Row] | None = None) -> Table:
        """The same table as a rich Table (with `rows` in place of its own, if given)."""
        table = Table(
            title=self.title or None,
            title_justify="left",
            show_footer=True,
            caption=self.caption or None,
            caption_justify="left",
        )
        for column in self.columns:
            table.add_column(
                Text(column.header),  # headers too are names, never markup
                footer=Text(column.footer),
                justify=column.justify,
                overflow=column.overflow,
                no_wrap=column.no_wrap,
            )
        for row in self.rows if rows is None else rows:
            table.add_row(*row.cells, style=row.style, end_section=row.end_section)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths = self.column_widths(console, options)
        table_width = sum(widths) + len(widths) + 1  # the edges and the dividers
        options = options.update(width=table_width, highlight=False, height=None)
        if self.title:
            title = console.render_str(self.title, style="table.title", highlight=False)
            yield from console.render(title, options.update(justify="left"))
        yield from self._body(console, options, widths)
        if self.caption:
            caption = self.caption
            if isinstance(caption, str):
                caption = console.render_str(caption, style="table.caption", highlight=False)
            yield from console.render(caption, options.update(justify="left"))

    # --- widths -----------------------------------------------------------------------

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """What rich's Table measures (inside a Panel, say): the stand-in's measure is the same."""
        return self._stand_in().__rich_measure__(console, options)

    def _stand_in(self) -> Table:
        """A rich Table of at most two rows that measures like this table: per column, its
        widest cell and the cell with the longest word (a column measures as the widest of both)."""
        widest: list[Text] = []
        longest_word: list[Text] = []
        for index in range(len(self.columns)):
            measured = [(_measure(row.cells[index]), row.cells[index]) for row in self.rows]
            widest.append(max(measured, key=lambda item: item[0][1], default=((0, 0), Text()))[1])
            longest_word.append(max(measured, key=lambda item: item[0][0], default=((0, 0), Text()))[1])
        table = self.as_rich_table([_Row(tuple(widest), ""), _Row(tuple(longest_word), "")] if self.rows else [])
        table.title = None  # its first line is then the top border
        return table

    def column_widths(self, console: Console, options: ConsoleOptions) -> list[int]:
        """rich's own column widths at `options.max_width`, padding included, read off the
        stand-in's top border."""
        top = "".join(_first_line(console.render(self._stand_in(), options)))
        edges = BOX.substitute(options, safe=console.safe_box)
        return [len(part) for part in top[1:-1].split(edges.top_divider)]

    # --- drawing ----------------------------------------------------------------------

    def _body(self, console: Console, options: ConsoleOptions, widths: list[int]) -> Iterator[Segment]:
        edges = BOX.substitute(options, safe=console.safe_box)
        border = console.get_style("") + console.get_style("")
        # Without colour and without a recording, styles print nothing: one segment per line.
        plain = console.color_system is None and not console.record
        draw = _Drawing(console, options, widths, self.columns, edges, border, plain)
        new_line = Segment.line()
        yield Segment(edges.get_top(widths), border)
        yield new_line
        header = tuple(Text(column.header) for column in self.columns)
        yield from draw.row(header, console.get_style("table.header"), Style.null(), "head", "bottom")
        yield Segment(edges.get_row(widths, "head", edge=True), border)
        yield new_line
        for number, row in enumerate(self.rows):
            yield from draw.row(row.cells, Style.null(), console.get_style(row.style), "mid")
            if row.end_section and number < len(self.rows) - 1:
                yield Segment(edges.get_row(widths, "row", edge=True), border)
                yield new_line
        yield Segment(edges.get_row(widths, "foot", edge=True), border)
        yield new_line
        footer = tuple(Text(column.footer) for column in self.columns)
        yield from draw.row(footer, console.get_style("table.footer"), Style.null(), "foot", "top")
        yield Segment(edges.get_bottom(widths), border)
        yield new_line


@dataclass(frozen=True, slots=True)
class _Drawing:
    """What every row of one rendering shares."""

    console: Console
    options: ConsoleOptions
    widths: list[int]
    columns: list[Column]
    edges: box.Box
    border: Style
    plain: bool

    def row(
        self,
        cells: tuple[Text, ...],
        cell_style: Style,
        row_style: Style,
        part: Literal["head", "mid", "foot"],
        vertical: Literal["top", "bottom"] = "top",
    ) -> Iterator[Segment]:
        edges, border = self.edges, self.border
        left, divider, right = {
            "head": (edges.head_left, edges.head_vertical, edges.head_right),
            "mid": (edges.mid_left, edges.mid_vertical, edges.mid_right),
            "foot": (edges.foot_left, edges.foot_vertical, edges.foot_right),
        }[part]
        base = cell_style + row_style
        cells_drawn = [
            _cell(self.console, self.options, width, column, cell, base)
            for width, column, cell in zip(self.widths, self.columns, cells, strict=True)
        ]
        rendered = [lines for lines, _ in cells_drawn]
        tallest = max((len(lines) for lines in rendered), default=0)
        height = max(1, tallest)
        if any(len(lines) != height for lines in rendered):  # a taller cell, or one too narrow to draw
            # As rich's Table: aligned to the tallest cell with the cell's style, then any line
            # still missing (every cell too narrow to draw) added blank and unstyled.
            align = Segment.align_bottom if vertical == "bottom" else Segment.align_top
            rendered = [
                _blank_lines_added(lines, width, tallest, base, vertical)
                if exact
                else Segment.set_shape(align(lines, width, tallest, base), width, height)
                for width, (lines, exact) in zip(self.widths, cells_drawn, strict=True)
            ]
        for line in range(height):
            segments = [Segment(left, border)]
            for number, lines in enumerate(rendered):
                if number:
                    segments.append(Segment(divider, border))
                segments += lines[line]
            segments.append(Segment(right, border))
            if self.plain:
                yield Segment("".join(segment.text for segment in segments))
            else:
                yield from segments
            yield Segment.line()


def _blank_lines_added(
    lines: list[list[Segment]], width: int, height: int, base: Style, vertical: Literal["top", "bottom"]
) -> list[list[Segment]]:
    """`lines`, each `width` wide already, made `height` tall as rich aligns a cell."""
    blank = [[Segment(" " * width, base)]] * (height - len(lines))
    return blank + lines if vertical == "bottom" else lines + blank


def _cell(
    console: Console, options: ConsoleOptions, width: int, column: Column, text: Text, base: Style
) -> tuple[list[list[Segment]], bool]:
    """One cell's lines, padded to `width`: by hand for lines that fit, else by rich; and
    whether they were drawn by hand (then each is exactly `width` wide)."""
    plain = text.plain
    room = width - 2
    width_of_text = cell_len(plain)
    # rich decides whatever is not one plain line that fits: spans, a justify of the cell's
    # own, characters of other widths than one (wide, combining), a right-justified cell's
    # trailing spaces (which rich drops), a column too narrow for its padding.
    plain_line = (
        not text.spans
        and text.justify is None
        and plain.isprintable()
        and width_of_text == len(plain)
        and room > 0
        and width_of_text <= room
        and not (column.justify == "right" and plain.endswith(" "))
    )
    if plain_line:
        gap = " " * (room - width_of_text)
        content = gap + plain if column.justify == "right" else plain + gap
        style = base + console.get_style(text.style, default=Style.null()) if text.style else base
        return [[Segment(" ", base), Segment(content, style), Segment(" ", base)]], True
    fitting = _fitting_lines(console, text, room, column.justify, base)
    if fitting is not None:
        return fitting, True
    cell_options = options.update(
        width=width, justify=column.justify, no_wrap=column.no_wrap, overflow=column.overflow, height=None
    )
    lines = console.render_lines(Padding(text, CELL_PADDING), cell_options, style=base)
    return Segment.set_shape(lines, width), False  # as rich's Table does: a line too narrow is padded unstyled


def _fitting_lines(
    console: Console, text: Text, room: int, justify: Justify, base: Style
) -> list[list[Segment]] | None:
    """A cell of several lines, or of styled spans, whose every line fits, styled character
    by character as rich styles it (the cell's style, then each span over it in order; the
    padding in the cell's style), without rich's wrapping and measuring passes, which would
    change nothing. None when rich must decide (see `_cell`)."""
    if text.justify is not None or room <= 0:
        return None
    plain = text.plain
    lines = plain.split("\n")
    for line in lines:
        if not line.isprintable() or cell_len(line) != len(line) or len(line) > room:
            return None
        if justify == "right" and line.endswith(" "):
            return None
    text_style = console.get_style(text.style, default=Style.null())
    spans = [(span.start, span.end, console.get_style(span.style, default=Style.null())) for span in text.spans]
    drawn = []
    start = 0
    for line in lines:
        end = start + len(line)
        cuts = sorted(
            {start, end, *(min(max(point, start), end) for first, last, _ in spans for point in (first, last))}
        )
        pieces = [
            Segment(
                plain[cut:next_cut],
                base + Style.combine([text_style, *(style for first, last, style in spans if first <= cut < last)]),
            )
            for cut, next_cut in itertools.pairwise(cuts)  # distinct, sorted: each piece is one character or more
        ]
        gap = [Segment(" " * (room - len(line)), base + text_style)] if len(line) < room else []
        drawn.append([Segment(" ", base), *(gap + pieces if justify == "right" else pieces + gap), Segment(" ", base)])
        start = end + 1
    return drawn


def _measure(text: Text) -> tuple[int, int]:
    """(longest word, longest line) in cells: what rich measures a Text by."""
    plain = text.plain
    if plain.isprintable() and " " not in plain and "\u00a0" not in plain:
        width = cell_len(plain)  # one line, one word: most cells of a shape table
        return width, width
    longest_line = max((cell_len(line) for line in plain.splitlines()), default=0)
    return max((cell_len(word) for word in plain.split()), default=longest_line), longest_line


def _first_line(segments: Iterable[Segment]) -> Iterator[str]:
    for segment in segments:
        if segment.text == "\n":
            return
        yield segment.text
