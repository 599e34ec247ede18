"""`--columns` as a user types it on `show`, `unet` and `trace`: chosen columns, in the order given.

Each test runs the CLI through click's CliRunner and reads the table's header line, as a user
reading the output would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shapetrace.cli import main
from shapetrace.render.columns import COLUMNS

SMALL = ["unet", "--size", "32", "--chs", "1,2", "--n-channels", "8"]
HEADERS = {"type": "type", "output": "output", "params": "params", "flops": "FLOPs", "macs": "MACs"}
HEADERS |= {"output_bytes": "out bytes", "kernel": "kernel", "dtype": "dtype", "saved_bytes": "saved"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def saved_cost(runner: CliRunner, tmp_path: Path) -> Path:
    """A trace saved with --cost, as a CI job would keep it."""
    path = tmp_path / "trace.json"
    result = runner.invoke(main, [*SMALL, "--cost", "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def header_words(output: str, names: list[str]) -> list[str]:
    """The headers of `names` in the order the table's header line shows them."""
    header = next(line for line in output.splitlines() if " layer " in line)
    found = [(header.find(f" {HEADERS[name]} "), HEADERS[name]) for name in names]
    assert all(position >= 0 for position, _ in found), header
    return [word for _, word in sorted(found)]


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


@pytest.mark.parametrize(
    "columns",
    [["flops", "macs", "params"], ["dtype", "kernel", "flops"], ["macs", "output", "type", "saved_bytes"]],
)
def test_show_prints_the_chosen_columns_in_the_order_given(
    runner: CliRunner, saved_cost: Path, columns: list[str]
) -> None:
    result = runner.invoke(main, ["show", str(saved_cost), "--columns", ",".join(columns)])
    assert result.exit_code == 0, result.output
    assert header_words(result.output, columns) == [HEADERS[name] for name in columns]
    header = next(line for line in result.output.splitlines() if " layer " in line)
    left_out = [HEADERS[name] for name in HEADERS if name not in columns]
    assert not [word for word in left_out if f" {word} " in header], header


def test_show_columns_read_the_saved_values(runner: CliRunner, saved_cost: Path) -> None:
    data = json.loads(saved_cost.read_text(encoding="utf-8"))
    conv_in = next(layer for layer in data["layers"] if layer["name"] == "conv_in")
    result = runner.invoke(main, ["show", str(saved_cost), "--columns", "kernel,dtype,trainable"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if " conv_in " in line)
    assert "3×3" in row and "float32" in row and f"{conv_in['trainable_params']:,}" in row


def test_show_with_an_unknown_column_is_a_usage_error(runner: CliRunner, saved_cost: Path) -> None:
    result = runner.invoke(main, ["show", str(saved_cost), "--columns", "flops,speed"])
    assert result.exit_code == 2
    lines = error_lines(result.output)
    assert len(lines) == 1 and "'--columns'" in lines[0] and "'speed'" in lines[0], result.output
    assert all(name in lines[0] for name in COLUMNS), lines[0]
    assert "Traceback" not in result.output and "┃" not in result.output


def test_every_unknown_column_is_named_once(runner: CliRunner, saved_cost: Path) -> None:
    result = runner.invoke(main, ["show", str(saved_cost), "--columns", "flop,macs,speed"])
    assert result.exit_code == 2
    (line,) = error_lines(result.output)
    assert "'flop'" in line and "'speed'" in line and "'macs'" not in line.split("expected")[0], line


def test_an_empty_column_list_is_a_usage_error(runner: CliRunner, saved_cost: Path) -> None:
    result = runner.invoke(main, ["show", str(saved_cost), "--columns", " , "])
    assert result.exit_code == 2
    (line,) = error_lines(result.output)
    assert "no column" in line and "''" not in line and "flops" in line, line


def test_unet_columns_follow_the_order_given(runner: CliRunner) -> None:
    result = runner.invoke(main, [*SMALL, "--columns", "macs,flops,type"])
    assert result.exit_code == 0, result.output
    assert header_words(result.output, ["macs", "flops", "type"]) == ["MACs", "FLOPs", "type"]


def test_trace_columns_choose_the_table(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "small.py"
    target.write_text(
        "import torch\n"
        "model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))\n",
        encoding="utf-8",
    )
    result = runner.invoke(main, ["trace", f"{target}:model", "--input", "1,3,8,8", "--columns", "kernel,flops,output"])
    assert result.exit_code == 0, result.output
    assert header_words(result.output, ["kernel", "flops", "output"]) == ["kernel", "FLOPs", "output"]
    row = next(line for line in result.output.splitlines() if "3×3" in line)
    # The convolution: 2 FLOPs per multiply-add, 4·6·6 outputs each summing 3·3·3 products.
    assert f"{2 * 4 * 6 * 6 * 3 * 3 * 3 / 1000:.2f} k" in row and "4×6×6" in row
    bad = runner.invoke(main, ["trace", f"{target}:model", "--input", "1,3,8,8", "--columns", "speed"])
    assert bad.exit_code == 2 and len(error_lines(bad.output)) == 1 and "'speed'" in bad.output


# --- show --cost: the cost a trace was saved with -------------------------------------------------


def test_show_cost_prints_the_saved_cost(runner: CliRunner, saved_cost: Path) -> None:
    result = runner.invoke(main, ["show", str(saved_cost), "--cost"])
    assert result.exit_code == 0, result.output
    assert "FLOPs" in result.output and "cost per level of the U" in result.output
    assert "inference peak" in result.output and "train peak" in result.output


def test_show_cost_of_a_trace_without_cost_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    assert runner.invoke(main, [*SMALL, "-o", str(plain)]).exit_code == 0
    result = runner.invoke(main, ["show", str(plain), "--cost"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "plain.json" in lines[0] and "--cost" in lines[0], result.output
    assert "┃" not in result.output and "Traceback" not in result.output
