"""UNets written the way users write them (tests/fixtures/user_unets.py), against the truth.

The truth is each model's forward: the skip pairs are read from it (source: the innermost call
that returned the saved map; target: the first call the merged tensor feeds), and which sizes
run, and whether a verified fix makes the model run, come from real CPU forwards at tiny sizes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from shapetrace import trace, wrap
from shapetrace.cli import main
from shapetrace.records import CauseKind
from shapetrace.testing import assert_aligned
from shapetrace.verify import applied, parse_action
from tests.fixtures import user_unets as user
from tests.fixtures.user_cases import (
    Case,
    PlantedCase,
    check_planted,
    image,
    image_and_time,
    meta_trace,
    pairs_of,
    runs,
    size_rule_disagreements,
)


def _sd_inputs(size: int, device: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    sample, timestep = torch.randn(1, 4, size, size, device=device), torch.tensor([3], device=device)
    return (sample, timestep), {"encoder_hidden_states": torch.randn(1, 7, 16, device=device)}


def _class_inputs(size: int, device: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    x, t = torch.randn(2, 3, size, size, device=device), torch.tensor([3, 4], device=device)
    return (x, t), {"y": torch.tensor([1, 2], device=device)}


MILESIAL_PAIRS = (
    ("down2.maxpool_conv.1.double_conv.4", "up1.conv"),
    ("down1.maxpool_conv.1.double_conv.4", "up2.conv"),
    ("inc.double_conv.4", "up3.conv"),
)
CASES = {
    "milesial_transpose": Case(lambda: user.MilesialUNet(bilinear=False), image(3), 35, MILESIAL_PAIRS),
    "milesial_bilinear": Case(lambda: user.MilesialUNet(bilinear=True), image(3), 35, MILESIAL_PAIRS),
    "aladdin": Case(
        user.AladdinUNet,
        image(3),
        35,
        (("downs.2.double_conv.4", "ups.1"), ("downs.1.double_conv.4", "ups.3"), ("downs.0.double_conv.4", "ups.5")),
    ),
    "diffusion": Case(
        user.DiffusionUNet,
        image_and_time(3),
        16,
        # Two pushes per level (block1, then attention), popped last in, first out; then r.
        (
            ("downs.2.2", "ups.0.0"),
            ("downs.2.0", "ups.0.1"),
            ("downs.1.2", "ups.1.0"),
            ("downs.1.0", "ups.1.1"),
            ("downs.0.2", "ups.2.0"),
            ("downs.0.0", "ups.2.1"),
            ("init_conv", "final_res_block"),
        ),
    ),
    "nested": Case(
        lambda: user.NestedUNet(deep_supervision=True),
        image(3),
        16,
        (
            ("conv0_0.bn2", "conv0_1"),
            ("conv1_0.bn2", "conv1_1"),
            ("conv0_0.bn2", "conv0_2"),
            ("conv0_1.bn2", "conv0_2"),
            ("conv2_0.bn2", "conv2_1"),
            ("conv1_0.bn2", "conv1_2"),
            ("conv1_1.bn2", "conv1_2"),
            ("conv0_0.bn2", "conv0_3"),
            ("conv0_1.bn2", "conv0_3"),
            ("conv0_2.bn2", "conv0_3"),
        ),
    ),
    "valid3d": Case(
        user.ValidUNet3d, image(1, dims=3), 44, (("encoders.1.relu", "decoders.0"), ("encoders.0.relu", "decoders.1"))
    ),
    "wave": Case(
        user.WaveUNet,
        image(1, dims=1),
        101,
        (("down_convs.2", "up_convs.0"), ("down_convs.1", "up_convs.1"), ("down_convs.0", "up_convs.2")),
    ),
    "attention": Case(
        user.AttentionUNet,
        image(3),
        16,
        # The gate scales the skip (`x * psi`); the map gated is conv2's, joined at up_conv3.
        (("conv2.double_conv.4", "up_conv3"), ("conv1.double_conv.4", "up_conv2")),
    ),
    "resunet": Case(
        user.ResUNet,
        image(3),
        16,
        (("residual_conv_1", "up_residual_conv1"), ("input_layer.1", "up_residual_conv2")),
    ),
    "cross_attention": Case(
        user.CrossAttentionUNet, _sd_inputs, 8, (("down_attn.1", "up_res.0"), ("down_attn.0", "up_res.1"))
    ),
    "class_labels": Case(user.ClassUNet, _class_inputs, 8, (("down1", "up1"), ("inc", "up2"))),
    "wrapped": Case(user.WrappedUNet, image(3), 35, tuple((f"net.{s}", f"net.{t}") for s, t in MILESIAL_PAIRS)),
    "functional": Case(
        user.FunctionalUNet, image(3), 16, (("enc2.double_conv.4", "dec2"), ("enc1.double_conv.4", "dec1"))
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_skip_pairs_are_the_ones_the_forward_makes(name: str) -> None:
    traced = meta_trace(CASES[name])
    assert traced.ok, [b.message for b in traced.breaks]
    assert pairs_of(traced) == list(CASES[name].pairs)


@pytest.mark.parametrize("name", ["resunet", "diffusion", "cross_attention", "attention"])
def test_residual_sums_and_gates_are_not_skips(name: str) -> None:
    traced = meta_trace(CASES[name])
    # Every skip of these models is a concatenation; `x + conv(x)`, `x * psi` and scale/shift are not.
    assert {skip.op for skip in traced.skips} == {"cat"}


def test_deep_supervision_returns_one_output_per_head() -> None:
    traced = meta_trace(CASES["nested"])
    assert traced.outputs == ((1, 1, 16, 16),) * 3


SIZES = {"milesial_transpose": range(4, 20), "aladdin": range(4, 20), "diffusion": range(3, 14)}
SIZES |= {"functional": range(3, 14), "attention": range(3, 14), "class_labels": range(3, 14)}
SIZES |= {"wave": range(80, 110, 3), "nested": range(5, 19)}


@pytest.mark.parametrize("name", list(SIZES))
def test_size_rule_accepts_exactly_the_sizes_a_real_forward_runs(name: str) -> None:
    assert size_rule_disagreements(CASES[name], SIZES[name]) == []


@pytest.mark.parametrize("name", ["diffusion", "functional", "attention", "class_labels", "nested"])
def test_wrap_makes_every_size_run_at_its_own_size(name: str) -> None:
    case = CASES[name]
    torch.manual_seed(0)
    model = case.build().eval()
    args, kwargs = case.inputs(case.size, "meta")
    wrapped = wrap(model, *args, **kwargs)
    for size in (5, 7, 10, 11):
        args, kwargs = case.inputs(size, "cpu")
        with torch.no_grad():
            output = wrapped(*args, **kwargs)
        first = output[0] if isinstance(output, list) else output
        assert first.shape[2:] == args[0].shape[2:]


def test_assert_aligned_names_the_odd_sizes_of_a_functional_unet() -> None:
    case = CASES["functional"]
    args, _ = case.inputs(16, "meta")
    assert_aligned(user.FunctionalUNet, *args, sizes="8:32:4")
    with pytest.raises(AssertionError, match="18"):
        assert_aligned(user.FunctionalUNet, *args, sizes="16:20:2")


PLANTED = {
    "milesial_without_pad": PlantedCase(
        lambda: user.MilesialUNet(bilinear=False, pad=False), image(3), 36, CauseKind.ROUNDING
    ),
    "aladdin_wrong_channels": PlantedCase(
        lambda: user.AladdinUNet(wrong_channels=True), image(3), 16, CauseKind.CHANNELS
    ),
    "diffusion_fifo": PlantedCase(lambda: user.DiffusionUNet(pop="fifo"), image_and_time(3), 16, CauseKind.ORDER),
    "attention_gate_channels": PlantedCase(
        lambda: user.AttentionUNet(gate_channels=4), image(3), 16, CauseKind.CHANNELS
    ),
    "functional_odd": PlantedCase(user.FunctionalUNet, image(3), 18, CauseKind.ROUNDING),
    "class_labels_odd": PlantedCase(user.ClassUNet, _class_inputs, 10, CauseKind.ROUNDING),
    "diffusion_odd": PlantedCase(user.DiffusionUNet, image_and_time(3), 18, CauseKind.INPUT_SIZE),
    # Forgetting `skip_connections[::-1]`: the interpolate hides the sizes, the channels break.
    "aladdin_not_reversed": PlantedCase(lambda: user.AladdinUNet(reverse=False), image(3), 16, CauseKind.ORDER),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_the_planted_bug_is_named_and_its_verified_fix_makes_the_real_forward_run(name: str) -> None:
    check_planted(PLANTED[name])


def test_a_valid_conv_unet_too_small_is_an_input_size_not_an_order_break() -> None:
    # At 80 the crops shrink the up path below the skips' levels: no skip is out of order.
    traced = meta_trace(CASES["wave"], size=80)
    assert not traced.ok
    assert {cause.kind for cause in traced.causes} == {CauseKind.INPUT_SIZE}
    assert all(b.kind != "order" for b in traced.breaks)


FIXTURES = "tests/fixtures/user_unets.py"


def test_cli_trace_of_an_sd_like_unet_with_a_keyword_input(runner: Any) -> None:
    result = runner.invoke(
        main,
        [
            "trace",
            f"{FIXTURES}:CrossAttentionUNet",
            "--input",
            "1,4,8,8",
            "--timestep",
            "3",
            "--kw",
            "encoder_hidden_states=1,7,16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "down_attn" in result.output and "up_res" in result.output


def test_cli_sweep_agrees_with_real_forwards(runner: Any) -> None:
    result = runner.invoke(main, ["sweep", f"{FIXTURES}:FunctionalUNet", "--input", "1,3,16,16", "--sizes", "8:12:1"])
    # 9, 10, 11 break (pools floor them); 8 and 12 run, as real forwards say.
    assert result.exit_code == 1, result.output
    model = user.FunctionalUNet().eval()
    ran = {size: runs(model, image(3), size) for size in range(8, 13)}
    assert ran == {8: True, 9: False, 10: False, 11: False, 12: True}
    assert "8" in result.output and "12" in result.output


def test_cross_attention_with_more_context_tokens_than_pixels_adds_no_skip() -> None:
    # At 4×4 the bottom level has 4 pixels, fewer than the 7 context tokens: the attention's
    # output is still made from the image (its queries), so `proj_out(x) + x_in` is a residual.
    traced = meta_trace(CASES["cross_attention"], size=4)
    assert traced.ok, [b.message for b in traced.breaks]
    assert pairs_of(traced) == list(CASES["cross_attention"].pairs)


def test_a_time_embedding_added_at_a_one_pixel_level_is_no_skip() -> None:
    # At 4 the bottom level is 1×1: the time MLP's shift, (B, C, 1, 1), has the map's own shape there.
    model = user.DiffusionUNet().eval()
    assert runs(model, image_and_time(3), 4)
    traced = meta_trace(CASES["diffusion"], size=4)
    assert traced.ok, [b.message for b in traced.breaks]
    assert pairs_of(traced) == list(CASES["diffusion"].pairs)


def test_a_valid_conv_unet_that_forgot_the_crop_is_told_to_crop_its_skips() -> None:
    torch.manual_seed(0)
    model = user.ValidUNet3d(crop=False).eval()
    x = torch.randn(1, 1, 44, 44, 44)
    traced = trace(model, x)
    (cause,) = traced.causes
    # Unpadded 3×3×3 convs trim the border at every stride-1 step: nothing was floored.
    assert "unpadded" in cause.text and "divisible by 1" not in cause.text
    fix = cause.fixes[0]
    assert fix.verified and "crop" in fix.text
    with applied(model, parse_action(fix.action)), torch.no_grad():
        output = model(x)
    with torch.no_grad():
        assert output.shape == user.ValidUNet3d().eval()(x).shape == (1, 2, 4, 4, 4)


def test_a_wave_unet_popping_its_first_shortcut_is_an_order_cause() -> None:
    # The crop happens before the merge, on the wrong shortcut: a reroute at the merge cannot
    # reach it, so the fix stays unverified, but the cause is the order.
    torch.manual_seed(0)
    model = user.WaveUNet(pop_first=True).eval()
    assert not runs(model, image(1, dims=1), 101)
    traced = trace(model, torch.randn(1, 1, 101))
    assert [cause.kind for cause in traced.causes] == [CauseKind.ORDER]
    assert "up_convs.0 takes down_convs.2" in traced.causes[0].fixes[0].text


def test_the_verdict_names_every_map_a_deep_supervision_unet_returns() -> None:
    with torch.device("meta"):
        model = user.NestedUNet(deep_supervision=True)
    traced = trace(model, torch.empty(1, 3, 16, 16, device="meta"))
    assert len(traced.outputs) > 1
    verdict = next(line for line in str(traced).splitlines() if line.startswith("✓ aligned"))
    assert verdict.endswith(", ".join(str(list(shape)) for shape in traced.outputs))


def test_a_1d_model_whose_output_is_shorter_than_its_input_is_warned_of() -> None:
    """Wave-U-Net's unpadded convolutions return a shorter signal: said, as for 2-D models."""
    traced = trace(user.WaveUNet().eval(), torch.randn(1, 1, 200))
    assert traced.ok and traced.outputs[0][-1] < 200
    assert [warning.kind for warning in traced.warnings if warning.kind == "cropped output"] == ["cropped output"]
