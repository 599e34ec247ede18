"""Narrow terminals and pipes: the table folds columns instead of splitting words, and output
that goes to a file or a pipe is neither wrapped nor padded with spaces."""

from __future__ import annotations

import io
import re

import pytest
import torch
from click.testing import CliRunner

from shapetrace import Trace, trace
from shapetrace.analysis.placement import block_name, display_rows, main_input
from shapetrace.cli import main
from shapetrace.formatting import compact_shape
from shapetrace.render.plain import FILE_WIDTH, TrimmedLines, plain_text
from shapetrace.render.table import trace_report, trace_table
from tests.conftest import render, trace_unet


def _cells(text: str) -> list[str]:
    """The text of every cell on every line of the table: what lies between two borders."""
    return [part.strip() for line in text.splitlines() if line.startswith(("│", "┃")) for part in line.split("│")[1:-1]]


def _headers(text: str) -> list[str]:
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    return [part.strip() for part in header.split("┃")[1:-1]]


def _assert_every_row_reads_whole(trace: Trace, text: str, width: int) -> None:
    """No line is wider than the console, and every name, type, shape and skip of every row
    is printed whole in one cell (a split one would show as two pieces)."""
    assert max(len(line) for line in text.splitlines()) <= width
    cells = _cells(text)
    words = {word for cell in cells for word in cell.split()}
    for row in display_rows(trace):
        expected = [row.name, row.type, compact_shape(main_input(row)), compact_shape(row.outputs[0])]
        missing = [piece for piece in expected if piece not in words]
        assert not missing, f"{row.name}: {missing} split or cut at width {width}"
    for skip in trace.skips:
        shape = compact_shape(skip.shape)
        for note in (
            f"→ {block_name(trace, skip.target)} {shape}",
            f"← {block_name(trace, skip.source)} {shape}",
        ):
            assert any(note in cell for cell in cells), f"{note!r} is not whole at width {width}"


@pytest.fixture(scope="module")
def default_unet() -> Trace:
    return trace_unet(224)


@pytest.fixture(scope="module")
def diffusers_unet() -> Trace:
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        model = diffusers.UNet2DModel(sample_size=64)
    image = torch.empty(1, 3, 64, 64, device="meta")
    return trace(model, image, torch.zeros(1, dtype=torch.long, device="meta"))


@pytest.mark.parametrize("width", [56, 60, 70, 80, 90, 100, 110, 120, 130, 140])
def test_the_default_table_reads_whole_at_any_width_down_to_56(default_unet: Trace, width: int) -> None:
    _assert_every_row_reads_whole(default_unet, render(trace_report(default_unet), width), width)


def test_at_80_columns_the_skip_of_ups_9_reads_on_one_line(default_unet: Trace) -> None:
    text = render(trace_report(default_unet), 80)
    assert "← downs.1 64×224×224" in text
    assert "→ ups.9 64×224×224" in text
    assert "time_em" not in text.replace("time_embedding", "")


@pytest.mark.parametrize("width", [60, 80, 100, 140])
def test_a_diffusers_table_reads_whole(diffusers_unet: Trace, width: int) -> None:
    _assert_every_row_reads_whole(diffusers_unet, render(trace_report(diffusers_unet), width), width)


def test_columns_fold_away_in_priority_order(default_unet: Trace) -> None:
    """Narrowing the console drops `#` first, then folds the type, the skips, the change."""
    table = trace_table(default_unet)
    gone: list[str] = []
    previous = set(_headers(render(table, 200)))
    for width in range(200, 50, -1):
        headers = set(_headers(render(table, width)))
        assert headers <= previous | {"shapes"}, f"a column came back at width {width}"
        gone += sorted(previous - headers)
        previous = headers
    assert gone == ["#", "type", "skip", "change", "input", "output"]


def test_a_title_wider_than_a_narrow_table_is_not_broken_inside_a_shape(default_unet: Trace) -> None:
    lines = render(trace_report(default_unet), 80).splitlines()
    assert lines[0].rstrip() == "UNet · input [2, 3, 224, 224] [2] · device meta · chs 1,2,4,8 · n_channels 64"
    assert lines[-1].rstrip() == "✓ aligned: 8 skips pair down and up; [2, 3, 224, 224] → [2, 3, 224, 224]"


# --- pipes and files -----------------------------------------------------------------------


def test_piped_output_has_no_trailing_spaces_and_unbroken_explanations(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "225"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert [line for line in lines if line != line.rstrip()] == []
    fix = next(line for line in lines if line.startswith("  fix") and "upsampler" in line)
    assert fix.endswith("pass the skip's size to the upsampler (F.interpolate(x, size=skip.shape[2:]))")
    assert max(len(line) for line in lines) > FILE_WIDTH  # the explanations are longer than any table


def test_piped_table_is_the_full_table(runner: CliRunner, default_unet: Trace) -> None:
    result = runner.invoke(main, ["unet"])
    expected = render(trace_report(default_unet), FILE_WIDTH)
    assert result.output.splitlines() == [line.rstrip() for line in expected.splitlines()]
    assert "┃   # ┃ layer" in result.output


def test_piped_tree_has_no_trailing_spaces(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "225", "--format", "tree", "--depth", "2"])
    assert result.exit_code == 1, result.output
    assert all(line == line.rstrip() for line in result.output.splitlines())


def test_columns_set_on_a_pipe_is_the_width(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = runner.invoke(main, ["unet"])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "← downs.1 64×224×224" in result.output


def test_plain_text_is_not_padded(default_unet: Trace) -> None:
    text = plain_text(trace_report(default_unet))
    assert all(line == line.rstrip() for line in text.splitlines())
    assert text.startswith("UNet · input [2, 3, 224, 224] [2] · device meta · chs 1,2,4,8 · n_channels 64\n")


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["ab  \ncd\n"], "ab\ncd\n"),
        (["ab  ", "\n"], "ab\n"),  # the newline comes in the next write
        (["ab  ", "cd\n"], "ab  cd\n"),  # spaces inside a line stay
        (["ab ", " ", " \n"], "ab\n"),
        (["\x1b[3mab   \x1b[0m\n"], "\x1b[3mab\x1b[0m\n"),  # spaces before the colour reset
        (["ab   "], "ab"),  # the end of the output ends a line
    ],
)
def test_trimmed_lines_drop_only_the_spaces_that_end_a_line(pieces: list[str], expected: str) -> None:
    buffer = io.StringIO()
    stream = TrimmedLines(buffer)
    for piece in pieces:
        assert stream.write(piece) == len(piece)
    assert buffer.getvalue() == expected


def test_trimmed_lines_keep_the_stream_s_encoding() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert TrimmedLines(stream).encoding == "ascii"
    assert re.fullmatch(r"utf-?8", TrimmedLines(io.StringIO()).encoding.lower())
