"""The block table at any width: columns fold into others, by priority, as the width shrinks.

At its natural width the table shows one column per fact (`#`, layer, type, input, output,
change, skip, params). Squeezed by rich, those columns would split names and shapes mid-word
(`time_em/bedding`) and cut the skips (`→ ups.10 16×64×…`). Instead, each narrower layout
(block_columns.Layout) folds one more column into another: the index goes, then the type moves
under the name, then the skips, then the change under the output, then the shapes stack. The
widest layout in which every cell prints whole is drawn.

Only the change column may wrap, after a comma (`ch 64→128,` / `112→56`); names, types, shapes
and skips print whole, or the layout is passed over. When none fits, the narrowest layout is
drawn as rich's Table draws any cramped table: folded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from shapetrace.render.block_columns import BlockColumn, BlockRow, Layout, Totals, columns
from shapetrace.render.fast_table import FastTable, Overflow


@dataclass(frozen=True)
class BlockTable:
    """A renderable that draws the rows in the widest layout the console's width allows."""

    title: str
    caption: Text
    rows: Sequence[BlockRow]
    totals: Totals

    def table(self, layout: Layout, strict: bool = True) -> FastTable:
        """The rows in `layout`.

        Args:
            layout: which columns fold into others.
            strict: only the change column may wrap (rich then narrows only it); False lets
                every column but the numbers and shapes fold, for when no layout fits.

        Returns:
            The table in that layout.
        """
        shown = columns(layout, self.totals)
        return self._table(shown, [[column.cell(row) for row in self.rows] for column in shown], strict)

    def table_at(self, console: Console, options: ConsoleOptions) -> tuple[FastTable, int]:
        """The table in the widest layout whose every cell prints whole at `options.max_width`
        (the narrowest layout, folded, when none does), and its width."""
        cells: dict[tuple[str, str], list[Text]] = {}
        measured: dict[tuple[str, str], tuple[int, int]] = {}
        for layout in Layout:
            shown = columns(layout, self.totals)
            for column in shown:
                if column.key not in cells:
                    cells[column.key] = [column.cell(row) for row in self.rows]
                    measured[column.key] = column.widths(cells[column.key])
            needed = [measured[column.key][0] for column in shown]
            natural = [measured[column.key][1] for column in shown]
            edges = len(shown) + 1  # the borders left and right and between columns
            if sum(needed) + edges > options.max_width:
                continue  # cannot fit, whatever widths rich gives the columns
            table = self._table(shown, [cells[column.key] for column in shown], strict=True)
            if sum(natural) + edges <= options.max_width:
                return table, sum(natural) + edges  # rich gives each column its natural width
            widths = table.column_widths(console, options)
            if all(need <= width for need, width in zip(needed, widths, strict=True)):
                return table, sum(widths) + edges
        table = self.table(max(Layout), strict=False)
        return table, sum(table.column_widths(console, options)) + len(table.columns) + 1

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table, width = self.table_at(console, options)
        yield from _annotated(table, width, console, lambda table: table)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return _measure_between(console, options, self.table(Layout.FULL), self.table(max(Layout), strict=False))

    def as_rich_table(self) -> RenderableType:
        """The same, drawn by rich's Table in whichever layout this table picks at a width."""
        return _RichLayouts(self)

    def _table(self, shown: Sequence[BlockColumn], cells: Sequence[Sequence[Text]], strict: bool) -> FastTable:
        table = FastTable(title=self.title, caption=self.caption)
        for column in shown:
            no_wrap = not column.wraps if strict else column.shapes
            overflow: Overflow = "ellipsis" if no_wrap else "fold"
            table.add_column(
                column.header, footer=column.footer, justify=column.justify, no_wrap=no_wrap, overflow=overflow
            )
        for number, row in enumerate(self.rows):
            table.add_row(*(column_cells[number] for column_cells in cells), style=row.style)
            if row.end_section:
                table.add_section()
        return table


@dataclass(frozen=True)
class _RichLayouts:
    """rich's Table in the layout the block table picks: what the one-pass table is checked against."""

    block_table: BlockTable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table, width = self.block_table.table_at(console, options)
        yield from _annotated(table, width, console, FastTable.as_rich_table)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widest, narrowest = self.block_table.table(Layout.FULL), self.block_table.table(max(Layout), strict=False)
        return _measure_between(console, options, widest.as_rich_table(), narrowest.as_rich_table())


def _annotated(
    table: FastTable, width: int, console: Console, draw: Callable[[FastTable], RenderableType]
) -> Iterator[RenderableType]:
    """The table drawn by `draw`; a title or caption wider than the table (`width`) goes above
    or below it, as wide as the console allows, instead of wrapped to the table's width (which
    would break `[2, 3, 224, 224]` in two in the narrow layouts)."""
    title = console.render_str(table.title, style="table.title", highlight=False)
    caption = table.caption
    if isinstance(caption, str):
        caption = console.render_str(caption, style="table.caption", highlight=False)
    title_above = cell_len(title.plain) > width
    caption_below = cell_len(caption.plain) > width
    if title_above:
        yield title
    yield draw(replace(table, title="" if title_above else table.title, caption="" if caption_below else table.caption))
    if caption_below:
        yield caption


def _measure_between(
    console: Console, options: ConsoleOptions, widest: FastTable | Table, narrowest: FastTable | Table
) -> Measurement:
    """From the narrowest layout's minimum to the full layout's natural width."""
    minimum = Measurement.get(console, options, narrowest).minimum
    maximum = Measurement.get(console, options, widest).maximum
    return Measurement(min(minimum, maximum), maximum)
