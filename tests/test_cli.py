"""`shapetrace unet` through click's runner: exit status, output, formats, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shapetrace.cli import main
from tests.conftest import meta_unet, trace_unet


def test_default_unet_is_aligned_and_prints_the_table(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "64", "--chs", "1,2,4,8"], terminal_width=140)
    assert result.exit_code == 0, result.output
    assert "✓ aligned: 8 skips pair down and up" in result.output
    assert "ups.9" in result.output and "← downs.1" in result.output
    total = sum(parameter.numel() for parameter in meta_unet().parameters())
    assert f"{total:,}" in result.output


def test_json_output_equals_the_api_trace(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "48x64", "--chs", "1,2", "--n-channels", "16", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == json.loads(trace_unet((48, 64), (1, 2), 16).to_json())
    assert data["schema"] == 2 and data["ok"] is True
    assert data["skips"][0]["source"] == "downs.4" and data["skips"][0]["target"] == "ups.0"


def test_size_break_exits_1_and_names_the_merge(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "225"], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "ups.9 (ResBlock): torch.cat(dim=1) joins up path [2, 64, 224, 224] from ups.8" in result.output
    assert "skip [2, 64, 225, 225] from downs.1" in result.output
    assert "downs.2 (Downsample) floored an odd size: 225 → 112" in result.output
    assert "multiple of 8" in result.output and "224 or 232" in result.output


def test_as_written_variant_exits_1_with_channel_breaks(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "32", "--variant", "as-written", "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False
    assert {brk["kind"] for brk in data["breaks"]} == {"channels"}


def test_output_file_format_from_suffix(runner: CliRunner, tmp_path: Path) -> None:
    destination = tmp_path / "trace.json"
    result = runner.invoke(main, ["unet", "--size", "32", "-o", str(destination)])
    assert result.exit_code == 0, result.output
    assert json.loads(destination.read_text())["model"] == "UNet"
    text_file = tmp_path / "table.txt"
    assert runner.invoke(main, ["unet", "--size", "32", "-o", str(text_file)]).exit_code == 0
    assert "✓ aligned" in text_file.read_text()


def test_tree_format(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "32", "--chs", "1,2", "--format", "tree", "--depth", "2"])
    assert result.exit_code == 0
    assert "downs.0" in result.output and "downs.0.conv1" in result.output


def test_python_dash_m_runs_the_cli() -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "shapetrace", "unet", "--size", "16", "--chs", "1,2", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["ok"] is True


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--chs", ""], "Invalid value for '--chs': '' is not a valid channel list"),
        (["--chs", "1,,2"], "Invalid value for '--chs': '1,,2' is not a valid channel list"),
        (["--chs", "a"], "Invalid value for '--chs': 'a' is not a valid channel list"),
        (["--chs", "0"], "Invalid value for '--chs': '0' is not a valid channel list"),
        (["--chs", "-1"], "Invalid value for '--chs': '-1' is not a valid channel list"),
        (["--chs", "1.5"], "Invalid value for '--chs': '1.5' is not a valid channel list"),
        (["--size", "0"], "Invalid value for '--size': '0' is not a valid size"),
        (["--size", "-3"], "Invalid value for '--size': '-3' is not a valid size"),
        (["--size", "abc"], "Invalid value for '--size': 'abc' is not a valid size"),
        (["--size", "1e9"], "Invalid value for '--size': '1e9' is not a valid size"),
        (["--size", "224x"], "Invalid value for '--size': '224x' is not a valid size"),
        (["--size", "224x0"], "Invalid value for '--size': '224x0' is not a valid size"),
        (["--batch", "0"], "Invalid value for '--batch': 0 is not in the range"),
        (["--n-channels", "0"], "Invalid value for '--n-channels': 0 is not in the range"),
        (["--format", "bmp"], "Invalid value for '--format': 'bmp' is not one of"),
        (["--device", "tpu"], "Invalid value for '--device': 'tpu' is not one of"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner: CliRunner, arguments: list[str], message: str) -> None:
    result = runner.invoke(main, ["unet", *arguments])
    assert result.exit_code == 2
    assert f"Error: {message}" in result.output
    assert "Traceback" not in result.output


def test_unwritable_output_is_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["unet", "--size", "16", "-o", str(tmp_path / "missing" / "trace.json")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    result = runner.invoke(main, ["unet", "--size", "16", "-o", str(tmp_path / "trace.bmp")])
    assert result.exit_code == 2
    assert "cannot tell the format of" in result.output
