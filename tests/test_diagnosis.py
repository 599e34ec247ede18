"""Diagnosis: every break named at the right merge, with both producers, its cause and a fix.

Expected values come from the architecture, not from the tracer. The default UNet, chs=(1, 2, 4, 8)
and n_channels=64, has four levels:

    down: level k runs downs.3k and downs.3k+1 (ResBlocks, saved as skips) at size s_k, then
          downs.3k+2 (Downsample: 3×3 conv, 2×2 average pool) gives s_{k+1} = s_k // 2.
    up:   level k (k = 3, 2, 1, 0) runs ups.3j and ups.3j+1 with j = 3 - k, each after
          `torch.cat((x, skips.pop()), dim=1)`, then ups.3j+2 (Upsample ×2, or a conv at level 0).

So the up path reaches level k at s_3 * 2**(3 - k); wherever that differs from s_k both merges
of level k break, and the first downsample whose input was odd is the cause.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from shapetrace import SizeRule, Trace, run_trace
from shapetrace.analysis.placement import block_name, full_name
from shapetrace.cli import main
from shapetrace.models.reference import reference_config, trace_reference
from shapetrace.records import AxisRule, Break, SideRole
from tests.conftest import meta_unet, trace_unet, unet_inputs
from tests.fixtures.wrong_level import WrongLevelUNet

CHS = (1, 2, 4, 8)
N_CHANNELS = 64
BATCH = 2
TUTORIAL_LINE = "out_channels = n_channels * chs[ch_ind - 1]"


@functools.cache
def _reference(height: int, width: int) -> Trace:
    """The default UNet traced at H×W with its size rule (probing sizes costs seconds: once per size)."""
    return trace_reference(size=(height, width), chs=CHS)


# --- size breaks on the default UNet ---------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    """One broken merge as the architecture predicts it."""

    block: str
    up_producer: str
    up_shape: tuple[int, ...]
    skip_producer: str
    skip_shape: tuple[int, ...]


def _predicted_size_breaks(height: int, width: int) -> list[Merge]:
    """The merges whose up path and skip disagree, level by level, from the architecture above."""
    levels = len(CHS)
    down = [(height, width)]
    for _ in range(levels - 1):
        h, w = down[-1]
        down.append((h // 2, w // 2))  # AvgPool2d(2, 2) floors
    merges = []
    for j in range(levels):
        k = levels - 1 - j
        up = (down[-1][0] * 2**j, down[-1][1] * 2**j)  # ConvTranspose2d(k=2, s=2) doubles exactly
        up_channels = N_CHANNELS * CHS[k]
        skip_channels = N_CHANNELS * CHS[k - 1] if k > 0 else N_CHANNELS
        if up == down[k]:
            continue
        # LIFO: the first up block of a level takes the level's second down block, and vice versa.
        first, second = f"ups.{3 * j}", f"ups.{3 * j + 1}"
        before_first = "conv_mid" if j == 0 else f"ups.{3 * j - 1}"
        merges.append(
            Merge(
                first, before_first, (BATCH, up_channels, *up), f"downs.{3 * k + 1}", (BATCH, skip_channels, *down[k])
            )
        )
        merges.append(
            Merge(second, first, (BATCH, up_channels, *up), f"downs.{3 * k}", (BATCH, skip_channels, *down[k]))
        )
    return merges


@dataclass(frozen=True)
class SizeCase:
    """What a user reads off the architecture for one input size (worked out by hand)."""

    size: tuple[int, int]
    first_break: str
    first_up: tuple[str, tuple[int, ...]]
    first_skip: tuple[str, tuple[int, ...]]
    cause_block: str
    """The first downsampling block whose input was odd."""
    cause_sizes: str
    """The odd size it floored, as "before → after"."""
    odd: int
    warnings: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...]
    """(pooling leaf, input size, output size) for every floored size."""


SIZE_CASES = [
    # 225 → 112 → 56 → 28; up 28 → 56 → 112 → 224: only level 0 (ups.9, ups.10) meets 225.
    SizeCase(
        size=(225, 225),
        first_break="ups.9",
        first_up=("ups.8", (2, 64, 224, 224)),
        first_skip=("downs.1", (2, 64, 225, 225)),
        cause_block="downs.2",
        cause_sizes="225 → 112",
        odd=225,
        warnings=(("downs.2.pool", (225, 225), (112, 112)),),
    ),
    # 226 → 113 → 56 → 28: 113 is floored at downs.5; up 112 meets 113 at level 1 first (ups.6).
    SizeCase(
        size=(226, 226),
        first_break="ups.6",
        first_up=("ups.5", (2, 128, 112, 112)),
        first_skip=("downs.4", (2, 64, 113, 113)),
        cause_block="downs.5",
        cause_sizes="113 → 56",
        odd=113,
        warnings=(("downs.5.pool", (113, 113), (56, 56)),),
    ),
    # 230 → 115 → 57 → 28: floored twice; up 56 meets 57 at level 2 first (ups.3).
    SizeCase(
        size=(230, 230),
        first_break="ups.3",
        first_up=("ups.2", (2, 256, 56, 56)),
        first_skip=("downs.7", (2, 128, 57, 57)),
        cause_block="downs.5",
        cause_sizes="115 → 57",
        odd=115,
        warnings=(("downs.5.pool", (115, 115), (57, 57)), ("downs.8.pool", (57, 57), (28, 28))),
    ),
    # H 224 halves exactly; W 225 → 112: like 225, in W only.
    SizeCase(
        size=(224, 225),
        first_break="ups.9",
        first_up=("ups.8", (2, 64, 224, 224)),
        first_skip=("downs.1", (2, 64, 224, 225)),
        cause_block="downs.2",
        cause_sizes="224×225 → 112",
        odd=225,
        warnings=(("downs.2.pool", (224, 225), (112, 112)),),
    ),
]
SIZE_IDS = [f"{case.size[0]}x{case.size[1]}" for case in SIZE_CASES]


def _as_merge(trace: Trace, brk: Break) -> Merge:
    roles = {side.role: side for side in brk.sides}
    assert set(roles) == {"up path", "skip"}, brk.sides
    up, skip = roles[SideRole.UP_PATH], roles[SideRole.SKIP]
    return Merge(
        full_name(trace, brk.layer),
        block_name(trace, up.producer),
        up.shape,
        block_name(trace, skip.producer),
        skip.shape,
    )


@pytest.mark.parametrize("case", SIZE_CASES, ids=SIZE_IDS)
def test_size_breaks_are_at_the_merges_the_architecture_predicts(case: SizeCase) -> None:
    trace = _reference(*case.size)
    assert not trace.ok
    assert {brk.kind for brk in trace.breaks} == {"size"}
    assert {brk.op for brk in trace.breaks} == {"cat"}
    assert [_as_merge(trace, brk) for brk in trace.breaks] == _predicted_size_breaks(*case.size)
    first = _as_merge(trace, trace.breaks[0])
    assert first == Merge(case.first_break, *case.first_up, *case.first_skip)


@pytest.mark.parametrize("case", SIZE_CASES, ids=SIZE_IDS)
def test_size_break_message_names_both_sides(case: SizeCase) -> None:
    trace = _reference(*case.size)
    message = trace.breaks[0].message
    (up_producer, up_shape), (skip_producer, skip_shape) = case.first_up, case.first_skip
    assert message.startswith(f"{case.first_break} (ResBlock)")
    assert f"[{', '.join(map(str, up_shape))}] from {up_producer}" in message
    assert f"[{', '.join(map(str, skip_shape))}] from {skip_producer}" in message


@pytest.mark.parametrize("case", SIZE_CASES, ids=SIZE_IDS)
def test_size_break_cause_is_the_first_odd_downsample(case: SizeCase) -> None:
    trace = _reference(*case.size)
    for brk in trace.breaks:
        assert brk.cause.startswith(f"{case.cause_block} (Downsample)"), brk.cause
        assert case.cause_sizes in brk.cause
        assert f"{case.odd} is not divisible by 2" in brk.cause


def _nearest(case: SizeCase) -> tuple[tuple[int, ...], ...]:
    """Every axis down to a multiple of 8, and every axis up to one (an axis that fits stays)."""
    down = tuple(extent // 8 * 8 for extent in case.size)
    up = tuple(-(-extent // 8) * 8 for extent in case.size)
    return (down, up)


@pytest.mark.parametrize("case", SIZE_CASES, ids=SIZE_IDS)
def test_size_rule_and_fix_name_the_nearest_valid_sizes(case: SizeCase) -> None:
    trace = _reference(*case.size)
    # Sizes that halve three times: multiples of 8; 8 → 4 → 2 → 1 is the smallest; 224 and 232 around.
    multiples_of_8 = tuple(AxisRule(axis, 8, (0,), 8) for axis in (2, 3))
    assert trace.size_rule == SizeRule(multiples_of_8, nearest=_nearest(case), exact=True)
    for brk in trace.breaks:
        assert re.search(r"\bmultiple of 8\b", brk.fix), brk.fix
        assert re.search(r"\b224\b", brk.fix) and re.search(r"\b232\b", brk.fix), brk.fix


@pytest.mark.parametrize("case", SIZE_CASES, ids=SIZE_IDS)
def test_every_floored_size_is_a_warning_in_the_trace_and_the_json(case: SizeCase) -> None:
    trace = _reference(*case.size)
    got = [(full_name(trace, w.layer), w.input_size, w.output_size) for w in trace.warnings]
    assert got == list(case.warnings)
    data = json.loads(trace.to_json())
    assert [(w["layer"], tuple(w["input_size"]), tuple(w["output_size"])) for w in data["warnings"]] == got
    assert data["ok"] is False
    assert [brk["layer"] for brk in data["breaks"]] == [m.block for m in _predicted_size_breaks(*case.size)]
    axes = [{"axis": axis, "modulus": 8, "residues": [0], "minimum": 8} for axis in (2, 3)]
    # One int where both axes agree, else [H, W].
    nearest = [size[0] if size[0] == size[1] else list(size) for size in _nearest(case)]
    assert data["size_rule"] == {"axes": axes, "nearest": nearest, "exact": True}


def test_cli_exits_1_and_its_json_is_the_api_trace(runner: CliRunner) -> None:
    result = runner.invoke(main, ["unet", "--size", "225", "--format", "json"])
    assert result.exit_code == 1, result.output
    assert Trace.from_json(result.output) == _reference(225, 225)


def test_aligned_size_has_no_break_no_warning_and_exits_0(runner: CliRunner) -> None:
    trace = trace_unet(224)
    assert trace.ok and trace.breaks == () and trace.warnings == ()
    assert runner.invoke(main, ["unet", "--size", "224", "--format", "json"]).exit_code == 0


# --- channel breaks of the tutorial's as-written up path --------------------------------------


@dataclass(frozen=True)
class ChannelBreak:
    block: str
    expected: int
    received: int
    parts: tuple[tuple[str, int], ...]
    """(producer block, channels) of each input of the merge, or of the single input."""


def _predicted_channel_breaks(chs: tuple[int, ...], n_channels: int, img_channels: int) -> list[ChannelBreak]:
    """Replay UNet(variant="as-written")'s constructor arithmetic and the forward's channel flow.

    Each block outputs the channels it was built for, whatever it received (the trace goes on
    with a stand-in of the channels a layer expects), so every break is independent.
    """
    # Down path: level i runs two ResBlocks at `in_channels`, then moves to n_channels * chs[i].
    skips: list[tuple[str, int]] = []
    in_channels = n_channels
    for i in range(len(chs)):
        skips += [(f"downs.{3 * i}", in_channels), (f"downs.{3 * i + 1}", in_channels)]
        in_channels = n_channels * chs[i]
    x = ("conv_mid", in_channels)
    # The tutorial's up-path loop: in_channels is never updated, chs[ch_ind - 1] is chs[-1] first.
    breaks = []
    block = 0
    for i in reversed(range(len(chs))):
        ch_ind = len(chs) - i - 1
        out_channels = n_channels * chs[ch_ind - 1]
        for _ in range(2):  # ResBlock(in_channels + out_channels, in_channels) after the cat
            skip_name, skip_channels = skips.pop()
            received = x[1] + skip_channels
            if received != in_channels + out_channels:
                parts = (x, (skip_name, skip_channels))
                breaks.append(ChannelBreak(f"ups.{block}", in_channels + out_channels, received, parts))
            x = (f"ups.{block}", in_channels)
            block += 1
        # Upsample(in_channels, out_channels), or Conv2d(in_channels, img_channels) at the last level.
        if x[1] != in_channels:
            breaks.append(ChannelBreak(f"ups.{block}", in_channels, x[1], (x,)))
        x = (f"ups.{block}", out_channels if i > 0 else img_channels)
        block += 1
    if x[1] != n_channels:  # conv_out = Conv2d(n_channels, img_channels)
        breaks.append(ChannelBreak("conv_out", n_channels, x[1], (x,)))
    return breaks


def _as_channel_break(trace: Trace, brk: Break) -> ChannelBreak:
    parts = tuple((block_name(trace, side.producer), side.channels) for side in brk.sides)
    return ChannelBreak(full_name(trace, brk.layer), brk.expected[0], sum(c for _, c in parts), parts)


AS_WRITTEN = [((1, 2, 4, 8), 64, 224), ((1, 2), 32, 32), ((2, 2, 3), 16, 64)]


@pytest.mark.parametrize(("chs", "n_channels", "size"), AS_WRITTEN)
def test_as_written_reports_every_channel_break_with_its_numbers(
    chs: tuple[int, ...], n_channels: int, size: int
) -> None:
    trace = trace_unet(size, chs, n_channels, variant="as-written")
    expected = _predicted_channel_breaks(chs, n_channels, img_channels=3)
    assert expected, "the as-written loop misaligns every config listed here"
    assert {brk.kind for brk in trace.breaks} == {"channels"}
    assert [_as_channel_break(trace, brk) for brk in trace.breaks] == expected


def test_as_written_first_break_is_the_tutorials_example() -> None:
    trace = trace_unet(224, variant="as-written")
    first = trace.breaks[0]
    # ups.0 is built for 512 + 512 (chs[-1]) but gets 512 from conv_mid + 256 from downs.10.
    assert _as_channel_break(trace, first) == ChannelBreak("ups.0", 1024, 768, (("conv_mid", 512), ("downs.10", 256)))
    assert [side.role for side in first.sides] == ["up path", "skip"]
    assert "1024" in first.message and "768 = 512 from conv_mid + 256 from the skip of downs.10" in first.message


def test_as_written_causes_quote_the_tutorial_line() -> None:
    trace = trace_reference(size=(224, 224), chs=(1, 2, 4, 8), variant="as-written")
    up_breaks = [brk for brk in trace.breaks if full_name(trace, brk.layer).startswith("ups.")]
    assert up_breaks
    for brk in up_breaks:
        assert TUTORIAL_LINE in brk.cause, brk.cause
        expected, received = brk.expected[0], sum(side.channels for side in brk.sides)
        assert re.search(rf"\b{expected}\b", brk.message) and re.search(rf"\b{received}\b", brk.message)
        assert re.search(rf"\b{received}\b", brk.fix), brk.fix
    # conv_out's break is not in the up-path loop: a generic cause naming what fed it.
    (last,) = [brk for brk in trace.breaks if brk not in up_breaks]
    assert full_name(trace, last.layer) == "conv_out"
    assert TUTORIAL_LINE not in last.cause
    assert "ups.11" in last.cause and re.search(r"\b3\b", last.cause), last.cause


# --- --first-break ---------------------------------------------------------------------------


def _first_and_full(size: int, variant: str) -> tuple[Trace, Trace]:
    config = reference_config(CHS, N_CHANNELS, variant)
    model = meta_unet(CHS, N_CHANNELS, variant=variant)
    first = run_trace(model, unet_inputs(size), first_break=True, config=config)
    full = run_trace(model, unet_inputs(size), config=config)
    return first, full


def test_first_break_reports_only_the_first_channel_break() -> None:
    first, full = _first_and_full(224, "as-written")
    assert len(full.breaks) > 1
    assert first.breaks == (full.breaks[0],)


def test_first_break_reports_only_the_first_size_break() -> None:
    first, full = _first_and_full(225, "fixed")
    assert len(full.breaks) > 1
    (brk,) = first.breaks
    assert full_name(first, brk.layer) == "ups.9"
    assert first.breaks == (full.breaks[0],)


# --- a model nobody here wrote: the decoder takes its skips from the wrong levels ------------
# Its decoder pops the skips first in, first out, so the one cause is their order (tests/test_causes.py
# checks the cause record and its verified fix); each break's cause still names both sizes.


def _wrong_level_trace(size: int) -> Trace:
    with torch.device("meta"):
        model = WrongLevelUNet()
    return run_trace(model, (torch.empty(1, 3, size, size, device="meta"),))


def test_wrong_level_model_really_breaks_in_torch() -> None:
    model = WrongLevelUNet()
    with pytest.raises(RuntimeError, match=r"Sizes of tensors must match except in dimension 1"):
        model(torch.randn(1, 3, 32, 32))


def test_wrong_level_skips_are_diagnosed_with_the_fixtures_producers() -> None:
    trace = _wrong_level_trace(32)
    assert trace.model == "WrongLevelUNet"
    assert trace.warnings == ()  # 32 → 16 → 8 halves exactly: no size is to blame
    merges = [_as_merge(trace, brk) for brk in trace.breaks]
    assert merges == [
        Merge("dec1", "up1", (1, 8, 16, 16), "enc0", (1, 8, 32, 32)),
        Merge("dec0", "up0", (1, 8, 32, 32), "enc1", (1, 8, 16, 16)),
    ]
    for brk in trace.breaks:
        assert brk.kind == "size" and brk.op == "cat"


def test_wrong_level_cause_is_generic() -> None:
    trace = _wrong_level_trace(32)
    first, second = trace.breaks
    for brk, up, skip, producer in ((first, 16, 32, "enc0"), (second, 32, 16, "enc1")):
        assert re.search(rf"\b{up}\b.*\b{skip}\b", brk.cause), brk.cause
        assert producer in brk.cause
        # Nothing was floored and this is not the reference UNet: no borrowed explanation.
        assert "odd" not in brk.cause
        assert TUTORIAL_LINE not in brk.cause
        assert brk.fix


def test_wrong_level_cause_does_not_blame_an_unrelated_odd_size() -> None:
    trace = _wrong_level_trace(33)
    assert trace.warnings  # 33 is floored by down0 ...
    first = trace.breaks[0]
    assert _as_merge(trace, first).skip_producer == "enc0"
    # ... but 18 against 33 is a whole level apart, which no floor explains.
    assert "odd size" not in first.cause, first.cause


def test_wrong_level_fix_does_not_ask_for_another_input_size() -> None:
    trace = _wrong_level_trace(32)
    for brk in trace.breaks:
        assert "input size" not in brk.fix and "pad the input" not in brk.fix, brk.fix


class ClassConditioned(nn.Module):
    """A class label looked up by an embedding, as class-conditional diffusion UNets take it."""

    def __init__(self) -> None:
        super().__init__()
        self.label = nn.Embedding(10, 8)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.conv(x) + self.label(y)[:, :, None, None]
        return output


def test_float_labels_to_an_embedding_are_told_to_be_integers_not_to_run_on_cpu() -> None:
    traced = run_trace(ClassConditioned(), (torch.randn(2, 3, 8, 8), torch.zeros(2)))
    (cause,) = traced.causes
    assert "integer indices" in cause.text
    assert "int64" in cause.fixes[0].text and "--device cpu" not in cause.fixes[0].text
    assert run_trace(ClassConditioned(), (torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))).ok
