"""The DOT diagram: golden files, invariants parsed from its text, where dot puts things, image export."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import cast

import pytest
import torch
from rich.console import RenderableType
from torch import nn

from shapetrace.analysis import placement as analysis
from shapetrace.api import run_trace
from shapetrace.records import BROKEN, FAILED, Break, BreakKind, LayerRecord, MergeOp, Shape, SkipPair, Trace
from shapetrace.render.dot import BREAK_COLOR, trace_dot
from shapetrace.render.images import GraphvizMissingError, render_image
from tests.conftest import trace_unet

GOLDEN = Path(__file__).parent / "golden"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")


def check_golden(request: pytest.FixtureRequest, text: str) -> None:
    """Compare with tests/golden/<test name>.dot; rewrite it under SHAPETRACE_UPDATE_GOLDENS=1."""
    path = GOLDEN / f"{request.node.name}.dot"
    update = os.environ.get("SHAPETRACE_UPDATE_GOLDENS") == "1"
    if update or request.config.getoption("--update-goldens", default=False):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path.name} is missing; run with SHAPETRACE_UPDATE_GOLDENS=1 to write it"
    assert text == path.read_text(encoding="utf-8"), f"{path.name} differs; review, then rerun with the update flag"


@pytest.fixture(scope="module")
def default_trace() -> Trace:
    return trace_unet(224)


@pytest.fixture(scope="module")
def size_break_trace() -> Trace:
    return trace_unet(225)


@pytest.fixture(scope="module")
def channel_break_trace() -> Trace:
    return trace_unet(64, (1, 2, 4), n_channels=8, variant="as-written")


@pytest.fixture(scope="module")
def chain_trace() -> Trace:
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    return run_trace(model, (torch.empty(1, 3, 16, 16, device="meta"),))


class OneSkipTwoMerges(nn.Module):
    """One down output concatenated into two up layers, as diffusers does across its blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.up1 = nn.Conv2d(8, 4, 3, padding=1)
        self.up2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        y = self.up(self.mid(self.pool(skip)))
        y = self.up1(torch.cat((y, skip), dim=1))
        return self.up2(torch.cat((y, skip), dim=1))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def shared_skip_trace() -> Trace:
    with torch.device("meta"):
        model = OneSkipTwoMerges()
    return run_trace(model, (torch.empty(1, 3, 8, 8, device="meta"),))


# --- parsing the DOT text ----------------------------------------------------------------


def rank_groups(dot: str) -> list[set[str]]:
    return [set(re.findall(r"(\w+);", body)) for body in re.findall(r"\{ rank=same; ([^}]*)\}", dot)]


def skip_edges(dot: str) -> list[tuple[str, str]]:
    return re.findall(r"^  (\w+) -> (\w+) \[style=dashed", dot, flags=re.MULTILINE)


def record_nodes(dot: str) -> dict[int, str]:
    """Record node id -> its whole declaration line."""
    return {int(node): line for line, node in re.findall(r"^(  (\d+) \[label=.*)$", dot, flags=re.MULTILINE)}


def sides(trace: Trace) -> dict[int, str]:
    rows = analysis.display_rows(trace)
    return {index: placement.side for index, placement in analysis.placements(trace, rows).items()}


# --- golden files ------------------------------------------------------------------------


def test_dot_default_unet(request: pytest.FixtureRequest, default_trace: Trace) -> None:
    check_golden(request, trace_dot(default_trace))


def test_dot_size_break(request: pytest.FixtureRequest, size_break_trace: Trace) -> None:
    check_golden(request, trace_dot(size_break_trace))


# --- invariants --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default_trace", "size_break_trace", "channel_break_trace"])
def test_every_skip_is_a_rung_between_down_and_up_on_one_rank(request: pytest.FixtureRequest, name: str) -> None:
    trace = request.getfixturevalue(name)
    dot = trace_dot(trace)
    side = sides(trace)
    rungs = skip_edges(dot)
    lifted = {
        (analysis.ancestor_at(trace.layers, skip.source, 1), analysis.ancestor_at(trace.layers, skip.target, 1))
        for skip in trace.skips
    }
    assert {(int(source), int(target)) for source, target in rungs} == lifted
    for source, target in rungs:
        assert (side[int(source)], side[int(target)]) == ("down", "up")
        assert any({source, target} <= group for group in rank_groups(dot)), (source, target)


def test_a_shared_skip_pins_one_rung_only(shared_skip_trace: Trace) -> None:
    dot = trace_dot(shared_skip_trace)
    side = sides(shared_skip_trace)
    assert skip_edges(dot) == [("1", "5"), ("1", "6")]
    assert "label=<4×8×8>, constraint=false];" in dot  # the outer rung slants instead of chaining ranks
    for group in rank_groups(dot):
        arms = [side[int(node)] for node in group if node.isdigit() and side[int(node)] != "mid"]
        assert len(arms) == len(set(arms)), group  # never two nodes of one arm on one rank
    assert {"1", "5"} in rank_groups(dot)


@pytest.mark.parametrize("name", ["size_break_trace", "channel_break_trace"])
def test_every_break_node_is_red_with_its_message(request: pytest.FixtureRequest, name: str) -> None:
    trace = request.getfixturevalue(name)
    nodes = record_nodes(trace_dot(trace))
    broken = {analysis.ancestor_at(trace.layers, brk.layer, 1) for brk in trace.breaks}
    assert broken
    red = {index for index, line in nodes.items() if f'color="{BREAK_COLOR}"' in line}
    assert red == broken
    for brk in trace.breaks:
        # The message is wrapped across lines; its last word must appear on the layer's node.
        assert brk.message.split()[-1] in nodes[analysis.ancestor_at(trace.layers, brk.layer, 1)]


def test_downstream_rows_are_grey(channel_break_trace: Trace) -> None:
    nodes = record_nodes(trace_dot(channel_break_trace))
    downstream = [row.index for row in analysis.display_rows(channel_break_trace) if row.status == "downstream"]
    assert downstream
    for index in downstream:
        assert "#9e9e9e" in nodes[index]


def test_node_ids_are_record_indices(default_trace: Trace) -> None:
    nodes = record_nodes(trace_dot(default_trace))
    rows = analysis.display_rows(default_trace)
    assert sorted(nodes) == [row.index for row in rows]
    for row in rows:
        assert f"<b>{row.name}</b>" in nodes[row.index]
        assert "×".join(map(str, row.outputs[0][1:])) in nodes[row.index]  # C×H×W, batch in the title


def test_inputs_title_and_timestep(default_trace: Trace) -> None:
    dot = trace_dot(default_trace)
    assert re.search(r"\{ rank=min; input0; input1; output;", dot)
    assert "<b>UNet</b>" in dot
    assert "chs=1,2,4,8" in dot
    assert "batch 2" in dot
    # Every block that takes the timestep vector gets exactly one light tick from a rail.
    takers = [row.index for row in analysis.display_rows(default_trace)[1:] if any(len(s) < 3 for s in row.inputs)]
    ticks = re.findall(r"^  (?:rail(\d+) -> (\d+) \[|(\d+) -> rail(\d+) \[dir=back)", dot, flags=re.MULTILINE)
    assert sorted(int(a or c) for a, b, c, d in ticks) == sorted(takers)


def test_up_path_edges_climb(default_trace: Trace) -> None:
    dot = trace_dot(default_trace)
    side = sides(default_trace)
    rows = analysis.display_rows(default_trace)
    for tail, head in itertools.pairwise(rows[1:]):
        if side[tail.index] == "up":
            assert f"  {head.index} -> {tail.index} [dir=back];" in dot


def test_same_trace_gives_identical_dot(default_trace: Trace) -> None:
    assert trace_dot(default_trace) == trace_dot(default_trace)
    assert trace_dot(trace_unet(224)) == trace_dot(default_trace)  # a fresh trace too: no id() anywhere


def test_chain_model_has_no_rank_pairs(chain_trace: Trace) -> None:
    dot = trace_dot(chain_trace)
    assert "rank=same" not in dot
    assert "style=dashed" not in dot
    assert re.findall(r"^  (\S+) -> (\S+);$", dot, flags=re.MULTILINE) == [
        ("input0", "1"),
        ("1", "2"),
        ("2", "3"),
        ("3", "output"),
    ]


def test_labels_are_escaped() -> None:
    trace = Trace(
        model='Net<"&">',
        inputs=((1, 3, 8, 8),),
        outputs=(),
        layers=(
            LayerRecord(0, "", 'Net<"&">', 0, None, ((1, 3, 8, 8),), (), 0, FAILED),
            LayerRecord(1, "a<b>", "Odd&Kind", 1, 0, ((1, 3, 8, 8),), ((1, 3, 8, 8),), 0, BROKEN),
        ),
        breaks=(Break(1, 1, BreakKind.ERROR, "a<b> raised: shape '[5, 7]' & \"x\" > y"),),
    )
    dot = trace_dot(trace)
    assert "<b>a&lt;b&gt;</b>" in dot
    assert "Odd&amp;Kind" in dot
    assert "Net&lt;&quot;&amp;&quot;&gt;" in dot
    assert "&amp; &quot;x&quot; &gt; y" in dot
    if shutil.which("dot"):
        subprocess.run(["dot", "-Tsvg"], input=dot.encode(), check=True, capture_output=True)


@needs_dot
@pytest.mark.parametrize(
    "trace",
    [
        Trace("Empty", (), (), ()),
        Trace(
            "Leaf",
            ((1, 3, 4, 4),),
            ((1, 3, 4, 4),),
            (LayerRecord(0, "", "Leaf", 0, None, ((1, 3, 4, 4),), ((1, 3, 4, 4),), 0),),
        ),
    ],
    ids=["no calls", "one call"],
)
def test_degenerate_traces_still_parse(trace: Trace) -> None:
    subprocess.run(["dot", "-Tsvg"], input=trace_dot(trace).encode(), check=True, capture_output=True)


def _bare_row(index: int, depth: int = 1, parent: int = 0, inputs: tuple[Shape, ...] = ()) -> LayerRecord:
    return LayerRecord(index, "", "Conv2d", depth, parent, inputs, (), 0)


@needs_dot
def test_a_rung_beside_a_main_edge_is_still_drawn() -> None:
    # Found by the fuzz test: the skip's source also precedes its target on the main path,
    # and dot 2.43 dropped the edge ("Error: in routesplines ... lost 6 8 edge", exit 1).
    layers = (
        LayerRecord(0, "", "Conv2d", 0, None, (), (), 0),
        *(_bare_row(index) for index in (1, 2, 3)),
        _bare_row(4, inputs=((2, 3, 224, 224),)),
        *(_bare_row(index) for index in (5, 6, 7)),
        _bare_row(8, depth=2, parent=7, inputs=((),)),
        _bare_row(9),
    )
    trace = Trace("Conv2d", (), (), layers, skips=(SkipPair(6, 7, MergeOp.CAT, 0, (), 0, ()),), device="meta")
    dot = trace_dot(trace, depth=2)
    completed = subprocess.run(["dot", "-Tplain"], input=dot, text=True, capture_output=True, check=False)
    assert completed.returncode == 0, completed.stderr
    drawn = [sorted(line.split()[1:3]) for line in completed.stdout.splitlines() if line.startswith("edge")]
    assert drawn.count(["6", "8"]) == 2  # the main edge and the rung, now labelled from outside
    assert re.search(r"6 -> 8 \[style=dashed[^]]*xlabel=<", dot)


def test_depth_must_be_positive(default_trace: Trace) -> None:
    with pytest.raises(ValueError, match="depth must be at least 1: depth=0"):
        trace_dot(default_trace, depth=0)


# --- what dot makes of it ----------------------------------------------------------------


def positions(dot: str) -> dict[str, tuple[float, float]]:
    plain = subprocess.run(["dot", "-Tplain"], input=dot.encode(), check=True, capture_output=True).stdout.decode()
    return {
        fields[1]: (float(fields[2]), float(fields[3]))
        for fields in (line.split() for line in plain.splitlines())
        if fields[0] == "node"
    }


@needs_dot
def test_dot_lays_it_out_as_a_u(default_trace: Trace) -> None:
    dot = trace_dot(default_trace)
    where = positions(dot)
    side = sides(default_trace)
    for source, target in skip_edges(dot):
        assert where[source][1] == where[target][1]  # one rank: a horizontal rung
        assert where[source][0] < where[target][0]  # down on the left, up on the right
    heights = {name: [where[str(index)][1] for index in side if side[index] == name] for name in ("down", "mid", "up")}
    assert max(heights["mid"]) < min(heights["down"][1:])  # the bottleneck is the bottom of the U
    assert max(heights["mid"]) < min(heights["up"])
    assert where["input0"][1] > max(heights["down"]) and where["output"][1] > max(heights["up"])


@needs_dot
def test_deeper_display_still_makes_a_u() -> None:
    trace = trace_unet(32, (1, 2), n_channels=8)
    dot = trace_dot(trace, depth=2)
    where = positions(dot)
    for source, target in skip_edges(dot):
        assert where[source][1] == where[target][1]
        assert where[source][0] < where[target][0]


# --- images ------------------------------------------------------------------------------


@needs_dot
@pytest.mark.parametrize(("file_format", "magic"), [("svg", b"<svg"), ("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_render_image(tmp_path: Path, chain_trace: Trace, file_format: str, magic: bytes) -> None:
    path = render_image(trace_dot(chain_trace), tmp_path / f"model.{file_format}", file_format)
    data = path.read_bytes()
    assert path == tmp_path / f"model.{file_format}"
    assert magic in data[:400]


def test_render_image_without_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chain_trace: Trace) -> None:
    monkeypatch.setenv("PATH", "")
    dot = trace_dot(chain_trace)
    with pytest.raises(GraphvizMissingError, match=r"apt-get install graphviz.*brew.*conda.*model\.dot") as error:
        render_image(dot, tmp_path / "model.png", "png")
    assert "\n" not in str(error.value)
    assert (tmp_path / "model.dot").read_text(encoding="utf-8") == dot
    assert not (tmp_path / "model.png").exists()


def test_render_image_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be one of svg, png, pdf: format='gif'"):
        render_image("digraph {}", tmp_path / "model.gif", "gif")


def test_trace_shows_itself_as_svg_in_notebooks_and_as_the_table_in_rich() -> None:
    from tests.conftest import render

    trace = trace_unet(32, (1, 2))
    # Trace.__rich__ is typed `object` (records does not import rich); rich takes it as a renderable.
    assert "✓ aligned" in render(cast("RenderableType", trace))
    if shutil.which("dot") is None:
        assert trace._repr_svg_() is None
    else:
        svg = trace._repr_svg_()
        assert svg is not None and svg.lstrip().startswith("<?xml") and "downs.0" in svg
