"""Skip pairing across the styles real UNets are written in (tests/fixtures/styles.py).

Expected pairs come from reading each model's forward, not from the tracer: a skip's source
is the innermost call that returned the saved tensor (or the tensor it was cropped, padded or
added from), its target the first call that receives the merged tensor (for `block(x) + skip`,
the call after the block, which consumes the sum). Each model counts the merges its up path
performs; the skips must match that count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from shapetrace import Trace, trace
from shapetrace.analysis.placement import ancestor_at
from shapetrace.records import Shape, SkipPair
from tests.fixtures import styles

Pair = tuple[str, str, str, Shape, Shape]
"""(source name, target name, op, skipped shape, main-path shape)."""


@dataclass(frozen=True)
class Case:
    build: Callable[[], styles.StyleUNet]
    inputs: Callable[[], tuple[torch.Tensor, ...]]
    pairs: tuple[Pair, ...]
    output: Shape


def _image(*shape: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.empty(*shape, device="meta"),)


def _image_and_time(*shape: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.empty(*shape, device="meta"), torch.zeros(shape[0], dtype=torch.long, device="meta"))


def _lucidrains_pairs(attn: str) -> tuple[Pair, ...]:
    """Two skips per level, popped last in, first out, then init_conv's copy before final_res_block."""
    return (
        (f"downs.2.{attn}", "ups.0.block1", "cat", (2, 16, 4, 4), (2, 32, 4, 4)),
        ("downs.2.block1", "ups.0.block2", "cat", (2, 16, 4, 4), (2, 32, 4, 4)),
        (f"downs.1.{attn}", "ups.1.block1", "cat", (2, 8, 8, 8), (2, 16, 8, 8)),
        ("downs.1.block1", "ups.1.block2", "cat", (2, 8, 8, 8), (2, 16, 8, 8)),
        ("downs.0.block2", "ups.2.block1", "cat", (2, 8, 16, 16), (2, 8, 16, 16)),
        ("downs.0.block1", "ups.2.block2", "cat", (2, 8, 16, 16), (2, 8, 16, 16)),
        ("init_conv", "final_res_block", "cat", (2, 8, 16, 16), (2, 8, 16, 16)),
    )


FUNCTIONAL_RESIDUAL_PAIRS: tuple[Pair, ...] = (
    # `x = attn1(x) + x; h.append(x)`: the sum's data came from attn1.
    ("attn1", "dec1", "cat", (2, 16, 8, 8), (2, 16, 8, 8)),
    ("block0", "dec0", "cat", (2, 8, 16, 16), (2, 8, 16, 16)),
)
PAD_PAIRS: tuple[Pair, ...] = (
    # `cat([x2, x1])`: the skip comes first; the up path was padded (or interpolated) 14 → 15, 30 → 31.
    ("down1.maxpool_conv.1", "up1.conv", "cat", (2, 16, 15, 15), (2, 16, 15, 15)),
    ("inc", "up2.conv", "cat", (2, 8, 31, 31), (2, 8, 31, 31)),
)

CASES = {
    "list_encoder": Case(
        styles.ListUNet,
        _image(2, 3, 16, 16),
        (
            ("encoder.levels.1", "decoder.blocks.0.conv", "cat", (2, 16, 8, 8), (2, 16, 8, 8)),
            ("encoder.levels.0", "decoder.blocks.1.conv", "cat", (2, 8, 16, 16), (2, 8, 16, 16)),
        ),
        (2, 3, 16, 16),
    ),
    "recursive": Case(
        styles.RecursiveUNet,
        _image(2, 3, 32, 32),
        (
            # Each level's x is its parent's LeakyReLU output; the cat feeds the parent's up conv.
            ("skips.model.2.model.1", "skips.model.2.model.3", "cat", (2, 32, 8, 8), (2, 32, 8, 8)),
            ("skips.model.1", "skips.model.3", "cat", (2, 16, 16, 16), (2, 16, 16, 16)),
            ("stem", "head", "cat", (2, 8, 32, 32), (2, 8, 32, 32)),
        ),
        (2, 3, 32, 32),
    ),
    "functional_residual": Case(
        styles.FunctionalResidualUNet, _image_and_time(2, 3, 16, 16), FUNCTIONAL_RESIDUAL_PAIRS, (2, 3, 16, 16)
    ),
    "functional_residual_input_first": Case(
        lambda: styles.FunctionalResidualUNet(residual="input_first"),
        _image_and_time(2, 3, 16, 16),
        FUNCTIONAL_RESIDUAL_PAIRS,
        (2, 3, 16, 16),
    ),
    "shared_concat": Case(
        styles.SharedConcatUNet,
        _image(2, 3, 16, 16),
        (
            ("downs.2", "decs.0", "cat", (2, 32, 4, 4), (2, 32, 4, 4)),
            ("downs.1", "decs.1", "cat", (2, 16, 8, 8), (2, 16, 8, 8)),
            ("downs.0", "decs.2", "cat", (2, 8, 16, 16), (2, 8, 16, 16)),
        ),
        (2, 3, 16, 16),
    ),
    "linknet": Case(
        styles.LinkNet,
        _image(2, 3, 32, 32),
        (
            # torchvision's BasicBlock ends `out += identity; relu(out)` in place: bn2 made the tensor.
            # Each sum is consumed by the next decoder: `decoder3(decoder4(e4) + e3)`.
            ("encoder3.bn2", "decoder3", "add", (2, 32, 4, 4), (2, 32, 4, 4)),
            ("encoder2.bn2", "decoder2", "add", (2, 16, 8, 8), (2, 16, 8, 8)),
            ("encoder1.bn2", "decoder1", "add", (2, 8, 16, 16), (2, 8, 16, 16)),
        ),
        (2, 3, 32, 32),
    ),
    "center_crop": Case(
        styles.ValidUNet,
        _image(2, 3, 60, 60),
        (
            # The skipped shape is the cropped one: enc1 made 24×24, 16×16 joins the up path.
            ("enc1", "dec1", "cat", (2, 16, 16, 16), (2, 16, 16, 16)),
            ("enc0", "dec0", "cat", (2, 8, 24, 24), (2, 8, 24, 24)),
        ),
        (2, 2, 20, 20),
    ),
    "low_attention": Case(
        styles.LowAttentionUNet, _image_and_time(2, 3, 16, 16), _lucidrains_pairs("attn.to_out"), (2, 3, 16, 16)
    ),
    "low_attention_tokens": Case(
        lambda: styles.LowAttentionUNet(attention="tokens"),
        _image_and_time(2, 3, 16, 16),
        _lucidrains_pairs("attn"),
        (2, 3, 16, 16),
    ),
    "pad": Case(styles.PadUNet, _image(2, 3, 31, 31), PAD_PAIRS, (2, 3, 31, 31)),
    "interpolate": Case(lambda: styles.PadUNet(resize="interpolate"), _image(2, 3, 31, 31), PAD_PAIRS, (2, 3, 31, 31)),
}


def _build(case: Case) -> styles.StyleUNet:
    with torch.device("meta"):
        return case.build()


def _traced(name: str) -> tuple[Trace, styles.StyleUNet]:
    case = CASES[name]
    model = _build(case)
    traced = trace(model, *case.inputs())
    return traced, model


def _pair(traced: Trace, skip: SkipPair) -> Pair:
    return (traced.layers[skip.source].name, traced.layers[skip.target].name, skip.op, skip.shape, skip.main_shape)


@pytest.mark.parametrize("name", list(CASES))
def test_skip_pairs_are_the_ones_the_forward_makes(name: str) -> None:
    traced, model = _traced(name)
    assert traced.ok, traced.breaks
    assert traced.outputs == (CASES[name].output,)
    assert [_pair(traced, skip) for skip in traced.skips] == list(CASES[name].pairs)
    assert len(traced.skips) == model.merges.count == len(CASES[name].pairs)


@pytest.mark.parametrize("name", list(CASES))
def test_skips_pop_in_mirror_order(name: str) -> None:
    traced, _ = _traced(name)
    sources = [skip.source for skip in traced.skips]
    targets = [skip.target for skip in traced.skips]
    # Last in, first out: the deepest saved tensor joins first.
    assert sources == sorted(sources, reverse=True)
    assert len(set(sources)) == len(sources)
    assert targets == sorted(targets)
    assert len(set(targets)) == len(targets)


@pytest.mark.parametrize("name", [name for name in CASES if name != "linknet"])
def test_each_concatenation_feeds_its_target_both_inputs(name: str) -> None:
    traced, _ = _traced(name)
    for skip in traced.skips:
        assert skip.op == "cat" and skip.dim == 1
        merged = (skip.main_shape[0], skip.main_shape[1] + skip.shape[1], *skip.main_shape[2:])
        assert traced.layers[skip.target].inputs[0] == merged
        assert skip.shape[2:] == skip.main_shape[2:]
        source = traced.layers[skip.source]
        if name != "center_crop":
            assert skip.shape in source.outputs
        assert source.index < skip.main_source < skip.target


def test_additive_skips_join_after_the_block_at_its_resolution() -> None:
    traced, _ = _traced("linknet")
    for skip in traced.skips:
        assert skip.op == "add" and skip.dim == -1
        target = traced.layers[skip.target]
        assert target.inputs == (skip.main_shape,) == (skip.shape,)
        # The main input is made inside the previous decoder (its last BatchNorm), which returns it.
        main_block = traced.layers[ancestor_at(traced.layers, skip.main_source, 1)]
        assert main_block.name.startswith("decoder") and main_block.index < skip.target
    # A ResBlock's residual add (`out += identity`) is not a skip: only the three decoder joins are.
    assert {traced.layers[skip.target].name for skip in traced.skips} == {"decoder3", "decoder2", "decoder1"}


def test_a_shared_concat_module_gives_each_call_its_own_record_and_target() -> None:
    traced, _ = _traced("shared_concat")
    concat_calls = [layer.index for layer in traced.layers if layer.name == "concat"]
    pool_calls = [layer.index for layer in traced.layers if layer.name == "pool"]
    assert len(concat_calls) == 3 and len(pool_calls) == 3
    inputs = [traced.layers[index].inputs for index in concat_calls]
    assert inputs == [
        ((2, 32, 4, 4), (2, 32, 4, 4)),
        ((2, 16, 8, 8), (2, 16, 8, 8)),
        ((2, 8, 16, 16), (2, 8, 16, 16)),
    ]
    # Each skip joins in its own concat call, and the next call (the level's decoder) is its target.
    assert [skip.target for skip in traced.skips] == [index + 1 for index in concat_calls]


def test_a_skip_saved_after_a_functional_residual_belongs_to_the_attention() -> None:
    traced, _ = _traced("functional_residual")
    attention = next(layer for layer in traced.layers if layer.name == "attn1")
    first = traced.skips[0]
    assert first.source == attention.index
    assert first.shape == attention.outputs[0]
    # Neither the ResBlocks' residual adds nor the timestep's broadcast add are skips.
    assert {skip.op for skip in traced.skips} == {"cat"}


@pytest.mark.parametrize("resize", ["pad", "interpolate"])
def test_odd_sizes_padded_or_interpolated_give_warnings_not_breaks(resize: str) -> None:
    traced, _ = _traced(resize)
    assert traced.ok
    assert not traced.breaks
    floored = [(traced.layers[w.layer].name, w.input_size, w.output_size) for w in traced.warnings]
    assert floored == [
        ("down1.maxpool_conv.0", (31, 31), (15, 15)),
        ("down2.maxpool_conv.0", (15, 15), (7, 7)),
    ]


def test_center_cropped_skips_trace_without_breaks() -> None:
    traced, _ = _traced("center_crop")
    assert traced.ok
    assert not traced.breaks
    enc1 = next(layer for layer in traced.layers if layer.name == "enc1")
    assert enc1.outputs == ((2, 16, 24, 24),)  # cropped to 16×16 before the cat


def test_center_cropped_unet_warns_that_its_output_is_smaller() -> None:
    traced, _ = _traced("center_crop")
    assert traced.outputs == ((2, 2, 20, 20),)
    assert any("60" in w.message and "20" in w.message for w in traced.warnings)


@pytest.mark.parametrize("name", list(CASES))
def test_fixture_output_shapes_match_a_real_forward(name: str) -> None:
    case = CASES[name]
    model = case.build()
    inputs = tuple(torch.zeros(t.shape, dtype=t.dtype) for t in case.inputs())
    with torch.no_grad():
        output = model.eval()(*inputs)
    assert tuple(output.shape) == case.output  # what the meta trace must report
