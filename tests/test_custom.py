"""Tracing models that are not the reference UNet: `shapetrace trace`, trace_sizes and diff."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

import shapetrace
from shapetrace.cli import main
from tests.fixtures.asserting import AssertingUNet

FIXTURE = str(Path(__file__).parent / "fixtures" / "asserting.py")


def test_trace_a_file_target_with_init_and_inputs(runner: CliRunner) -> None:
    arguments = [
        "trace",
        f"{FIXTURE}:AssertingUNet",
        "--init",
        '{"width": 8}',
        "--input",
        "2,3,32,32",
        "--format",
        "json",
    ]
    result = runner.invoke(main, arguments)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model"] == "AssertingUNet"
    assert data["outputs"] == [[2, 3, 32, 32]]
    assert [(skip["source"], skip["target"]) for skip in data["skips"]] == [("down1", "up1"), ("inc", "out")]
    assert data["layers"][1]["outputs"] == [[2, 8, 32, 32]]  # --init reached the constructor


def test_a_factory_target_and_a_table(runner: CliRunner) -> None:
    result = runner.invoke(main, ["trace", f"{FIXTURE}:build", "--input", "1,3,16,16"])
    assert result.exit_code == 0, result.output
    assert "✓ aligned: 2 skips pair down and up" in result.output


def test_an_input_size_assertion_is_the_break_with_the_size_rule(runner: CliRunner) -> None:
    result = runner.invoke(main, ["trace", f"{FIXTURE}:AssertingUNet", "--input", "1,3,30,30", "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    (brk,) = data["breaks"]
    assert brk["op"] == "AssertionError"
    # It asserts before any layer runs, so no record tells the rule: the sizes are probed.
    assert [(axis["modulus"], axis["residues"]) for axis in data["size_rule"]["axes"]] == [(4, [0]), (4, [0])]
    assert data["size_rule"]["nearest"] == [28, 32]
    assert "multiple of 4" in brk["fix"]


def test_trace_sizes_makes_the_tensors() -> None:
    with torch.device("meta"):
        model = shapetrace.UNet(chs=(1, 2))
    trace = shapetrace.trace_sizes(model, [(2, 3, 32, 48)], timestep=True)
    assert trace.ok
    assert trace.inputs == ((2, 3, 32, 48), (2,))
    assert trace.outputs == ((2, 3, 32, 48),)


def test_trace_passes_keywords_to_forward() -> None:
    class Conditioned(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(6, 4)
            self.conv = torch.nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
            output: torch.Tensor = self.conv(x) + self.proj(context)[:, :, None, None]
            return output

    with torch.device("meta"):
        model = Conditioned()
    trace = shapetrace.trace(model, torch.empty(2, 4, 8, 8, device="meta"), context=torch.empty(2, 6, device="meta"))
    assert trace.inputs == ((2, 4, 8, 8), (2, 6))
    assert trace.ok


def test_diff_shows_changed_layers_and_skips(runner: CliRunner, tmp_path: Path) -> None:
    before, after = tmp_path / "a.json", tmp_path / "b.json"
    assert runner.invoke(main, ["unet", "--size", "32", "--chs", "1,2", "-o", str(before)]).exit_code == 0
    assert (
        runner.invoke(main, ["unet", "--size", "32", "--chs", "1,2", "--n-channels", "32", "-o", str(after)]).exit_code
        == 0
    )
    result = runner.invoke(main, ["diff", str(before), str(after)], terminal_width=200)
    assert result.exit_code == 1
    assert "conv_in" in result.output
    assert "[2, 64, 32, 32]" in result.output and "[2, 32, 32, 32]" in result.output
    same = runner.invoke(main, ["diff", str(before), str(before)])
    assert same.exit_code == 0
    assert "same shapes and skips" in same.output


def test_module_instance_targets_move_to_the_device(tmp_path: Path, runner: CliRunner) -> None:
    target = tmp_path / "instance.py"
    target.write_text("import torch\nmodel = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n")
    result = runner.invoke(main, ["trace", f"{target}:model", "--input", "1,3,10,10", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"] == [[1, 4, 8, 8]]


def test_the_fixture_runs_for_real_where_the_size_fits() -> None:
    with torch.no_grad():
        assert AssertingUNet()(torch.zeros(1, 3, 8, 12)).shape == (1, 3, 8, 12)
