"""`shapetrace unet` through click's runner: exit status, output, formats, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shapetrace.cli import main
from shapetrace.cli.types import DTYPE_NAMES
from shapetrace.errors import InternalError
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


# --- `trace`'s options fail as click's "Invalid value", before any model is imported ------------

TRACE_OPTION_CASES = [
    (["--input", "2,3,x"], "--input", "'2,3,x' is not a valid shape: expected integers like 2,3,64,64[:float16]"),
    (["--input", ""], "--input", "'' is not a valid shape: expected integers like 2,3,64,64[:float16]"),
    (["--input", "2,,3"], "--input", "'2,,3' is not a valid shape"),
    (["--input", "-2,3"], "--input", "'-2,3' is not a valid shape"),
    (["--input", "2,²"], "--input", "'2,²' is not a valid shape"),
    (["--input", "2,3,64,64:float99"], "--input", "'2,3,64,64:float99' has dtype 'float99': expected one of float32"),
    (["--input", "2,3,99999999"], "--input", "'2,3,99999999' is too large: expected at most 8 dims of at most"),
    (["--input", "1,1,1,1,1,1,1,1,1"], "--input", "'1,1,1,1,1,1,1,1,1' is too large: expected at most 8 dims"),
    (["--kw", "bad"], "--kw", "'bad' is not valid: expected name=shape like encoder_hidden_states=1,77,768"),
    (["--kw", "1x=2,3"], "--kw", "'1x=2,3' is not valid: expected name=shape"),
    (["--kw", "=2,3"], "--kw", "'=2,3' is not valid: expected name=shape"),
    (["--kw", "y=2,a"], "--kw", "'y=2,a': '2,a' is not a valid shape: expected integers like 2,3,64,64[:float16]"),
    (["--kw", "y=2:int3"], "--kw", "'y=2:int3': '2:int3' has dtype 'int3': expected one of float32"),
    (["--init", "{bad"], "--init", "'{bad' is not valid JSON (Expecting property name enclosed in double quotes)"),
    (["--init", "[" * 100_000], "--init", "is not valid JSON (nested too deeply): expected an object like"),
    (["--init", "9" * 5000], "--init", "is not valid JSON (a number of more than 4300 digits)"),
    (["--init", "[1, 2]"], "--init", "'[1, 2]' is a JSON list, expected an object of keyword arguments"),
    (["--init", '"width"'], "--init", "'\"width\"' is a JSON str, expected an object of keyword arguments"),
    (["--timestep", "abc"], "--timestep", "'abc' is not an integer: expected e.g. --timestep 500"),
    (["--timestep", "9" * 30], "--timestep", "does not fit a timestep tensor: expected an int64"),
]


@pytest.mark.parametrize(
    ("arguments", "option", "message"), [pytest.param(*case, id=" ".join(case[0])[:30]) for case in TRACE_OPTION_CASES]
)
def test_bad_trace_options_are_click_invalid_values(
    runner: CliRunner, arguments: list[str], option: str, message: str
) -> None:
    # The TARGET does not exist: the option must fail first, while click parses it.
    result = runner.invoke(main, ["trace", "no_such_module_anywhere:Model", "--input", "1,3,8,8", *arguments])
    assert result.exit_code == 2, result.output
    assert f"Error: Invalid value for '{option}': " in result.output and message in result.output
    assert "Traceback" not in result.output and "no_such_module_anywhere" not in result.output.split("Error:")[1]


def test_every_dtype_name_is_a_torch_dtype() -> None:
    import torch

    assert all(isinstance(getattr(torch, name), torch.dtype) for name in DTYPE_NAMES)


def test_an_integer_input_dtype_reaches_the_model(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "embedding.py"
    target.write_text("import torch\nmodel = torch.nn.Embedding(10, 4)\n", encoding="utf-8")
    result = runner.invoke(main, ["trace", f"{target}:model", "--input", "2,5:int64", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"] == [[2, 5, 4]]
    as_floats = runner.invoke(main, ["trace", f"{target}:model", "--input", "2,5", "--format", "json"])
    assert as_floats.exit_code == 1  # an Embedding refuses float indices: the dtype is what was asked for


def test_integer_inputs_of_a_real_forward_index_any_table(runner: CliRunner, tmp_path: Path) -> None:
    """Token ids and class labels made up on the CPU are in range for a table of any size."""
    target = tmp_path / "labels.py"
    target.write_text("import torch\nmodel = torch.nn.Embedding(3, 4)\n", encoding="utf-8")
    for dtype in ("int64", "int32"):
        result = runner.invoke(main, ["trace", f"{target}:model", "--input", f"2,50:{dtype}", "--device", "cpu"])
        assert result.exit_code == 0, result.output


# --- one error boundary: usage is exit 2, shapetrace's own bugs exit 3 ---------------------------

BUG_LINE = "internal error in shapetrace (please report): IndexError: bug inside shapetrace"


def _raise_bug(*_: Any, **__: Any) -> None:
    raise IndexError("bug inside shapetrace")


def test_a_bug_in_a_renderer_is_an_internal_error_exit_3(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shapetrace.render.table.trace_report", _raise_bug)
    result = runner.invoke(main, ["unet", "--size", "16", "--chs", "1,2"])
    assert result.exit_code == 3, result.output
    assert result.output.splitlines() == [f"{BUG_LINE} (--debug shows the traceback)"]


@pytest.mark.parametrize("where", ["group", "command"])
def test_debug_shows_the_traceback_of_an_internal_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setattr("shapetrace.render.table.trace_report", _raise_bug)
    arguments = ["unet", "--size", "16", "--chs", "1,2"]
    result = runner.invoke(main, ["--debug", *arguments] if where == "group" else [*arguments, "--debug"])
    assert result.exit_code == 3, result.output
    assert result.output.startswith("Traceback (most recent call last):")
    assert "\nIndexError: bug inside shapetrace\n" in result.output
    assert result.output.splitlines()[-1] == BUG_LINE


def test_an_internal_error_of_the_tracer_is_exit_3(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def lost(*_: Any, **__: Any) -> None:
        raise InternalError("the recorder lost call 7")

    monkeypatch.setattr("shapetrace.models.reference.observe", lost)
    result = runner.invoke(main, ["unet", "--size", "16", "--chs", "1,2"])
    assert result.exit_code == 3, result.output
    assert result.output.splitlines() == [
        "internal error in shapetrace (please report): the recorder lost call 7 (--debug shows the traceback)"
    ]


def test_a_bug_in_show_is_exit_3_too(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, saved: Path) -> None:
    monkeypatch.setattr("shapetrace.render.tree.trace_tree", _raise_bug)
    result = runner.invoke(main, ["show", str(saved), "--format", "tree"])
    assert result.exit_code == 3, result.output
    assert BUG_LINE in result.output and "Traceback" not in result.output


def test_every_command_takes_debug(runner: CliRunner) -> None:
    for name in main.commands:
        assert "--debug" in runner.invoke(main, [name, "--help"]).output, name


def test_a_reader_closing_the_pipe_early_is_not_an_error() -> None:
    completed = subprocess.run(
        f"{sys.executable} -m shapetrace unet --format json | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.stdout == '{\n  "schem'
    assert completed.stderr == ""


# --- `shapetrace show`: a saved trace, rendered as the command that made it rendered it ---------


@pytest.fixture
def saved(tmp_path: Path, runner: CliRunner) -> Path:
    path = tmp_path / "saved.json"
    assert runner.invoke(main, ["unet", "--size", "32", "--chs", "1,2", "-o", str(path)]).exit_code == 0
    return path


@pytest.mark.parametrize(
    "options", [[], ["--format", "tree", "--depth", "2"], ["--format", "dot"], ["--depth", "3"]], ids=str
)
@pytest.mark.parametrize("size", ["32", "33"])
def test_show_prints_what_the_tracing_command_printed(
    runner: CliRunner, tmp_path: Path, options: list[str], size: str
) -> None:
    path = tmp_path / "trace.json"
    made = ["unet", "--size", size, "--chs", "1,2", "--n-channels", "8"]
    status = runner.invoke(main, [*made, "-o", str(path)]).exit_code
    traced = runner.invoke(main, [*made, *options], terminal_width=160)
    shown = runner.invoke(main, ["show", str(path), *options], terminal_width=160)
    assert shown.output == traced.output
    assert shown.exit_code == traced.exit_code == status == (0 if size == "32" else 1)


def test_show_json_round_trips(runner: CliRunner, saved: Path) -> None:
    result = runner.invoke(main, ["show", str(saved), "--format", "json"])
    assert result.exit_code == 0
    assert result.output == saved.read_text(encoding="utf-8")


def test_show_writes_files_in_the_format_of_their_suffix(runner: CliRunner, saved: Path, tmp_path: Path) -> None:
    for name, start in [("u.svg", "<?xml"), ("u.dot", "digraph"), ("u.txt", "UNet ·")]:
        result = runner.invoke(main, ["show", str(saved), "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).read_text(encoding="utf-8").startswith(start), name


def test_show_of_a_trace_stopped_by_ctrl_c_is_a_break(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "stops.py"
    target.write_text(
        "import torch\n"
        "class Stops(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 1)\n"
        "    def forward(self, x):\n"
        "        self.conv(x)\n"
        "        raise KeyboardInterrupt\n",
        encoding="utf-8",
    )
    path = tmp_path / "stopped.json"
    made = runner.invoke(main, ["trace", f"{target}:Stops", "--input", "1,3,4,4", "--device", "cpu", "-o", str(path)])
    assert made.exit_code == 130, made.output
    shown = runner.invoke(main, ["show", str(path)], terminal_width=160)
    assert shown.exit_code == 1  # this run was not stopped: the saved trace's verdict is a break
    assert "interrupted" in shown.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read trace '{path}': no such file"),
        ("{", "{path}: trace file is not valid JSON"),
        ('{"schema": 3}', "{path}: trace file has schema 3, expected 1 or 2"),
    ],
)
def test_show_of_a_bad_file_is_one_line_and_exit_2(
    runner: CliRunner, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = runner.invoke(main, ["show", str(path)])
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("Error: " + message.format(path=path)), line


def test_show_an_image_needs_a_file(runner: CliRunner, saved: Path) -> None:
    result = runner.invoke(main, ["show", str(saved), "--format", "png"])
    assert result.exit_code == 2
    assert result.output.splitlines() == ["Error: --format png writes an image: give -o FILE.png"]
