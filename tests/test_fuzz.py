"""Fuzzed and extreme Traces: every renderer accepts any valid Trace, and JSON round-trips exactly.

The strategies (tests/strategies.py) build arbitrary valid Traces, not only UNet-shaped ones.
CI runs 200 examples of the JSON round trip and 100 of the renderers (the budget of the whole
suite is about a minute on two cores); SHAPETRACE_LONG_PROPERTIES=1 runs 2000 of each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shapetrace import Trace
from shapetrace.analysis.placement import display_rows, placements
from shapetrace.records import (
    BROKEN,
    Break,
    BreakKind,
    BreakSide,
    LayerRecord,
    MergeOp,
    ShapeWarning,
    SideRole,
    SkipPair,
    WarningKind,
)
from shapetrace.render.dot import trace_dot
from shapetrace.render.table import trace_report, trace_table
from shapetrace.render.tree import trace_tree
from tests.conftest import render
from tests.strategies import all_broken_traces, traces

if TYPE_CHECKING:
    from _typeshed import TraceFunction

LONG = os.environ.get("SHAPETRACE_LONG_PROPERTIES", "") not in ("", "0")


def examples(ci: int) -> settings:
    """`ci` examples, or 2000 under SHAPETRACE_LONG_PROPERTIES; never a deadline on a loaded machine."""
    return settings(
        max_examples=2000 if LONG else ci,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


depths = st.integers(1, 4)
ONE_LAYER_FOR_DOT = Trace("Net", ((1, 3, 8, 8),), (), (LayerRecord(0, "", "Net", 0, None, ((1, 3, 8, 8),), (), 0),))


def render_everything(trace: Trace, depth: int) -> str:
    """The table report, the tree, DOT and JSON, as the CLI would produce them."""
    report = render(trace_report(trace, depth))
    render(trace_tree(trace, depth))
    dot = trace_dot(trace, depth)
    assert dot.startswith("digraph shapetrace {") and dot.endswith("}\n")
    assert json.loads(trace.to_json())["ok"] is trace.ok
    return report


@examples(200)
@given(traces())
def test_json_round_trips_exactly(trace: Trace) -> None:
    text = trace.to_json()
    assert Trace.from_json(text) == trace
    assert Trace.from_json(text).to_json() == text
    assert Trace.from_json(trace.to_json(indent=None)) == trace


@examples(100)
@given(traces(), depths)
def test_every_renderer_accepts_any_valid_trace(trace: Trace, depth: int) -> None:
    report = render_everything(trace, depth)
    assert ("✓ aligned" in report) is trace.ok


@examples(60)
@given(traces(), depths, st.integers(10, 160))
def test_the_one_pass_table_prints_what_rich_s_table_prints(trace: Trace, depth: int, width: int) -> None:
    table = trace_table(trace, depth)
    assert render(table, width) == render(table.as_rich_table(), width)


@examples(50)
@given(all_broken_traces(), depths)
def test_every_renderer_accepts_an_all_broken_trace(trace: Trace, depth: int) -> None:
    report = render_everything(trace, depth)
    count = len(trace.breaks)
    assert f"✗ {count} break{'s' * (count != 1)}" in report
    assert Trace.from_json(trace.to_json()) == trace


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
@settings(max_examples=200 if LONG else 20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(), depths)
def test_graphviz_accepts_the_dot_of_any_valid_trace(trace: Trace, depth: int) -> None:
    completed = subprocess.run(
        ["dot", "-Tsvg", "-o", os.devnull],
        input=trace_dot(trace, depth),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "syntax error" not in completed.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
@pytest.mark.parametrize(
    "trace",
    [
        dataclasses.replace(ONE_LAYER_FOR_DOT, model="]"),
        dataclasses.replace(ONE_LAYER_FOR_DOT, model="\x9a"),
        dataclasses.replace(ONE_LAYER_FOR_DOT, breaks=(Break(0, 0, BreakKind.ERROR, "]"),)),
    ],
    ids=["model ]", "unprintable model", "break message ]"],
)
def test_graphviz_accepts_brackets_and_unprintable_names(trace: Trace) -> None:
    completed = subprocess.run(
        ["dot", "-Tsvg", "-o", os.devnull], input=trace_dot(trace), capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr


# --- explicit extremes --------------------------------------------------------------------------

EMPTY = Trace(model="Empty", inputs=(), outputs=(), layers=())
ONE_LAYER = Trace(
    model="Linear",
    inputs=((2, 8),),
    outputs=((2, 4),),
    layers=(LayerRecord(0, "", "Linear", 0, None, ((2, 8),), ((2, 4),), 36),),
)
ALL_BROKEN = Trace(
    model="Net",
    inputs=((1, 3, 9, 9),),
    outputs=(),
    layers=(
        LayerRecord(0, "", "Net", 0, None, ((1, 3, 9, 9),), (), 10, BROKEN),
        LayerRecord(1, "conv", "Conv2d", 1, 0, ((1, 3, 9, 9),), (), 10, BROKEN),
    ),
    breaks=(
        Break(0, 0, BreakKind.ERROR, "Net (Net) raised ValueError: no", "ValueError"),
        Break(1, 1, BreakKind.CHANNELS, "conv (Conv2d) expects 4 channels but receives 3", "conv2d", 1, expected=(4,)),
    ),
)


@pytest.mark.parametrize("trace", [EMPTY, ONE_LAYER, ALL_BROKEN], ids=["empty", "one layer", "all broken"])
@pytest.mark.parametrize("depth", [1, 3])
def test_every_renderer_accepts_the_extremes(trace: Trace, depth: int) -> None:
    render_everything(trace, depth)
    assert Trace.from_json(trace.to_json()) == trace


def test_an_empty_trace_says_so() -> None:
    report = render(trace_report(EMPTY))
    assert "Empty · input  · device meta" in report
    assert "✓ aligned: 0 skips pair down and up; [] → []" in report


def _nested_unet(blocks_per_side: int, children: int) -> Trace:
    """A UNet-like trace: down and up blocks under the model, each with `children` nested calls
    two levels deep, and a skip from each down block to its mirror up block."""
    layers = [LayerRecord(0, "", "BigUNet", 0, None, ((2, 3, 64, 64), (2,)), ((2, 3, 64, 64),), 10**9)]
    blocks = []
    for side in ("downs", "ups"):
        for number in range(blocks_per_side):
            block = len(layers)
            blocks.append(block)
            channels = 64 + number % 7
            shape = (2, channels, 32, 32)
            layers.append(LayerRecord(block, f"{side}.{number}", "ResBlock", 1, 0, (shape, (2, 256)), (shape,), 99))
            for child in range(children):
                parent = block if child % 3 == 0 else len(layers) - 1
                depth = layers[parent].depth + 1
                name = f"{layers[parent].name}.layer{child}"
                layers.append(LayerRecord(len(layers), name, "Conv2d", depth, parent, (shape,), (shape,), 9))
    downs, ups = blocks[:blocks_per_side], blocks[blocks_per_side:]
    skips = tuple(
        SkipPair(down + 1, up, MergeOp.CAT, 1, (2, 64, 32, 32), up - 1, (2, 64, 32, 32))
        for down, up in zip(downs, reversed(ups), strict=True)
    )
    last = ups[-1]
    brk = Break(
        last,
        last + 1,
        BreakKind.SIZE,
        f"ups.{blocks_per_side - 1} (ResBlock): torch.cat(dim=1) joins up path [2, 64, 32, 32] and skip",
        "cat",
        1,
        "cause",
        "fix",
        (
            BreakSide(SideRole.UP_PATH, (2, 64, 32, 32), last - 1),
            BreakSide(SideRole.SKIP, (2, 64, 33, 33), downs[0] + 1),
        ),
        (2, 64, 32, 32),
    )
    warning = ShapeWarning(downs[1], WarningKind.FLOORED, "downs.1 floored 33 → 16", (33, 33), (16, 16))
    return Trace(
        "BigUNet", ((2, 3, 64, 64), (2,)), ((2, 3, 64, 64),), tuple(layers), skips, (brk,), (warning,), device="cpu"
    )


def test_a_10000_layer_trace_renders() -> None:
    trace = _nested_unet(blocks_per_side=100, children=49)
    assert len(trace.layers) == 10_001
    report = render(trace_report(trace))
    assert "ups.99" in report and "✗ 1 break (size)" in report
    assert "ups.99" in render(trace_tree(trace))
    assert trace_dot(trace).count("rank=same") >= 100  # a rung per skip
    assert "ups.99" in trace_dot(trace, 3)
    assert Trace.from_json(trace.to_json()) == trace


def _flat_unet(rows: int) -> Trace:
    """Every call a block of the model: rows/2 skips between mirrored blocks (an nn.Sequential UNet)."""
    shape = (2, 8, 32, 32)
    layers = [LayerRecord(0, "", "FlatUNet", 0, None, (shape,), (shape,), 1)]
    layers += [LayerRecord(i, f"blocks.{i}", "Conv2d", 1, 0, (shape,), (shape,), 1) for i in range(1, rows)]
    skips = tuple(SkipPair(i, rows - i, MergeOp.CAT, 1, shape, rows - i - 1, shape) for i in range(1, rows // 2))
    return Trace("FlatUNet", (shape,), (shape,), tuple(layers), skips)


def _lines_run(build: Callable[[Trace], object], trace: Trace) -> int:
    """Lines of Python executed by `build(trace)`: a measure of work that no machine load changes."""
    count = 0

    def tracer(frame: FrameType, event: str, argument: object) -> TraceFunction:
        nonlocal count
        count += event == "line"
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        build(trace)
    finally:
        sys.settrace(previous)
    return count


def _growth(build: Callable[[Trace], object], small: int, large: int) -> float:
    """How much more work `build` does on the large flat trace than on the small one."""
    return _lines_run(build, _flat_unet(large)) / _lines_run(build, _flat_unet(small))


# 4x the rows: about 4x the work if linear, 16x if quadratic.
def test_the_table_layout_of_a_flat_trace_grows_linearly() -> None:
    assert _growth(lambda trace: placements(trace, display_rows(trace)), 250, 1000) < 6


def test_the_table_of_a_flat_trace_grows_linearly() -> None:
    assert _growth(trace_table, 250, 1000) < 6


def test_the_dot_of_a_flat_trace_grows_linearly() -> None:
    # Once quadratic: dotlayout._pinned compared every rung with every pinned one (8 s for 10,000 rows).
    assert _growth(trace_dot, 250, 1000) < 6


def test_a_trace_survives_a_json_file_round_trip(tmp_path: Path) -> None:
    """A concrete file: what `shapetrace diff` reads back."""
    trace = dataclasses.replace(ALL_BROKEN, config=(("target", 'file.py:Net "quoted" [bold]'),))
    path = tmp_path / "trace.json"
    path.write_text(trace.to_json(), encoding="utf-8")
    assert Trace.from_json(path.read_text(encoding="utf-8")) == trace
