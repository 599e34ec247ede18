"""The HTML report as text: self-contained, its DOM hooks in place, its data intact, the CLI's exit status.

What the page does when clicked is tested in a real browser in test_browser.py.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shapetrace import jsonio
from shapetrace.analysis.placement import display_rows
from shapetrace.cli import main
from shapetrace.records import BreakKind, LayerRecord, Outcome, SweepResult, Trace
from shapetrace.render.dot import trace_dot
from shapetrace.render.dot_layout import layout_of
from shapetrace.render.html import trace_html
from shapetrace.render.sweep_html import sweep_html
from tests.conftest import trace_unet

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
DRAWN = re.compile(r'<g id="layer-(\d+)" class="node layer" data-layer="([^"]*)"')
DATA = re.compile(r'<script type="application/json" id="trace-data">(.*?)</script>', re.DOTALL)


@pytest.fixture(scope="module")
def broken_trace() -> Trace:
    return trace_unet(225)


def _data(page: str) -> dict[str, Any]:
    found = DATA.search(page)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


@needs_dot
@pytest.mark.parametrize(("depth", "count", "example"), [(1, 28, (157, "ups.9")), (2, 152, (160, "ups.9.conv1"))])
def test_every_drawn_block_names_its_layer(
    broken_trace: Trace, depth: int, count: int, example: tuple[int, str]
) -> None:
    page = trace_html(broken_trace, depth)
    drawn = {(int(index), name) for index, name in DRAWN.findall(page)}
    assert drawn == {(row.index, row.name) for row in layout_of(broken_trace, depth).rows}
    assert len(drawn) == count and example in drawn


@needs_dot
def test_report_is_one_file_that_loads_nothing(broken_trace: Trace) -> None:
    page = trace_html(broken_trace)
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and " src=" not in page and "@import" not in page
    assert page.count("<svg") == 1 and page.count("<style>") == 1


@needs_dot
def test_page_keys_the_diagram_itself_and_leaves_out_the_dot_title(broken_trace: Trace) -> None:
    page = trace_html(broken_trace)
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert "chs=1,2,4,8" not in svg and "n_channels=64" not in svg  # the DOT title's facts
    assert "chs 1,2,4,8 · n_channels 64" in page  # said once, in the header
    keys = re.findall(r'<span class="key"[^>]*>(?:<span class="swatch"[^>]*></span>)?([^<]*)</span>', page)
    assert keys == ["down", "mid", "up", "break", "after a break", "- - skip C×H×W", "── timestep"]
    assert "labelloc" not in trace_dot(broken_trace, title=False) and "labelloc" in trace_dot(broken_trace)


def test_embedded_json_survives_markup_in_names() -> None:
    name = "</script><script>alert(1)</script><!-- & \u2028"
    layer = LayerRecord(0, "", name, 0, None, ((1, 3, 8, 8),), ((1, 3, 8, 8),), 0)
    trace = Trace(model=name, inputs=((1, 3, 8, 8),), outputs=((1, 3, 8, 8),), layers=(layer,))
    page = trace_html(trace)
    assert "<script>alert(1)" not in page
    assert _data(page)["trace"]["model"] == name
    assert _data(page)["trace"] == json.loads(trace.to_json())


def test_without_graphviz_the_page_says_so_and_keeps_the_rest(
    broken_trace: Trace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    page = trace_html(broken_trace)
    assert "<svg" not in page
    assert 'id="no-diagram"' in page and "Graphviz 'dot' was not found" in page
    assert 'id="causes"' in page and "floored an odd size: 225 → 112" in page
    assert page.count("<tr class=") == len(display_rows(broken_trace, 64))


def test_table_has_a_row_per_call_and_hides_the_deeper_ones(broken_trace: Trace) -> None:
    page = trace_html(broken_trace)
    rows = re.findall(r'<tr class="([^"]*)" data-index="(\d+)" data-depth="(\d+)"[^>]*?( hidden)?>', page)
    calls = display_rows(broken_trace, max(layer.depth for layer in broken_trace.layers))
    assert [int(index) for _, index, _, _ in rows] == [layer.index for layer in calls]
    assert all(bool(hidden) == (int(depth) > 1) for _, _, depth, hidden in rows)
    broken = {int(index) for classes, index, _, _ in rows if "broken" in classes.split()}
    assert {157, 166} <= broken  # ups.9 and ups.10
    assert 'id="filter"' in page and 'id="depth"' in page


def test_view_pairs_each_drawn_skip_both_ways(broken_trace: Trace) -> None:
    view = _data(trace_html(broken_trace))["view"]
    names = {layer.index: layer.name for layer in broken_trace.layers}
    partners = {names[int(node)]: sorted(names[other] for other in others) for node, others in view["partners"].items()}
    assert partners["ups.9"] == ["downs.1"] and partners["downs.1"] == ["ups.9"]
    assert len(partners) == 2 * len(broken_trace.skips)
    assert view["node_of"][158] == 157  # a call inside ups.9 is drawn as ups.9


def test_cost_fields_show_when_the_json_has_them(broken_trace: Trace, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = jsonio.to_dict

    def with_cost(trace: Trace) -> dict[str, Any]:
        data = plain(trace)
        for layer in data["layers"]:
            layer["flops"] = 2 * layer["params"]
            layer["output_bytes"] = 4096
        data["cost"] = {"flops": 3_000_000_000, "inference_peak_bytes": 2_500_000_000, "budget": None}
        return data

    monkeypatch.setattr(jsonio, "to_dict", with_cost)
    page = trace_html(broken_trace)
    assert '<th class="num">FLOPs</th>' in page and '<th class="num">output bytes</th>' in page
    assert "4.10 k" in page  # output bytes, scaled
    assert re.search(r'id="cost">flops 3.00 G · inference peak bytes 2.50 GB<', page)


def test_notebook_shows_the_same_report_in_a_frame(broken_trace: Trace) -> None:
    frame = broken_trace._repr_html_()
    found = re.fullmatch(
        r'<iframe srcdoc="([^"]*)" sandbox="allow-scripts".*style="[^"]*width:100%[^"]*"></iframe>', frame
    )
    assert found is not None
    assert html.unescape(found.group(1)) == trace_html(broken_trace)
    if shutil.which("dot") is not None:
        svg = broken_trace._repr_svg_()
        assert svg is not None and svg.lstrip().startswith("<?xml")


def test_sd15_report_stays_under_a_megabyte() -> None:
    pytest.importorskip("diffusers")
    from shapetrace import trace
    from tests.test_diffusers import _stable_diffusion_15, _stable_diffusion_inputs

    args, kwargs = _stable_diffusion_inputs()
    sd15 = trace(_stable_diffusion_15(), *args, **kwargs)
    page = trace_html(sd15)
    assert len(page.encode("utf-8")) < 1_000_000
    assert len(_data(page)["trace"]["layers"]) == len(sd15.layers) > 600
    if shutil.which("dot") is not None:
        assert len(DRAWN.findall(page)) == len(layout_of(sd15, 1).rows)


def test_cli_html_exit_status_is_the_verdict(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["unet", "--size", "225", "--format", "html"])
    assert result.exit_code == 1
    assert result.output.startswith("<!DOCTYPE html>") and "✗ 2 breaks (size), 1 cause; first at ups.9" in result.output
    report = tmp_path / "report.html"
    result = runner.invoke(main, ["unet", "--size", "64", "--chs", "1,2", "-o", str(report)])
    assert result.exit_code == 0, result.output
    assert f"wrote {report}" in result.output
    assert "✓ aligned" in report.read_text(encoding="utf-8")


def test_show_writes_the_report_of_a_saved_trace(runner: CliRunner, tmp_path: Path) -> None:
    saved, report = tmp_path / "trace.json", tmp_path / "report.html"
    assert runner.invoke(main, ["unet", "--size", "225", "--chs", "1,2", "-o", str(saved)]).exit_code == 1
    result = runner.invoke(main, ["show", str(saved), "-o", str(report)])
    assert result.exit_code == 1, result.output  # the saved trace's verdict
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'data-layer="ups.3"' in page and 'id="causes"' in page


def test_cli_sweep_writes_the_heat_map(runner: CliRunner, tmp_path: Path) -> None:
    report = tmp_path / "sweep.html"
    result = runner.invoke(main, ["sweep", "--sizes", "224:226", "--n-channels", "8", "-o", str(report)])
    assert result.exit_code == 1, result.output
    page = report.read_text(encoding="utf-8")
    cells = re.findall(r'<span class="cell ([^"]*)" tabindex="0" data-size="(\d+)" data-kind="(\w*)"', page)
    assert [(size, kind) for _, size, kind in cells] == [("224", ""), ("225", "size"), ("226", "size")]
    assert "1 of 3 sizes aligned" in page
    printed = runner.invoke(main, ["sweep", "--sizes", "224", "--n-channels", "8", "--format", "html"])
    assert printed.exit_code == 0 and printed.output.startswith("<!DOCTYPE html>")


def test_sweep_colours_each_first_break_place_and_draws_rectangles_as_a_grid() -> None:
    outcomes = tuple(
        Outcome(
            (height, width), None if height == width == 32 else BreakKind.SIZE, "ups.9" if height == 33 else "ups.6"
        )
        for height in (32, 33)
        for width in (32, 40, 48)
    )
    page = sweep_html([SweepResult("chs 1,2", outcomes)])
    assert "H \\ W" in page
    classes = re.findall(r'<span class="cell ([^"]*)"[^>]*data-size="([\d×]+)"', page)
    assert [size for _, size in classes] == ["32", "32×40", "32×48", "33×32", "33×40", "33×48"]
    by_place = {outcome.place: cell for outcome, (cell, _) in zip(outcomes, classes, strict=True) if not outcome.ok}
    assert by_place["ups.9"] != by_place["ups.6"]
    assert "1 of 6 sizes aligned" in page
