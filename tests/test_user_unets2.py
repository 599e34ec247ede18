"""More UNets written the way users write them (tests/fixtures/user_unets2.py), against the truth.

As in tests/test_user_unets.py, the truth is each model's forward: skip pairs are read from it
(source: the innermost call that returned the saved map; target: the first call the merged tensor
feeds), and which sizes run, and whether a verified fix makes the model run, come from real CPU
forwards at tiny sizes.
"""

from __future__ import annotations

import pytest
import torch

from shapetrace import trace, wrap
from shapetrace.records import CauseKind
from tests.fixtures import user_unets2 as user
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

SEG_SOURCES = ("encoder.stages.3.1", "encoder.stages.2.1", "encoder.stages.1.1", "encoder.stages.0.1")
CASES = {
    "guided_diffusion": Case(
        user.GuidedDiffusionUNet,
        image_and_time(3, dims=2),
        16,
        # Every input block's output is pushed to `hs`; each output block pops one.
        (
            ("input_blocks.3.1", "output_blocks.0"),
            ("input_blocks.2.0.op", "output_blocks.1"),
            ("input_blocks.1.0", "output_blocks.2"),
            ("input_blocks.0.0", "output_blocks.3"),
        ),
    ),
    # The inplace ReLU returns the batch norm's tensor: the source is the norm, as for milesial.
    "seg_unet": Case(user.SegUnet, image(3), 64, tuple((s, f"blocks.{i}.conv1") for i, s in enumerate(SEG_SOURCES))),
    # `x = x + skip` ends block i: the sum first feeds block i + 1.
    "seg_linknet": Case(
        user.SegLinknet, image(3), 64, tuple((s, f"blocks.{i + 1}") for i, s in enumerate(SEG_SOURCES))
    ),
    "vnet": Case(user.VNet, image(1, dims=3), 8, (("down1.stage.act", "up2.stage"), ("input_act", "up1.stage"))),
    "audio_pool": Case(
        user.AudioUNet1d,
        image_and_time(2, dims=1),
        64,
        (("down_blocks.1", "up_blocks.0"), ("down_blocks.0", "up_blocks.1")),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_skip_pairs_are_the_ones_the_forward_makes(name: str) -> None:
    case = CASES[name]
    assert runs(case.build().eval(), case.inputs, case.size)
    traced = meta_trace(case)
    assert traced.ok, [b.message for b in traced.breaks]
    assert pairs_of(traced) == list(case.pairs)


@pytest.mark.parametrize(("name", "op"), [("guided_diffusion", "cat"), ("vnet", "cat"), ("seg_linknet", "add")])
def test_residual_sums_inside_blocks_are_not_skips(name: str, op: str) -> None:
    traced = meta_trace(CASES[name])
    assert {skip.op for skip in traced.skips} == {op}


SIZES = {
    "guided_diffusion": range(3, 14),
    # Five stride-2 convolutions that round up, then plain ×2 upsamplings: only 32k - 1 and 32k run.
    "seg_unet": range(16, 70),
    "seg_linknet": range(16, 40),
    "vnet": range(3, 10),
    "audio_pool": range(20, 45),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_size_rule_accepts_exactly_the_sizes_a_real_forward_runs(name: str) -> None:
    assert size_rule_disagreements(CASES[name], SIZES[name]) == []


PLANTED = {
    "guided_wrong_output_channels": PlantedCase(
        lambda: user.GuidedDiffusionUNet(wrong_output=True), image_and_time(3, dims=2), 16, CauseKind.CHANNELS
    ),
    "audio_pool_odd": PlantedCase(user.AudioUNet1d, image_and_time(2, dims=1), 63, CauseKind.ROUNDING),
    "audio_strided_odd": PlantedCase(
        lambda: user.AudioUNet1d(strided=True), image_and_time(2, dims=1), 63, CauseKind.ROUNDING
    ),
    "seg_unet_odd": PlantedCase(user.SegUnet, image(3), 48, CauseKind.ROUNDING),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_the_planted_bug_is_named_and_its_verified_fix_makes_the_real_forward_run(name: str) -> None:
    check_planted(PLANTED[name])


def test_a_residual_after_a_channel_break_is_the_same_break_not_a_second_cause() -> None:
    # The block built for 8 channels runs on a stand-in; `skip_connection(x) + h` then meets the
    # 16-channel x again: one cause, at the block, with one break.
    args, kwargs = image_and_time(3, dims=2)(16, "meta")
    with torch.device("meta"):
        model = user.GuidedDiffusionUNet(wrong_output=True)
    traced = trace(model, *args, **kwargs)
    assert [cause.kind for cause in traced.causes] == [CauseKind.CHANNELS]
    assert [brk.kind for brk in traced.breaks] == ["channels"]


def test_an_odd_waveform_padded_to_its_skip_runs_and_traces_clean() -> None:
    model = user.AudioUNet1d(pad=True).eval()
    inputs = image_and_time(2, dims=1)
    assert runs(model, inputs, 63)
    args, _ = inputs(63, "cpu")
    traced = trace(model, *args)
    assert traced.ok and traced.outputs == ((1, 2, 63),)


@pytest.mark.parametrize("name", ["seg_unet", "seg_linknet", "audio_pool", "guided_diffusion"])
def test_wrap_returns_every_size_at_its_own_size(name: str) -> None:
    # SegUnet maps 31 to 32 and 63 to 64: its output is one pixel larger than the padded input,
    # which is no scale of it; the crop must still give back the input's own size.
    case = CASES[name]
    torch.manual_seed(0)
    model = case.build().eval()
    args, kwargs = case.inputs(case.size, "meta")
    wrapped = wrap(model, *args, **kwargs)
    for size in (case.size // 2 + 1, case.size - 3, case.size + 1):
        args, kwargs = case.inputs(size, "cpu")
        with torch.no_grad():
            output = wrapped(*args, **kwargs)
        assert output.shape[2:] == args[0].shape[2:]


def test_rounding_in_an_encoder_that_returns_every_stage_names_each_stage() -> None:
    # `features = encoder(x)` runs every strided stage inside one call: "encoder rounded up 17 → 9;
    # then encoder rounded up 9 → 5" would not say which stage did what.
    model = user.SegLinknet().eval()
    assert not runs(model, image(3), 33)
    traced = trace(model, torch.randn(1, 3, 33, 33))
    (cause,) = traced.causes
    assert cause.kind == CauseKind.ROUNDING
    named = [f"encoder.stages.{stage} (Sequential)" for stage in (1, 2, 3, 4)]
    assert all(name in cause.text for name in named), cause.text


def test_a_channel_break_at_a_skip_of_an_encoder_that_returns_every_stage_names_the_stage() -> None:
    # The decoder block built for a 7-channel skip gets encoder.stages.2's 8 channels: "the skip of
    # encoder" would fit every skip of this model.
    model = user.SegUnet().eval()
    model.blocks[1] = user.SegDecoderBlock(10, 7, 8)
    traced = trace(model, torch.empty(1, 3, 64, 64, device="meta"))
    assert [cause.kind for cause in traced.causes] == [CauseKind.CHANNELS, CauseKind.CHANNELS]
    first = traced.breaks[0].message
    assert first.endswith("receives 20 = 12 from blocks.0 + 8 from the skip of encoder.stages.2"), first
    assert "the skip of encoder.stages.1" in traced.breaks[1].message


def test_one_stage_rounding_in_an_encoder_that_runs_every_stage_is_named_by_its_stage() -> None:
    # At 48 only the last strided stage meets an odd size (3 → 2): still a stage, not "encoder".
    model = user.SegUnet().eval()
    assert not runs(model, image(3), 48)
    (cause,) = trace(model, torch.empty(1, 3, 48, 48, device="meta")).causes
    assert cause.kind == CauseKind.ROUNDING
    assert cause.text.startswith("encoder.stages.4 (Sequential) rounded up an odd size: 3 → 2"), cause.text
