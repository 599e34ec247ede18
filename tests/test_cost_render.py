"""The cost as users meet it: the CLI's options, the table's columns, the diagram, the JSON, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shapetrace.cli import main
from shapetrace.render.columns import COLUMNS
from tests.conftest import render

SMALL = ["unet", "--size", "32", "--chs", "1,2", "--n-channels", "8"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _json(runner: CliRunner, *options: str) -> dict[str, object]:
    result = runner.invoke(main, [*SMALL, "--format", "json", *options])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert isinstance(data, dict)
    return data


def test_cost_adds_columns_and_the_summary(runner: CliRunner) -> None:
    result = runner.invoke(main, [*SMALL, "--cost"])
    assert result.exit_code == 0, result.output
    for text in ("FLOPs", "saved", "cost per level of the U", "down 0", "inference peak", "train peak"):
        assert text in result.output, text
    plain = runner.invoke(main, SMALL)
    assert "FLOPs" not in plain.output and "inference peak" not in plain.output


def test_columns_choose_the_table(runner: CliRunner) -> None:
    result = runner.invoke(main, [*SMALL, "--columns", "flops,macs,kernel,dtype"])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "layer" in line)
    assert [word for word in ("FLOPs", "MACs", "kernel", "dtype") if word in header] == [
        "FLOPs",
        "MACs",
        "kernel",
        "dtype",
    ]
    assert "change" not in header and "params" not in header
    assert "float32" in result.output and "3×3" in result.output


def test_shape_columns_alone_count_no_cost(runner: CliRunner) -> None:
    result = runner.invoke(main, [*SMALL, "--columns", "type,output,params"])
    assert result.exit_code == 0, result.output
    assert "inference peak" not in result.output


def test_a_bad_column_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, [*SMALL, "--columns", "flops,speed"])
    assert result.exit_code == 2
    assert "Invalid value for '--columns'" in result.output and "'speed'" in result.output


@pytest.mark.parametrize(
    ("text", "expected"), [("24GB", 24 * 10**9), ("24GiB", 24 * 2**30), ("1.5 TB", 1_500_000_000_000)]
)
def test_budget_units(runner: CliRunner, text: str, expected: int) -> None:
    cost = _json(runner, "--budget", text)["cost"]
    assert isinstance(cost, dict)
    assert cost["budget"]["bytes"] == expected
    assert cost["budget"]["fits"] is True and cost["budget"]["max_batch"] > 2 and cost["budget"]["max_size"] > 32


@pytest.mark.parametrize("text", ["24XB", "GB", "-1GB", "0B"])
def test_a_bad_budget_is_a_usage_error(runner: CliRunner, text: str) -> None:
    result = runner.invoke(main, [*SMALL, "--budget", text])
    assert result.exit_code == 2
    assert "Invalid value for '--budget'" in result.output


def test_the_budget_verdict_is_printed(runner: CliRunner) -> None:
    fits = runner.invoke(main, [*SMALL, "--budget", "1GB", "--mode", "train"])
    assert fits.exit_code == 0, fits.output
    assert "budget 1.00 GB (train): ✓ fits" in fits.output and "largest batch" in fits.output
    short = runner.invoke(main, [*SMALL, "--budget", "1kB"])
    assert "✗ does not fit" in short.output and "largest batch none" in short.output


def test_train_options_turn_the_cost_on(runner: CliRunner) -> None:
    for options in (["--mode", "train"], ["--optimizer", "sgd"], ["--checkpointing"]):
        cost = _json(runner, *options)["cost"]
        assert isinstance(cost, dict) and cost["budget"] is None, options
    sgd = _json(runner, "--optimizer", "sgd")["cost"]
    adam = _json(runner, "--cost")["cost"]
    assert isinstance(sgd, dict) and isinstance(adam, dict)
    assert sgd["optimizer_bytes"] == 0 < adam["optimizer_bytes"]
    assert "cost" not in _json(runner)


def test_the_diagram_annotates_each_level(runner: CliRunner) -> None:
    result = runner.invoke(main, [*SMALL, "--cost", "--format", "dot"])
    assert result.exit_code == 0, result.output
    for level in ("down 0 · 32 · ", "down 1 · 16 · ", "mid · 16 · ", "up 1 · 16 · ", "up 0 · 32 · "):
        assert result.output.count(level) == 1, level
    assert "skips " in result.output and "FLOPs · saved" in result.output
    plain = runner.invoke(main, [*SMALL, "--format", "dot"])
    assert "FLOPs" not in plain.output


def test_every_column_renders(runner: CliRunner) -> None:
    result = runner.invoke(main, [*SMALL, "--columns", ",".join(COLUMNS)])
    assert result.exit_code == 0, result.output


def test_a_saved_cost_renders_without_torch(tmp_path: Path, runner: CliRunner) -> None:
    saved = tmp_path / "trace.json"
    result = runner.invoke(main, [*SMALL, "--cost", "--budget", "1GB", "-o", str(saved)])
    assert result.exit_code == 0, result.output
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from shapetrace.records import Trace\n"
        "import shapetrace\n"
        "from shapetrace.render.table import trace_report\n"
        "from shapetrace.render.dot import trace_dot\n"
        "from shapetrace.render.plain import plain_text\n"
        f"trace = Trace.from_json(open({str(saved)!r}, encoding='utf-8').read())\n"
        "print(plain_text(trace_report(trace, columns=['flops', 'macs', 'saved_bytes'])))\n"
        "print(trace_dot(trace))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=Path.cwd())
    assert done.returncode == 0, done.stderr
    assert "MACs" in done.stdout and "budget 1.00 GB" in done.stdout and "down 0 · 32" in done.stdout


def test_the_report_of_a_cost_trace_is_stable() -> None:
    from shapetrace.models.reference import trace_reference
    from shapetrace.records import CostOptions
    from shapetrace.render.table import trace_report

    trace = trace_reference(size=(32, 32), chs=(1, 2), n_channels=8, cost=CostOptions())
    assert render(trace_report(trace)) == render(trace_report(trace))
    assert "cost  " in render(trace_report(trace))
