"""The block table's layouts: which columns each one shows, and what each cell holds.

A column's cells are the same in every layout that shows it (same header and variant), so
they are built and measured once; `block_table` picks the layout and draws it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from rich.cells import cell_len
from rich.text import Text

from shapetrace.render.fast_table import CELL_PADDING, Justify

DETAIL_STYLE = "dim"
"""The type under the name and the change under the output: details, shown quieter."""


class Layout(IntEnum):
    """The table's layouts, widest first; each folds one more column into another."""

    FULL = 0
    """Every column: `#`, layer, type, input, output, change, skip, params."""
    NO_INDEX = 1
    """Without `#`, the call index, which only readers of the DOT node ids need."""
    TYPE_UNDER_NAME = 2
    """The type under the name, dim, in the layer cell."""
    SKIPS_UNDER_NAME = 3
    """The skips under the type, one whole line each."""
    CHANGE_UNDER_OUTPUT = 4
    """The change under the output, dim, one part a line."""
    SHAPES_STACKED = 5
    """Input, output and change in one cell."""


@dataclass(frozen=True, slots=True)
class BlockRow:
    """What one row of the table shows, before a layout places it in cells."""

    index: int
    indent: str
    """Two spaces per display depth below the blocks."""
    name: str
    name_style: str
    type: str
    input: str
    output: str
    change: str
    skips: tuple[str, ...]
    """One note per skip: `→ ups.9 64×224×224` on a down block, `← downs.1 …` on an up block."""
    params: str
    style: str
    """The row's style (a break, a call after it)."""
    end_section: bool = False


@dataclass(frozen=True, slots=True)
class Totals:
    """The footer: the model's first input and output, and its parameter count."""

    input: str
    output: str
    params: str


@dataclass(frozen=True, slots=True)
class BlockColumn:
    """One column of a layout: its header, how a row fills its cell, its footer."""

    header: str
    cell: Callable[[BlockRow], Text]
    variant: str = ""
    """Columns of the same header and variant hold the same cells, whatever the layout."""
    footer: str = ""
    justify: Justify = "left"
    wraps: bool = False
    """Whether lines may break after a comma (`ch 64→128,` / `112→56`); no other line may break."""
    shapes: bool = False
    """Numbers and shapes: never wrapped, in any layout (as before there were layouts)."""

    @property
    def key(self) -> tuple[str, str]:
        return self.header, self.variant

    def widths(self, cells: Sequence[Text]) -> tuple[int, int]:
        """(needed, natural) width of the column holding `cells`, padding included: the
        widest piece that must stay on one line, and the widest line."""
        lines = [self.header, *self.footer.split("\n"), *(line for cell in cells for line in cell.plain.split("\n"))]
        natural = max(cell_len(line) for line in lines)
        needed = max(cell_len(piece) for line in lines for piece in _AFTER_COMMA.split(line)) if self.wraps else natural
        padding = CELL_PADDING[1] + CELL_PADDING[3]
        return needed + padding, natural + padding


def columns(layout: Layout, totals: Totals) -> list[BlockColumn]:
    """The columns of `layout`, left to right."""
    shown = [BlockColumn("#", lambda row: Text(str(row.index)), justify="right", shapes=True)]
    shown = shown if layout < Layout.NO_INDEX else []
    folded = Layout.SKIPS_UNDER_NAME if layout >= Layout.SKIPS_UNDER_NAME else min(layout, Layout.TYPE_UNDER_NAME)
    variant = folded.name if folded >= Layout.TYPE_UNDER_NAME else ""  # what the layer cell holds besides the name
    shown.append(BlockColumn("layer", lambda row: _layer(row, layout), variant, footer="total"))
    if layout < Layout.TYPE_UNDER_NAME:
        shown.append(BlockColumn("type", lambda row: Text(row.type)))
    if layout < Layout.SHAPES_STACKED:
        shown.append(BlockColumn("input", lambda row: Text(row.input), footer=totals.input, shapes=True))
    if layout < Layout.CHANGE_UNDER_OUTPUT:
        shown.append(BlockColumn("output", lambda row: Text(row.output), footer=totals.output, shapes=True))
        shown.append(BlockColumn("change", lambda row: Text(row.change), wraps=True))
    elif layout < Layout.SHAPES_STACKED:
        output = BlockColumn("output", _output_and_change, "change", footer=totals.output, shapes=True)
        shown.append(output)
    else:
        stacked = BlockColumn("shapes", _stacked, footer=f"{totals.input}\n→ {totals.output}", shapes=True)
        shown.append(stacked)
    if layout < Layout.SKIPS_UNDER_NAME:
        shown.append(BlockColumn("skip", lambda row: Text("\n".join(row.skips))))
    shown.append(
        BlockColumn("params", lambda row: Text(row.params), footer=totals.params, justify="right", shapes=True)
    )
    return shown


def _layer(row: BlockRow, layout: Layout) -> Text:
    """The name; in the narrow layouts the type under it, then the skips, one line each."""
    name = row.indent + row.name
    if layout < Layout.TYPE_UNDER_NAME:
        return Text(name, style=row.name_style)
    cell = Text()
    cell.append(name, style=row.name_style or None)
    under = "\n" + row.indent + "  "
    if row.type != row.name:
        cell.append(under)
        cell.append(row.type, style=DETAIL_STYLE)
    if layout >= Layout.SKIPS_UNDER_NAME:
        for skip in row.skips:
            cell.append(under + skip)
    return cell


def _with_change(cell: Text, row: BlockRow) -> Text:
    """`cell`, then the change under it, one part a line (`ch 64→128`, `112→56`), dim."""
    for part in row.change.split(", ") if row.change else ():
        cell.append("\n")
        cell.append(part, style=DETAIL_STYLE)
    return cell


def _output_and_change(row: BlockRow) -> Text:
    return _with_change(Text(row.output), row)


def _stacked(row: BlockRow) -> Text:
    return _with_change(Text(f"{row.input}\n→ {row.output}"), row)


_AFTER_COMMA = re.compile(r"(?<=,) ")
