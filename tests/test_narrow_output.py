"""Pipes and files: output that goes to a file or a pipe is neither wrapped nor padded with spaces."""

from __future__ import annotations

import io
import re

import pytest
from click.testing import CliRunner

from shapetrace import Trace
from shapetrace.cli import main
from shapetrace.render.plain import FILE_WIDTH, TrimmedLines, plain_text
from shapetrace.render.table import trace_report
from tests.conftest import render, trace_unet


@pytest.fixture(scope="module")
def default_unet() -> Trace:
    return trace_unet(224)


def test_piped_output_has_no_trailing_spaces_and_unbroken_explanations(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "225"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert [line for line in lines if line != line.rstrip()] == []
    fix = next(line for line in lines if line.startswith("  fix:"))
    assert fix.endswith("or pass the skip's size to the upsampler (F.interpolate(x, size=skip.shape[-2:]))")
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
