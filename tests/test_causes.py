"""Root causes read from the records, each once, with fixes verified by re-tracing.

Every model here is a small UNet written the way users write them (tests/fixtures/planted.py
and a few below); what each cause must say is read off its code, and each verified fix is
applied to the real model on the CPU, whose forward must then run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from shapetrace import Trace, run_trace, trace
from shapetrace.analysis.placement import full_name
from shapetrace.cli import main
from shapetrace.records import BreakKind, Cause, CauseKind, Fix, WarningKind
from shapetrace.render.table import trace_report
from shapetrace.verify import applied, parse_action
from tests.conftest import render
from tests.fixtures.planted import PlantedUNet, aligned_extent, odd_extent
from tests.fixtures.wrong_level import WrongLevelUNet


def _input(dims: int, extent: int) -> torch.Tensor:
    return torch.randn(1, 1, *([extent] * dims))


def _only_cause(traced: Trace) -> Cause:
    (cause,) = traced.causes
    assert sorted(cause.breaks) == list(range(len(traced.breaks))), "one cause explains every break"
    return cause


def _runs_with(model: nn.Module, fix: Fix, x: torch.Tensor) -> bool:
    """Whether the real forward on the CPU, with `fix` applied (at each of its sizes, for a size
    fix), runs and returns the size it was given."""
    steps = parse_action(fix.action)
    sizes = [tuple(int(word) for word in words) for verb, words in steps if verb == "size"]
    inputs = [torch.randn(*x.shape[:2], *size) for size in sizes] or [x]
    with applied(model, steps), torch.no_grad():
        return all(model(given).shape[2:] == given.shape[2:] for given in inputs)


# --- item 2: causes read from the records -------------------------------------------------------


@pytest.mark.parametrize(("dims", "extent"), [(1, 22050), (2, 30)])
def test_a_functional_pool_that_floors_is_rounding_not_a_wrong_level(dims: int, extent: int) -> None:
    # 22050 → 11025 → 5512 (floored); the up path doubles back to 11024 against 11025.
    model = PlantedUNet(dims, levels=2, width=2, down="functional pool")
    x = _input(dims, extent)
    with pytest.raises(RuntimeError):
        model(x)
    traced = trace(model, x)
    cause = _only_cause(traced)
    assert cause.kind == CauseKind.ROUNDING
    assert f"max_pool{dims}d" in cause.text and "floored" in cause.text
    assert "another level" not in cause.text
    verified = [fix for fix in cause.fixes if fix.verified]
    assert verified
    for fix in verified:
        assert _runs_with(model, fix, x), fix.text


def test_a_conv_transpose_without_output_padding_names_output_padding() -> None:
    model = PlantedUNet(2, levels=2, width=2, bug="missing output_padding")
    x = _input(2, 16)
    traced = trace(model, x)
    cause = _only_cause(traced)
    assert cause.kind == CauseKind.OUTPUT_PADDING
    assert full_name(traced, cause.layer) == "ups.1"
    assert "kernel 3, stride 2, padding 1" in cause.text and "4 → 7, not 8" in cause.text
    first = cause.fixes[0]
    assert first.verified and "output_padding=1" in first.text
    assert "another level" not in cause.text
    # No size helps (2n - 1 never meets 2n): no size is offered.
    assert not any("input size" in fix.text for fix in cause.fixes)
    assert _runs_with(model, first, x)


class _SkipFromTheWrongLevel(nn.Module):
    """The issue's model: dec2 joins enc1's map where enc2's belongs; pool's output has its shape."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 16, 3, padding=1)  # (16, n)
        self.pool = nn.MaxPool2d(2)  # (16, n/2): the right size, the wrong level
        self.enc2 = nn.Conv2d(16, 32, 3, padding=1)  # (32, n/2)
        self.pool2 = nn.MaxPool2d(2)
        self.bottleneck = nn.Conv2d(32, 64, 3, padding=1)  # (64, n/4)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)  # (32, n/2)
        self.dec2 = nn.Conv2d(64, 32, 3, padding=1)  # cat(up2, enc2)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)  # (16, n)
        self.dec1 = nn.Conv2d(32, 16, 3, padding=1)  # cat(up1, enc1)
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        h = self.bottleneck(self.pool2(e2))
        h = self.dec2(torch.cat([self.up2(h), e1], dim=1))  # the bug: e1, not e2
        h = self.dec1(torch.cat([self.up1(h), e1], dim=1))
        output: torch.Tensor = self.head(h)
        return output


def test_a_skip_from_the_wrong_level_is_fixed_by_its_mirror_not_by_a_layer_of_the_right_shape() -> None:
    model, x = _SkipFromTheWrongLevel(), torch.randn(1, 3, 32, 32)
    traced = trace(model, x)
    assert {brk.kind for brk in traced.breaks} == {"size", "channels"}  # 16×16 vs 32×32, and 48 for 64
    cause = _only_cause(traced)
    assert cause.kind == CauseKind.WRONG_LEVEL
    assert "enc1" in cause.text and "another level" in cause.text
    (fix,) = cause.fixes
    assert fix.verified and "from enc2" in fix.text and "pool" not in fix.text
    assert not any("build dec2" in other.text for other in cause.fixes)
    assert _runs_with(model, fix, x)


def test_a_channel_mismatch_at_an_add_is_a_channel_break() -> None:
    model = PlantedUNet(2, levels=2, width=4, bug="additive mismatch", merge="add")
    x = _input(2, 8)
    traced = trace(model, x)
    first = traced.breaks[0]
    assert first.kind == BreakKind.CHANNELS and first.op == "add"
    assert [side.channels for side in first.sides] == [16, 8]  # ups.1 gives 2 × 8; the skip has 8
    assert "rounding" not in first.cause and "another level" not in first.cause
    cause = _only_cause(traced)  # the block after the + breaks too, on the same sum
    assert cause.kind == CauseKind.CHANNELS
    fix = cause.fixes[0]
    assert fix.verified and fix.text.startswith("build ups.1 for 8 output channels")
    assert _runs_with(model, fix, x)


def test_a_block_built_for_the_wrong_in_channels() -> None:
    model = PlantedUNet(3, levels=2, width=2, bug="wrong in_channels")
    x = _input(3, 8)
    traced = trace(model, x)
    cause = _only_cause(traced)
    assert cause.kind == CauseKind.CHANNELS
    fix = cause.fixes[0]
    assert fix.verified and re.search(r"\bbuild decoders\.1\b.* for 8 input channels", fix.text), fix.text
    assert _runs_with(model, fix, x)


def test_a_padded_strided_conv_rounds_up_and_its_warning_says_so() -> None:
    model = PlantedUNet(2, levels=2, width=2, down="strided conv")
    traced = run_trace(model, (_input(2, 7),))
    rounded = [w for w in traced.warnings if w.kind in (WarningKind.ROUNDED_UP, WarningKind.FLOORED)]
    assert rounded
    for warning in rounded:
        assert "rounded up" in warning.message and "lost" not in warning.message
    assert "rounded up" in _only_cause(traced).text


# --- item 3: mirror order -----------------------------------------------------------------------


def test_skips_consumed_first_in_first_out_are_an_order_break_even_when_every_shape_lines_up(
    runner: CliRunner,
) -> None:
    model = PlantedUNet(2, levels=3, width=4, bug="fifo")
    x = _input(2, 32)
    assert model(x).shape[2:] == (8, 8)  # torch runs it: the up path resized to every skip
    traced = trace(model, x)
    assert {brk.kind for brk in traced.breaks} == {BreakKind.ORDER}
    cause = _only_cause(traced)
    assert cause.kind == CauseKind.ORDER and "first in, first out" in cause.text
    assert "decoders.2 ← encoders.2" in cause.text
    (fix,) = cause.fixes
    assert fix.verified
    assert _runs_with(model, fix, x)  # in mirror order the output is full size again
    warning = next(w for w in traced.warnings if w.kind == WarningKind.OUTPUT_RESOLUTION)
    assert "1/4 of the input's resolution" in warning.message


def test_the_cli_exits_1_on_an_order_break(runner: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "fifo.py"
    source.write_text(
        "from tests.fixtures.planted import PlantedUNet\n"
        "def build():\n    return PlantedUNet(2, levels=2, width=4, bug='fifo')\n",
        encoding="utf-8",
    )
    result = runner.invoke(main, ["trace", f"{source}:build", "--input", "1,1,16,16"], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "cause 1 (order), 2 breaks" in result.output


def test_the_fifo_fixture_without_resize_is_one_order_cause_with_a_verified_fix() -> None:
    with torch.device("meta"):
        model = WrongLevelUNet()
    traced = run_trace(model, (torch.empty(1, 3, 32, 32, device="meta"),))
    cause = _only_cause(traced)
    assert cause.kind == CauseKind.ORDER
    assert cause.fixes[0].verified and "dec1 takes enc1, dec0 takes enc0" in cause.fixes[0].text


def test_an_output_at_the_input_s_resolution_gives_no_resolution_warning() -> None:
    traced = trace(PlantedUNet(2, levels=2, width=2), _input(2, 16))
    assert traced.ok and traced.warnings == ()


# --- item 1: causes as records, printed once ----------------------------------------------------


def _odd_trace() -> Trace:
    return trace(PlantedUNet(2, levels=3, width=2), _input(2, odd_extent(3, 2)))


def test_the_table_prints_each_cause_once_with_the_breaks_it_explains() -> None:
    traced = _odd_trace()
    cause = _only_cause(traced)
    assert len(traced.breaks) == 3
    text = render(trace_report(traced), width=400)
    assert text.count(cause.text) == 1
    assert "cause 1 (rounding), 3 breaks" in text
    assert "✗ 3 breaks (size), 1 cause" in text
    for number in (1, 2, 3):
        assert f"break {number} (size) at decoders." in text
    for fix in cause.fixes:
        assert ("fix (verified):   " if fix.verified else "fix (unverified): ") + fix.text in text


def test_json_schema_2_has_causes_and_warning_kinds() -> None:
    traced = _odd_trace()
    data = json.loads(traced.to_json())
    assert data["schema"] == 2
    (cause,) = data["causes"]
    assert cause["kind"] == "rounding" and cause["breaks"] == [0, 1, 2]
    assert cause["layer"] == full_name(traced, traced.causes[0].layer)
    assert all(set(fix) >= {"text", "verified"} and isinstance(fix["verified"], bool) for fix in cause["fixes"])
    assert data["warnings"] and all(warning["kind"] == "floored" for warning in data["warnings"])
    assert Trace.from_json(traced.to_json()) == traced


def _as_schema_1(traced: Trace) -> str:
    """The trace as a file written before schema 2: no causes, no records, one multiple."""
    data = json.loads(traced.to_json())
    data["schema"] = 1
    del data["causes"], data["resamplings"]
    data["size_rule"] = {"multiple": 4, "minimum": 4, "nearest": [16, 20], "exact": True}
    return json.dumps(data)


def test_schema_1_files_are_still_read_and_diffed(runner: CliRunner, tmp_path: Path) -> None:
    old = Trace.from_json(_as_schema_1(_odd_trace()))
    assert old.causes == () and old.breaks and old.breaks[0].cause
    assert [(axis.modulus, axis.residues, axis.minimum) for axis in old.size_rule.axes] == [(4, (0,), 4)] * 2  # type: ignore[union-attr]
    assert old.size_rule is not None and old.size_rule.nearest == ((16, 16), (20, 20))
    assert "break 1 (size)" in render(trace_report(old), width=400)  # no cause record: each break as before
    first, second = tmp_path / "old.json", tmp_path / "new.json"
    first.write_text(_as_schema_1(_odd_trace()), encoding="utf-8")
    second.write_text(trace(PlantedUNet(2, levels=3, width=2), _input(2, 16)).to_json(), encoding="utf-8")
    result = runner.invoke(main, ["diff", str(first), str(second)])
    assert result.exit_code == 1, result.output
    assert "Error" not in result.output


# --- item 4: only verified fixes --------------------------------------------------------------


def test_without_verification_every_fix_is_labelled_unverified() -> None:
    traced = run_trace(PlantedUNet(2, levels=2, width=2), (_input(2, 14),), verify=False)
    fixes = [fix for cause in traced.causes for fix in cause.fixes]
    assert fixes and not any(fix.verified for fix in fixes)
    assert "fix (verified)" not in render(trace_report(traced), width=400)
    assert all("(unverified)" in brk.fix for brk in traced.breaks)


def test_verifying_leaves_the_model_as_it_was() -> None:
    model = PlantedUNet(2, levels=2, width=2, bug="missing output_padding").train()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    modules = list(model.modules())
    traced = trace(model, _input(2, 16))
    assert traced.causes[0].fixes[0].verified  # a re-trace with output_padding set ran
    assert model.ups[1].output_padding == (0, 0)
    assert all(module.training for module in modules)
    for module in modules:
        assert not module._forward_hooks and not module._forward_pre_hooks and "forward" not in module.__dict__
    assert all(torch.equal(state[name], tensor) for name, tensor in model.state_dict().items())
    assert torch._C._len_torch_function_stack() == 0


def test_a_fix_that_does_not_align_is_labelled_unverified() -> None:
    class Transformed(nn.Module):
        """The skip is scaled before the merge: a reroute cannot reach it."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = PlantedUNet(2, levels=2, width=2, bug="fifo")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            output: torch.Tensor = self.inner(x)
            return output

    original = PlantedUNet._skip

    def scaled(self: PlantedUNet, skips: list[torch.Tensor], level: int) -> torch.Tensor:
        return original(self, skips, level) * 1.0

    PlantedUNet._skip = scaled  # type: ignore[method-assign]
    try:
        traced = trace(Transformed(), _input(2, 16))
    finally:
        PlantedUNet._skip = original  # type: ignore[method-assign]
    cause = _only_cause(traced)
    assert cause.kind == CauseKind.ORDER
    assert not cause.fixes[0].verified
    assert "(unverified)" in traced.breaks[0].fix


def test_fix_texts_match_the_dimensionality() -> None:
    for dims in (1, 3):
        traced = trace(PlantedUNet(dims, levels=2, width=2), _input(dims, odd_extent(2, 2)))
        texts = [fix.text for cause in traced.causes for fix in cause.fixes]
        assert any("skip.shape[2:]" in text for text in texts)
        assert not any("[-2:]" in text for text in texts)


def test_the_fixed_model_traces_clean() -> None:
    traced = trace(PlantedUNet(1, levels=3, width=2, down="functional pool"), _input(1, aligned_extent(3, 5)))
    assert traced.ok and traced.causes == ()


def test_a_usage_of_functional_interpolation_keeps_the_output_warning_away() -> None:
    class Interpolating(nn.Module):
        """Upsamples by interpolating to the skip's size: the interpolation is the upsampler."""

        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Conv2d(1, 2, 3, stride=2, padding=1)
            self.head = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.interpolate(self.down(x), size=x.shape[2:])
            output: torch.Tensor = self.head(torch.cat([h, x], dim=1))
            return output

    traced = trace(Interpolating(), _input(2, 15))
    assert traced.ok
    assert [warning.kind for warning in traced.warnings] == [WarningKind.ROUNDED_UP]  # 15 → 8, not the output


def test_where_the_chains_cannot_tell_a_near_miss_after_a_floor_is_still_rounding() -> None:
    class Padded(nn.Module):
        """Pads its input by a constant first (no record says so), then floors at an odd size."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = PlantedUNet(2, levels=2, width=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            output: torch.Tensor = self.inner(F.pad(x, (1, 1, 1, 1)))
            return output

    traced = run_trace(Padded(), (_input(2, 8),), verify=False)  # 10 → 5 → 2, up to 4 against 5
    cause = _only_cause(traced)
    assert cause.kind == CauseKind.ROUNDING and "floored" in cause.text
    # A whole level apart is no near miss: the FIFO fixture at 33 stays out of mirror order.
    with torch.device("meta"):
        model = WrongLevelUNet()
    assert run_trace(model, (torch.empty(1, 3, 33, 33, device="meta"),)).causes[0].kind == CauseKind.ORDER


class UnshuffleUNet(nn.Module):
    """Two levels down by pixel-unshuffle, as einops' `Rearrange` downsamplers do, each level's output a skip."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.down1 = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(16, 8, 1))
        self.down2 = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(32, 8, 1))
        self.up2 = nn.Upsample(scale_factor=2)
        self.merge1 = nn.Conv2d(16, 8, 3, padding=1)
        self.up1 = nn.Upsample(scale_factor=2)
        self.merge0 = nn.Conv2d(12, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level0 = self.stem(x)
        level1 = self.down1(level0)
        bottom = self.down2(level1)
        y = self.merge1(torch.cat([self.up2(bottom), level1], dim=1))
        output: torch.Tensor = self.merge0(torch.cat([self.up1(y), level0], dim=1))
        return output


def test_an_input_size_a_deep_layer_refuses_is_an_input_size_cause_with_a_verified_size_fix() -> None:
    """62 halves to 31, which the second unshuffle cannot split: the forward stops before the up path."""
    model = UnshuffleUNet()
    traced = trace(model, torch.randn(1, 3, 62, 62))
    (cause,) = traced.causes
    assert cause.kind == "input size"
    fix = cause.fixes[0]
    assert fix.verified, fix.text
    for size in [tuple(int(extent) for extent in step.split(":")[1].split(",")) for step in fix.action]:
        with torch.no_grad():
            assert model(torch.randn(1, 3, *size)).shape[2:] == size  # the offered sizes run for real


class ResizedToWrongLevel(nn.Module):
    """The up path interpolates to its skip's size, and its first merge takes the finest skip
    (`skip = s0`, meant `s1`): the resize hides the wrong level, and level 1 goes unused."""

    def __init__(self, widths: tuple[int, int, int], *, fixed: bool = False) -> None:
        super().__init__()
        self.fixed = fixed
        w0, w1, w2 = widths
        self.enc0 = nn.Conv2d(3, w0, 3, padding=1)
        self.enc1 = nn.Conv2d(w0, w1, 3, padding=1)
        self.enc2 = nn.Conv2d(w1, w2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.dec1 = nn.Conv2d(w2 + w1, w1, 3, padding=1)
        self.dec0 = nn.Conv2d(w1 + w0, w0, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.enc0(x)
        s1 = self.enc1(self.pool(s0))
        bottom = self.enc2(self.pool(s1))
        skip = s1 if self.fixed else s0
        y = self.dec1(torch.cat([F.interpolate(bottom, size=skip.shape[2:]), skip], 1))
        output: torch.Tensor = self.dec0(torch.cat([F.interpolate(y, size=s0.shape[2:]), s0], 1))
        return output


@pytest.mark.parametrize("widths", [(8, 16, 32), (8, 8, 8)], ids=["channels differ", "one width"])
def test_a_wrong_level_hidden_by_a_resize_to_the_skip_is_named_with_the_unused_level(
    widths: tuple[int, int, int],
) -> None:
    """Whether channels break or every shape lines up, the cause is the wrong level, and the fix the level at 1/2."""
    model = ResizedToWrongLevel(widths)
    traced = trace(model, torch.randn(1, 3, 32, 32))
    (cause,) = traced.causes
    assert cause.kind == "wrong level"
    assert "resized to the skip from enc0" in cause.text and "1/2" in cause.text
    fix = cause.fixes[0]
    assert fix.verified and "from enc1" in fix.text, fix.text
    fixed = ResizedToWrongLevel(widths, fixed=True)  # the fix, as the user would write it: skip = s1
    assert not trace(fixed, torch.randn(1, 3, 32, 32)).breaks
