"""`shapetrace sweep`: its light first-break pass agrees with full traces; the CLI grid and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.analysis.placement import block_name
from shapetrace.cli import main
from shapetrace.models.reference import sweep_reference
from shapetrace.records import BreakKind
from shapetrace.render.sweep_grid import compress_sizes
from tests.conftest import trace_unet


@pytest.mark.parametrize(
    ("chs", "variant", "sizes"),
    [
        ((1, 2, 4, 8), "fixed", range(4, 50)),
        ((1, 2, 2), "fixed", range(1, 20)),
        ((1, 2), "as-written", range(6, 12)),
    ],
)
def test_light_pass_equals_full_traces(chs: tuple[int, ...], variant: str, sizes: range) -> None:
    result = sweep_reference([(size, size) for size in sizes], chs, n_channels=8, variant=variant)
    for outcome in result.outcomes:
        height, width = outcome.size
        trace = trace_unet((height, width), chs, n_channels=8, variant=variant, batch=1, verify=False)
        expected = (None, "") if trace.ok else (trace.breaks[0].kind, block_name(trace, trace.breaks[0].layer))
        assert (outcome.kind, outcome.place) == expected, outcome.size


def test_sweep_grid_groups_sizes_by_outcome(runner: CliRunner) -> None:
    result = runner.invoke(main, ["sweep", "--sizes", "32:64", "--chs", "1,2,4,8", "--n-channels", "8"])
    assert result.exit_code == 1
    assert "5 of 33 sizes aligned" in result.output
    assert "32:64:8" in result.output
    assert "size break at ups.9" in result.output


def test_sweep_json_lists_every_size(runner: CliRunner) -> None:
    arguments = ["sweep", "--sizes", "16,17,24x32", "--chs", "1,2", "--chs", "1,2,4", "--format", "json"]
    result = runner.invoke(main, arguments)
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert [len(sweep["results"]) for sweep in data["sweeps"]] == [3, 3]
    first = data["sweeps"][0]["results"]
    assert [entry["ok"] for entry in first] == [True, False, True]
    assert first[1]["kind"] == "size"


def test_all_aligned_sweep_exits_0(runner: CliRunner) -> None:
    result = runner.invoke(main, ["sweep", "--sizes", "16:64:16", "--chs", "1,2,4"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("sizes", ["", "5:3", "0:10", "a:b", "32:64:0", "1,x"])
def test_bad_sizes_exit_2(runner: CliRunner, sizes: str) -> None:
    result = runner.invoke(main, ["sweep", "--sizes", sizes])
    assert result.exit_code == 2
    assert "Error: Invalid value for '--sizes'" in result.output


def test_compress_sizes_finds_arithmetic_runs() -> None:
    squares = [(size, size) for size in [1, 2, 3, 4, 10, 18, 26, 40]]
    assert compress_sizes(squares) == "1:4, 10:26:8, 40"


def test_forked_workers_give_the_serial_outcomes() -> None:
    from shapetrace.tracing.light_sweep import sweep
    from tests.conftest import meta_unet, unet_inputs

    model = meta_unet((1, 2, 4), n_channels=4)
    sizes = [(size, size) for size in range(8, 8 + 140)]

    def arguments_at(height: int, width: int) -> tuple[tuple[object, ...], dict[str, object]]:
        return unet_inputs(height, width, batch=1), {}

    assert sweep(model, sizes, arguments_at, workers=2) == sweep(model, sizes, arguments_at, workers=1)


class _SkipFirst(nn.Module):
    """`torch.cat([skip, x], 1)`: the skip comes first, the main input (the latest call's) second.

    At an odd size the strided conv rounds up and the upsampler gives one more row and column
    than the skip has. The sum after the cat then works only on a stand-in of the main input's
    shape: a pass that took tensors[0] as the main input would fail at the sum instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.conv_in(x)
        x = self.up(self.down(skip))
        merged = torch.cat([skip, x], 1) + torch.cat([x, x], 1)
        output: torch.Tensor = self.out(merged)
        return output


class _AddedSkip(nn.Module):
    """`up(down(skip)) + skip`: an additive skip, which at an odd size is one row and column short."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.out = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.conv_in(x)
        output: torch.Tensor = self.out(self.up(self.down(skip)) + skip)
        return output


class _Residual(nn.Module):
    """A residual sum of two branches of one input, one of them unpadded: no skip, a block that fails."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)
        self.shortcut = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.conv(x) + self.shortcut(x)
        return output


MERGE_MODELS: dict[str, tuple[Callable[[], nn.Module], set[tuple[BreakKind, str]]]] = {
    "torch.cat([skip, x])": (_SkipFirst, {(BreakKind.SIZE, "out")}),
    "an additive skip": (_AddedSkip, {(BreakKind.SIZE, "out")}),
    "a residual sum that fails": (lambda: nn.Sequential(nn.Conv2d(3, 3, 1), _Residual()), {(BreakKind.SIZE, "1")}),
}


@pytest.mark.parametrize("name", list(MERGE_MODELS))
def test_the_sweep_and_the_full_trace_decide_merges_alike(name: str) -> None:
    from shapetrace.tracing.light_sweep import sweep

    build, odd_outcomes = MERGE_MODELS[name]
    with torch.device("meta"):
        model = build()
    sizes = [(size, size) for size in range(6, 14)]
    outcomes = sweep(model, sizes, lambda h, w: ((torch.empty(1, 3, h, w, device="meta"),), {}), workers=1)
    for outcome in outcomes:
        trace = shapetrace.trace(model, torch.empty(1, 3, *outcome.size, device="meta"))
        expected = (None, "") if trace.ok else (trace.breaks[0].kind, block_name(trace, trace.breaks[0].layer))
        assert (outcome.kind, outcome.place) == expected, outcome.size
    # Not vacuous: the odd sizes break, and where they break depends on the merge.
    assert {(outcome.kind, outcome.place) for outcome in outcomes if outcome.size[0] % 2} == odd_outcomes
