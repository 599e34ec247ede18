"""`shapetrace sweep TARGET` and `shapetrace.sweep.sweep_model`: the sweep agrees with real CPU forwards.

Every test model runs for real at every size of its range; the sweep's ok must be whether
that forward ran, whether the sweep read the size off an exact rule or traced it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from shapetrace.cli import main
from shapetrace.sizes import Size
from shapetrace.sweep import SweepInterrupted, sweep_model
from shapetrace.tracing.inputs import SizedInputs
from tests.fixtures import sweep_models
from tests.fixtures.sweep_models import INTERRUPT_AT

MODELS = Path(sweep_models.__file__)


def runs(model: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether `model` really runs on the CPU at `shape`."""
    try:
        with torch.no_grad():
            model(torch.randn(shape))
    except Exception:  # noqa: BLE001 - any failure of the forward means the size does not run
        return False
    return True


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], list[Size]]] = {
    # name: (model, input at its own size, sizes swept)
    "1-D": (sweep_models.UNet1d, (1, 2, 32), [(n,) for n in range(1, 41)]),
    "2-D": (sweep_models.UNet2d, (1, 3, 16, 16), [(n,) for n in range(1, 41)]),
    "3-D": (sweep_models.UNet3d, (1, 1, 8, 8, 8), [(n,) for n in range(1, 13)]),
    "odd rounding": (sweep_models.OddRounding, (1, 3, 32, 32), [(n,) for n in range(1, 41)]),
    "a layer that refuses small maps": (sweep_models.NormedBottom, (1, 3, 16, 16), [(n,) for n in range(1, 25)]),
    "rectangles": (sweep_models.Rectangular, (1, 3, 16, 16), [(h, w) for h in range(2, 14) for w in range(2, 8)]),
    "reads values": (sweep_models.ReadsValues, (1, 3, 16, 16), [(n,) for n in range(1, 25)]),
    "no recognised resampling": (sweep_models.Sliced, (1, 3, 16, 16), [(n,) for n in range(1, 25)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_sweep_agrees_with_the_forward_at_every_size(name: str) -> None:
    build, shape, sizes = CASES[name]
    torch.manual_seed(0)
    model = build()
    result = sweep_model(model, SizedInputs([(shape, torch.float32)]), sizes)
    assert [outcome.size[0] if len(sizes[0]) == 1 else outcome.size for outcome in result.outcomes] == [
        size[0] if len(size) == 1 else size for size in sizes
    ]
    axes = len(shape) - 2
    for outcome in result.outcomes:
        extents = outcome.size if len(outcome.size) == axes else outcome.size * axes
        assert outcome.ok == runs(model, (*shape[:2], *extents)), outcome
        assert outcome.ok == (outcome.place == ""), outcome
    # Not vacuous: some sizes run and some do not.
    assert {outcome.ok for outcome in result.outcomes} == {True, False}


def test_odd_rounding_accepts_0_and_3_mod_4() -> None:
    result = sweep_model(sweep_models.OddRounding(), SizedInputs([((1, 3, 32, 32), torch.float32)]), range_of(8, 40))
    assert {outcome.size[0] % 4 for outcome in result.outcomes if outcome.ok} == {0, 3}


def range_of(start: int, stop: int) -> list[Size]:
    return [(n,) for n in range(start, stop + 1)]


def test_sweep_leaves_the_model_as_it_was() -> None:
    model = sweep_models.UNet2d()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    sweep_model(model, SizedInputs([((1, 3, 16, 16), torch.float32)]), range_of(4, 12))
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert next(model.parameters()).device.type == "cpu"


def test_sizes_with_other_extent_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="has 2 extents, but the input has 1 spatial axis"):
        sweep_model(sweep_models.UNet1d(), SizedInputs([((1, 2, 32), torch.float32)]), [(8, 8)])


def test_interrupted_sweep_carries_the_sizes_done() -> None:
    with pytest.raises(SweepInterrupted) as stopped:
        sweep_model(sweep_models.Interrupting(), SizedInputs([((1, 3, 16, 16), torch.float32)]), range_of(10, 30))
    assert [outcome.size for outcome in stopped.value.result.outcomes] == [(n, n) for n in range(10, INTERRUPT_AT)]


# The command.


def target(name: str) -> str:
    return f"{MODELS}:{name}"


def test_sweep_target_prints_the_grid_and_exits_1(runner: CliRunner) -> None:
    result = runner.invoke(main, ["sweep", target("UNet2d"), "--input", "1,3,16,16", "--sizes", "8:24"])
    assert result.exit_code == 1, result.output
    assert "5 of 17 sizes aligned" in result.output
    assert "8:24:4" in result.output
    assert "size break at" in result.output


def test_sweep_target_json_has_every_size(runner: CliRunner) -> None:
    arguments = ["sweep", target("UNet1d"), "--input", "1,2,32", "--sizes", "7,8,9", "--format", "json"]
    result = runner.invoke(main, arguments)
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    entries = data["sweeps"][0]["results"]
    assert [(entry["size"], entry["ok"]) for entry in entries] == [([7], False), ([8], True), ([9], False)]
    assert entries[0]["kind"] == "size" and entries[0]["place"]
    assert data["sweeps"][0]["config"] == f"target {target('UNet1d')}"


def test_sweep_target_rectangles(runner: CliRunner) -> None:
    arguments = ["sweep", target("Rectangular"), "--input", "1,3,16,16", "--sizes", "8x4,8x5,6x4", "--format", "json"]
    result = runner.invoke(main, arguments)
    entries = json.loads(result.output)["sweeps"][0]["results"]
    assert [(entry["size"], entry["ok"]) for entry in entries] == [([8, 4], True), ([8, 5], False), ([6, 4], False)]


def test_sweep_target_where_every_size_runs_exits_0(runner: CliRunner) -> None:
    result = runner.invoke(main, ["sweep", target("UNet3d"), "--input", "1,1,8,8,8", "--sizes", "4:12:2"])
    assert result.exit_code == 0, result.output
    assert "5 of 5 sizes aligned" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--chs", "1,2"], "--chs configures the reference UNet: expected no --chs with a TARGET"),
        (["--n-channels", "8"], "--n-channels configures the reference UNet"),
        (["--variant", "fixed"], "--variant configures the reference UNet"),
    ],
)
def test_reference_options_with_a_target_exit_2(runner: CliRunner, arguments: list[str], message: str) -> None:
    result = runner.invoke(main, ["sweep", target("UNet2d"), "--input", "1,3,16,16", "--sizes", "8:16", *arguments])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "1,3,16,16"], "--input describes a TARGET's inputs"),
        (["--timestep"], "--timestep describes a TARGET's inputs"),
        (["--init", "{}"], "--init describes a TARGET's inputs"),
    ],
)
def test_target_options_without_a_target_exit_2(runner: CliRunner, arguments: list[str], message: str) -> None:
    result = runner.invoke(main, ["sweep", "--sizes", "16:32", *arguments])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sizes", "8x8"], "size 8x8 has 2 extents, but the input has 1 spatial axis"),
        (["--sizes", "8", "--input", "2,32"], "sweep resizes the first --input, which is 2,32"),
        (["--sizes", "8", "--kw", "x=1,2,32"], "sweep resizes the first --input, which is none"),
    ],
)
def test_sizes_that_do_not_fit_the_input_exit_2(runner: CliRunner, arguments: list[str], message: str) -> None:
    inputs = [] if "--input" in arguments or "--kw" in arguments else ["--input", "1,2,32"]
    result = runner.invoke(main, ["sweep", target("UNet1d"), *inputs, *arguments])
    assert result.exit_code == 2
    assert message in result.output


def test_ctrl_c_in_a_target_sweep_prints_the_sizes_done_and_exits_130(runner: CliRunner) -> None:
    arguments = ["sweep", target("Interrupting"), "--input", "1,3,16,16", "--sizes", "10:30", "--format", "json"]
    result = runner.invoke(main, arguments)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    printed, stopped = result.output.rsplit("}", 1)
    sizes = [entry["size"] for entry in json.loads(printed + "}")["sweeps"][0]["results"]]
    assert sizes == [[n, n] for n in range(10, INTERRUPT_AT)]
    assert f"stopped (Ctrl-C) after {INTERRUPT_AT - 10} sizes" in stopped


def test_ctrl_c_in_a_reference_sweep_prints_the_sizes_done_and_exits_130(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextlib.contextmanager
    def interrupted_after_five(*_: object) -> Iterator[Callable[[], None]]:
        calls = []

        def advance() -> None:
            calls.append(1)
            if len(calls) == 5:
                raise KeyboardInterrupt

        yield advance

    monkeypatch.setattr("shapetrace.cli.sweep._progress", interrupted_after_five)
    result = runner.invoke(main, ["sweep", "--sizes", "16:64", "--chs", "1,2", "--n-channels", "8"])
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert "of 5 sizes aligned" in result.output
    assert "stopped (Ctrl-C) after 5 sizes" in result.output


@pytest.mark.parametrize(("chs", "variant"), [((1, 2, 4, 8), "fixed"), ((1, 2, 2), "fixed"), ((1, 2, 4), "as-written")])
def test_sizes_read_off_the_rule_get_what_their_own_light_pass_gives(chs: tuple[int, ...], variant: str) -> None:
    """Every size, whether the rule answered it or its residue class did, as if traced alone."""
    from shapetrace.models.unet import UNet
    from shapetrace.tracing.light_sweep import sweep

    with torch.device("meta"):
        model = UNet(3, 8, chs, variant)  # type: ignore[arg-type]
    inputs = SizedInputs([((1, 3, 64, 64), torch.float32)], timestep=True)
    squares = [(n, n) for n in range(1, 70)]
    swept = sweep_model(model, inputs, squares).outcomes

    def arguments_at(height: int, width: int) -> tuple[list[object], dict[str, object]]:
        return inputs.make(torch.device("meta"), (height, width))

    assert list(swept) == sweep(model, squares, arguments_at, workers=1)


def test_a_target_without_inputs_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(main, ["sweep", target("UNet1d"), "--sizes", "8:16"])
    assert result.exit_code == 2
    assert "no inputs given" in result.output


def test_a_model_that_wants_a_float_timestep_is_swept_with_one(runner: CliRunner) -> None:
    arguments = [
        "sweep",
        target("FloatTime"),
        "--input",
        "1,3,16,16",
        "--timestep",
        "--sizes",
        "6:9",
        "--format",
        "json",
    ]
    result = runner.invoke(main, arguments)
    entries = json.loads(result.output)["sweeps"][0]["results"]
    model = sweep_models.FloatTime()
    with torch.no_grad():
        expected = []
        for n in range(6, 10):
            try:
                model(torch.randn(1, 3, n, n), torch.rand(1) * 1000)
                expected.append(True)
            except RuntimeError:
                expected.append(False)
    assert [entry["ok"] for entry in entries] == expected == [True, False, True, False]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "1,3,16,16"], "add --timestep"),
        (["--input", "1,3,16,16", "--timestep", "--kw", "mask=1,1,16,16"], "has no argument 'mask'"),
    ],
)
def test_inputs_the_forward_cannot_take_exit_2_before_any_size(
    runner: CliRunner, arguments: list[str], message: str
) -> None:
    result = runner.invoke(main, ["sweep", target("FloatTime"), *arguments, "--sizes", "6:9"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_dtype_casts_the_swept_model_and_its_inputs(runner: CliRunner) -> None:
    arguments = ["sweep", target("UNet2d"), "--input", "1,3,16,16", "--sizes", "15:16", "--format", "json"]
    float64 = runner.invoke(main, [*arguments, "--dtype", "float64"])
    plain = runner.invoke(main, arguments)
    assert float64.exit_code == plain.exit_code
    assert json.loads(float64.output)["sweeps"][0]["results"] == json.loads(plain.output)["sweeps"][0]["results"]
    # An input whose dtype the model does not share breaks at every size: --dtype really reached the model.
    mixed = runner.invoke(main, [*arguments[:3], "1,3,16,16:float32", *arguments[4:], "--dtype", "float64"])
    assert not any(entry["ok"] for entry in json.loads(mixed.output)["sweeps"][0]["results"])
