"""The rendered table: golden files for clean and broken traces, and invariants of its text."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console, RenderableType
from rich.panel import Panel
from rich.style import Style
from rich.text import Span, Text

from shapetrace.records import BROKEN, OK, LayerRecord, MergeOp, SkipPair, Trace
from shapetrace.render.block_table import BlockTable
from shapetrace.render.fast_table import FastTable, Justify
from shapetrace.render.plain import FILE_WIDTH
from shapetrace.render.table import trace_report, trace_table
from tests.conftest import render, trace_unet


def test_default_unet_table(golden: Callable[[str, str], None]) -> None:
    # At the width files and pipes get, every column has room: the table README shows.
    golden("test_default_unet_table.txt", render(trace_report(trace_unet(224)), width=FILE_WIDTH))


def test_default_unet_table_at_80_columns(golden: Callable[[str, str], None]) -> None:
    golden("test_default_unet_table_at_80_columns.txt", render(trace_report(trace_unet(224)), width=80))


def test_size_break_table(golden: Callable[[str, str], None]) -> None:
    from shapetrace.models.reference import trace_reference

    trace = trace_reference(size=(225, 225), chs=(1, 2, 4, 8))
    golden("test_size_break_table.txt", render(trace_report(trace), width=160))


def test_params_column_sums_to_the_total() -> None:
    trace = trace_unet(64, (1, 2, 4))
    text = render(trace_table(trace), width=200)
    rows = [line for line in text.splitlines() if re.match(r"^│\s+\d+ │", line)]
    params = [int(line.rstrip(" │").rsplit("│", 1)[-1].strip().replace(",", "")) for line in rows]
    assert sum(params) == trace.total_params
    assert f"{trace.total_params:,}" in text


def test_every_skip_appears_at_both_ends() -> None:
    text = render(trace_table(trace_unet(64, (1, 2, 4))), width=200)
    assert text.count("→ ups.") == text.count("← downs.") == 6


# --- the one-pass table draws what rich's Table draws ------------------------------------


def _styled_characters(renderable: RenderableType, width: int, **console_options: Any) -> list[tuple[str, Any]]:
    """Each character printed, with its style: equal lists look identical on any terminal."""
    console = Console(width=width, file=io.StringIO(), color_system="truecolor", **console_options)
    null = Style.null()  # no style and the empty style look alike
    return [(char, segment.style or null) for segment in console.render(renderable) for char in segment.text]


def _hostile_trace() -> Trace:
    """Names rich could take for markup or emoji, wide characters, and cells that must wrap."""
    shape = (1, 4, 8, 8)
    names = ["[bold]blocks[0]", ":smile: 层层层", "a" * 70, "x y z " * 12, "ok"]
    layers = [LayerRecord(0, "", "Net", 0, None, (shape,), (shape,), 10)]
    for index, name in enumerate(names, start=1):
        kind = "Type\u00a0With\u00a0No\u00a0Break" if index == 2 else "[red]Conv2d"
        layers.append(
            LayerRecord(index, name, kind, 1, 0, (shape,), ((1, 4000, 8, 8),), 2, BROKEN if index == 3 else OK)
        )
    skips = (SkipPair(1, 4, MergeOp.CAT, 1, shape, 3, shape), SkipPair(2, 5, MergeOp.CAT, 1, shape, 4, shape))
    return Trace("[Net]", (shape,), (shape,), tuple(layers), skips, device="meta", config=(("chs", "[1, 2]"),))


def _tables() -> dict[str, tuple[BlockTable | FastTable, int]]:
    every_call = trace_unet(64, (1, 2))
    deepest = max(layer.depth for layer in every_call.layers) + 1
    return {
        "default at 120": (trace_table(trace_unet(224)), 120),
        "default at 110, type under the name": (trace_table(trace_unet(224)), 110),
        "default at 100, skips under the name": (trace_table(trace_unet(224)), 100),
        "default at 80, change under the output": (trace_table(trace_unet(224)), 80),
        "default at 200, nothing wraps": (trace_table(trace_unet(224)), 200),
        "default at 60, columns collapse": (trace_table(trace_unet(224)), 60),
        "default at 20, reduced evenly": (trace_table(trace_unet(224)), 20),
        "channel breaks and grey rows": (trace_table(trace_unet(32, (1, 2), variant="as-written")), 120),
        "every call, sections": (trace_table(every_call, deepest), 100),
        "every call, sections, narrow": (trace_table(every_call, deepest), 70),
        "hostile names": (trace_table(_hostile_trace()), 90),
        "hostile names, narrow": (trace_table(_hostile_trace()), 30),
        "no rows": (trace_table(Trace("Empty", (), (), ())), 80),
    }


@pytest.mark.parametrize("case", list(_tables()))
def test_the_one_pass_table_draws_what_rich_s_table_draws(case: str) -> None:
    table, width = _tables()[case]
    assert _styled_characters(table, width) == _styled_characters(table.as_rich_table(), width)


@pytest.mark.parametrize("console_options", [{"safe_box": True, "legacy_windows": True}, {"force_terminal": False}])
def test_the_one_pass_table_uses_rich_s_box_substitutions(console_options: dict[str, Any]) -> None:
    table = trace_table(trace_unet(64, (1, 2)))
    ours = _styled_characters(table, 100, **console_options)
    assert ours == _styled_characters(table.as_rich_table(), 100, **console_options)


def test_the_one_pass_table_measures_like_rich_s_table_inside_a_panel() -> None:
    table = trace_table(trace_unet(64, (1, 2)))
    ours = _styled_characters(Panel.fit(table), 200)
    assert ours == _styled_characters(Panel.fit(table.as_rich_table()), 200)


def _edge_table(cells: list[Text | str], justify: Justify, style: str, header: str) -> FastTable:
    table = FastTable(title="[t]", caption=":x:")
    for _ in cells:
        table.add_column(header, footer=header, justify=justify)
    table.add_row(*cells, style=style)
    table.add_row(*cells)
    return table


EDGE_CELLS: dict[str, list[Text | str]] = {
    "trailing and leading spaces": ["ab ", " ab", "   "],
    "a justify of the cell's own": [Text("ab", justify="right"), Text("ab", justify="center")],
    "an unknown style name": [Text("ab", style="notastyle"), Text("cd", style="bold notacolor")],
    "wide and combining characters": ["层层", "e\u0301", "\u0301", "a\tb"],
    "markup and emoji codes": ["[b]x", ":smile:"],
    "empty and one character": ["", "x"],
    "several lines and spans": [
        Text.assemble(("ab\nc", "bold"), ("d", "red"), "\n", ("e", "dim")),  # a span across a line break
        Text("ab\n\ncd\n", style="green"),  # an empty line, a trailing newline
        Text("ab\ncd ", spans=[Span(1, 4, "italic")]),  # a trailing space under a right justify
        Text("ab\nc层"),
    ],
}


@pytest.mark.parametrize("justify", ["left", "right"])
@pytest.mark.parametrize("style", ["", "on blue"])
@pytest.mark.parametrize("case", list(EDGE_CELLS))
def test_the_one_pass_table_leaves_to_rich_what_rich_decides(case: str, justify: Justify, style: str) -> None:
    table = _edge_table(EDGE_CELLS[case], justify, style, header="[b]h :smile:")
    for width in (3, 4, 5, 9, 30):
        assert _styled_characters(table, width) == _styled_characters(table.as_rich_table(), width), width
