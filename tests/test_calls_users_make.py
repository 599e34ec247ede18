"""Calls users make that once gave wrong answers: an example size the rule cannot see past, a
forward that reads values, a mask beside the image, a constructor that reads values, and
weights and inputs on different devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.errors import UsageError

HERE = Path(__file__)


class Small(nn.Module):
    """One level down and up, with a concatenated skip; BatchNorm needs its weights where its input is."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.down = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.norm(self.stem(x))
        output: torch.Tensor = self.head(torch.cat([self.up(self.down(skip)), skip], 1))
        return output


class ChecksItsSize(Small):
    """Its own check asks for multiples of 4, where its layers need only multiples of 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4:
            raise ValueError("the size must be a multiple of 4")
        return super().forward(x)


class ReadsValues(Small):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum() > 1e12:  # a value read, as a data-dependent branch makes
            return x
        return super().forward(x)


class Inpainting(Small):
    """A mask of the image's size beside the image, as inpainting UNets take it."""

    def __init__(self) -> None:
        super().__init__(channels=4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([x, mask], 1))


class DropRates(Small):
    """Its constructor reads tensor values, as timm's and Swin's stochastic depth rates do."""

    def __init__(self) -> None:
        super().__init__()
        self.rates = [rate.item() for rate in torch.linspace(0, 0.1, 3)]


def _runs(model: nn.Module, size: int) -> bool:
    try:
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, size, size))
    except ValueError:
        return False
    return True


def test_a_valid_example_size_does_not_hide_the_models_own_check() -> None:
    model = ChecksItsSize()
    rule = shapetrace.size_rule(model, torch.randn(1, 3, 16, 16))
    assert rule is not None
    assert [rule.accepts((size, size)) for size in range(12, 21)] == [_runs(model, size) for size in range(12, 21)]


def test_sweep_of_a_model_with_its_own_check_agrees_with_real_forwards() -> None:
    target = f"{HERE}:ChecksItsSize"
    result = CliRunner().invoke(main, ["sweep", target, "--input", "1,3,16,16", "--sizes", "12:20", "--format", "json"])
    outcomes = [entry["ok"] for entry in json.loads(result.output)["sweeps"][0]["results"]]
    assert outcomes == [_runs(ChecksItsSize(), size) for size in range(12, 21)]


def test_size_rule_of_a_forward_that_reads_values_is_unknown_not_every_size() -> None:
    assert shapetrace.size_rule(ReadsValues(), torch.randn(1, 3, 17, 17)) is None


def test_a_mask_of_the_images_size_is_resized_with_it_at_every_swept_size() -> None:
    arguments = ["sweep", f"{HERE}:Inpainting", "--input", "1,3,16,16", "--input", "1,1,16,16", "--sizes", "16:18"]
    result = CliRunner().invoke(main, [*arguments, "--format", "json"])
    outcomes = [(entry["ok"], entry["place"]) for entry in json.loads(result.output)["sweeps"][0]["results"]]
    assert outcomes == [(True, ""), (False, "head"), (True, "")]  # 17 breaks at the skip's merge, not at the mask


def test_a_constructor_that_reads_values_is_built_on_the_cpu_and_traced_on_a_meta_copy() -> None:
    result = CliRunner().invoke(main, ["trace", f"{HERE}:DropRates", "--input", "1,3,16,16"])
    assert result.exit_code == 0, result.output
    assert "aligned: 1 skip" in result.output


def test_meta_inputs_to_a_model_with_real_weights_trace_a_meta_copy() -> None:
    model = Small()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    traced = shapetrace.trace(model, torch.empty(1, 3, 17, 17, device="meta"))
    assert [brk.kind for brk in traced.breaks] == ["size"]  # the model's break, not a device error
    assert shapetrace.trace_sizes(model, [(1, 3, 16, 16)]).ok
    after = model.state_dict()
    assert all(after[name].device.type == "cpu" and torch.equal(after[name], value) for name, value in before.items())


def test_real_inputs_to_a_meta_model_are_a_usage_error() -> None:
    with torch.device("meta"):
        model = Small()
    with pytest.raises(UsageError, match="weights are on meta but its inputs on cpu"):
        shapetrace.trace(model, torch.randn(1, 3, 16, 16))


def test_assert_aligned_runs_a_forward_that_reads_values_on_a_cpu_copy() -> None:
    """Meta tensors have no values: the helper runs a CPU copy, and fails exactly where the real forward does."""
    from shapetrace.testing import assert_aligned

    model = ReadsValues()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert assert_aligned(model, torch.randn(1, 3, 16, 16), sizes="16:20:2").ok
    with pytest.raises(AssertionError, match="does not align at size 17×17"):
        assert_aligned(model, torch.randn(1, 3, 16, 16), sizes="16:17")
    assert all(torch.equal(model.state_dict()[name], value) for name, value in before.items())
