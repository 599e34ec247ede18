"""`shapetrace sweep`: its light first-break pass agrees with full traces; the CLI grid and JSON."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from shapetrace.analysis.placement import block_name
from shapetrace.cli import main
from shapetrace.models.reference import sweep_reference
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
        trace = trace_unet(outcome.size, chs, n_channels=8, variant=variant, batch=1, verify=False)
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
    from shapetrace.tracing.light_pass import sweep
    from tests.conftest import meta_unet, unet_inputs

    model = meta_unet((1, 2, 4), n_channels=4)
    sizes = [(size, size) for size in range(8, 8 + 140)]

    def arguments_at(height: int, width: int) -> tuple[tuple[object, ...], dict[str, object]]:
        return unet_inputs(height, width, batch=1), {}

    assert sweep(model, sizes, arguments_at, workers=2) == sweep(model, sizes, arguments_at, workers=1)
