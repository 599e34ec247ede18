"""`--format tree`: the call tree shows the skips and the breaks, as the table does."""

from __future__ import annotations

import io

from click.testing import CliRunner
from rich.console import Console
from rich.style import Style

from shapetrace.analysis.placement import ancestor_at, block_name
from shapetrace.cli import main
from shapetrace.formatting import compact_shape
from shapetrace.models.reference import trace_reference
from shapetrace.records import BROKEN, Trace
from shapetrace.render.table import STATUS_STYLES
from shapetrace.render.tree import trace_tree, tree_report
from tests.conftest import render, trace_unet


def _notes_under(text: str, name: str) -> list[str]:
    """The lines printed under `name`'s node, before the next node."""
    lines = text.splitlines()
    start = next(number for number, line in enumerate(lines) if f"── {name} " in line)
    notes = []
    for line in lines[start + 1 :]:
        if "── " in line:
            break
        notes.append(line.lstrip("│ "))
    return notes


def test_each_skip_shows_at_both_of_its_ends() -> None:
    trace = trace_unet(224)
    text = render(trace_tree(trace), 200)
    assert len(trace.skips) == 8
    for skip in trace.skips:
        source, target = block_name(trace, skip.source), block_name(trace, skip.target)
        assert f"→ {target} {compact_shape(skip.shape)}" in _notes_under(text, source)
        assert f"← {source} {compact_shape(skip.shape)}" in _notes_under(text, target)
    assert _notes_under(text, "ups.9") == ["← downs.1 64×224×224"]


def test_a_node_without_skips_has_no_note() -> None:
    text = render(trace_tree(trace_unet(224)), 200)
    assert _notes_under(text, "downs.2") == []
    assert _notes_under(text, "conv_mid") == []


def _name_styles(trace: Trace) -> dict[str, Style]:
    """The style each node's name is printed in."""
    console = Console(width=200, file=io.StringIO(), color_system="truecolor")
    styles = {}
    for segment in console.render(trace_tree(trace)):
        name = segment.text.strip()
        if segment.style is not None and name in {layer.name for layer in trace.layers}:
            styles[name] = segment.style
    return styles


def test_the_blocks_that_hold_a_break_are_styled_as_broken() -> None:
    trace = trace_reference(size=(225, 225), chs=(1, 2, 4, 8))
    styles = _name_styles(trace)
    broken = {trace.layers[ancestor_at(trace.layers, brk.layer, 1)].name for brk in trace.breaks}
    assert broken == {"ups.9", "ups.10"}
    for name in broken:
        assert styles[name] == Style.parse(STATUS_STYLES[BROKEN])
    assert styles["ups.8"] == Style.parse("bold")  # the name of a node that did not break


def test_the_report_explains_each_break_after_the_tree() -> None:
    trace = trace_unet(32, (1, 2), variant="as-written")
    text = render(tree_report(trace), 200)
    tree_end = text.index("└── ")
    for number, brk in enumerate(trace.breaks, start=1):
        assert text.index(f"break {number} ({brk.kind}) at {block_name(trace, brk.layer)}") > tree_end
        assert brk.message in text
    assert f"✗ {len(trace.breaks)} breaks (channels)" in text


def test_an_aligned_report_ends_with_the_verdict() -> None:
    text = render(tree_report(trace_unet(64, (1, 2))), 200)
    assert text.splitlines()[-1].startswith("✓ aligned: 4 skips pair down and up")


def test_the_tree_command_prints_skips_and_breaks(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "225", "--format", "tree"])
    assert result.exit_code == 1, result.output
    assert _notes_under(result.output, "ups.9") == ["← downs.1 64×225×225"]
    assert "break 1 (size) at ups.9" in result.output
    assert "size rule: H and W multiples of 8" in result.output
