"""Pairing on the code patterns real UNets use (issue 13): every skip found, nothing else called one.

Each pattern has a model of its own in tests/fixtures/pairing_patterns.py. Expected pairs are
read off the model's forward: a skip's source is the call whose output was saved (the point
where it left the main path), its target the first call that receives the merged tensor.
Names are canonical: the first path `named_modules()` yields.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shapetrace import Trace, run_trace, trace, trace_sizes
from shapetrace.records import Break, Shape
from tests.fixtures import pairing_patterns as patterns

Pair = tuple[str, str, str]
"""(source name, target name, op); "input" names a model input."""


def _name(traced: Trace, index: int) -> str:
    return "input" if index < 0 else traced.layers[index].name


def _pairs(traced: Trace) -> list[Pair]:
    return sorted((_name(traced, s.source), _name(traced, s.target), str(s.op)) for s in traced.skips)


def _sides(traced: Trace, brk: Break) -> list[tuple[str, str, int]]:
    """(role, producer name, channels) of each side."""
    return sorted((str(side.role), _name(traced, side.producer), side.channels) for side in brk.sides)


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="meta")


def _traced(build: Callable[[], nn.Module], *inputs: torch.Tensor, **keywords: torch.Tensor) -> Trace:
    with torch.device("meta"):
        model = build()
    return trace(model, *inputs, **keywords)


TWO_LEVEL_CATS = [("enc1", "dec1", "cat"), ("stem", "dec0", "cat")]


# --- 1. a merge module that transforms its inputs --------------------------------------------


@pytest.mark.parametrize("merge", list(patterns.MERGE_MODULES))
def test_1_merge_modules_that_transform_their_inputs_keep_the_skips(merge: str) -> None:
    traced = _traced(lambda: patterns.MergeModuleUNet(merge), _meta(2, 3, 16, 16))
    assert traced.ok
    assert _pairs(traced) == sorted(TWO_LEVEL_CATS)


# --- 2. skip blocks whose saved outputs are sums made in the block ----------------------------


def test_2_diffusers_skip_blocks_pair_all_six_concatenations() -> None:
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        model = diffusers.UNet2DModel(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"),
            up_block_types=("SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"),
        )
    traced = trace(model, _meta(2, 3, 32, 32), timestep=_meta(2, dtype=torch.long))
    assert traced.ok
    # A down block's saved sum (skip_conv(skip_sample) + hidden_states) belongs to the block.
    assert _pairs(traced) == sorted(
        [
            ("down_blocks.2.resnets.0", "up_blocks.0.resnets.0", "cat"),
            ("down_blocks.1", "up_blocks.0.resnets.1", "cat"),
            ("down_blocks.1.attentions.0", "up_blocks.1.resnets.0", "cat"),
            ("down_blocks.0", "up_blocks.1.resnets.1", "cat"),
            ("down_blocks.0.resnets.0", "up_blocks.2.resnets.0", "cat"),
            ("conv_in", "up_blocks.2.resnets.1", "cat"),
        ]
    )


# --- 3. residuals around layers that change rank ------------------------------------------------


@pytest.mark.parametrize(("functional", "saved"), [(False, "temporal.unfold"), (True, "temporal")])
def test_3_residuals_around_rank_changing_layers_are_not_skips(functional: bool, saved: str) -> None:
    traced = _traced(lambda: patterns.RankResidualUNet(functional=functional), _meta(4, 3, 16, 16))  # 2 clips of 2
    assert traced.ok
    # `h + temporal(h)` continues the main path: the saved sum's data came from the call that
    # last made it (the unfold module, or temporal itself where its forward unfolds by functions).
    assert _pairs(traced) == sorted([(saved, "dec1", "cat"), ("stem", "dec0", "cat")])


# --- 4. attention-gated skips ----------------------------------------------------------------------


def test_4_gated_skips_come_from_the_down_path() -> None:
    traced = _traced(patterns.GatedUNet, _meta(2, 3, 16, 16))
    assert traced.ok
    assert _pairs(traced) == sorted(TWO_LEVEL_CATS)
    for skip in traced.skips:
        assert _name(traced, skip.main_source).startswith("up")


def test_4_gates_inside_the_up_blocks() -> None:
    traced = _traced(patterns.GatedBlockUNet, _meta(2, 3, 16, 16))
    assert traced.ok
    assert _pairs(traced) == sorted([("enc1", "block1.conv", "cat"), ("stem", "block0.conv", "cat")])


# --- 5. one concatenation holding two skips ------------------------------------------------------


def test_5_every_saved_tensor_in_a_concatenation_is_a_skip() -> None:
    traced = _traced(patterns.TwoSavedPerLevelUNet, _meta(2, 3, 16, 16))
    assert traced.ok
    assert _pairs(traced) == sorted(
        [
            ("block_a.1", "decs.0", "cat"),
            ("block_b.1", "decs.0", "cat"),
            ("block_a.0", "decs.1", "cat"),
            ("block_b.0", "decs.1", "cat"),
        ]
    )


# --- 6. one target rule: the first call that receives the merged tensor ----------------------------


def test_6_additive_skips_target_the_block_that_consumes_the_sum() -> None:
    traced = _traced(patterns.AddUNet, _meta(2, 3, 16, 16))
    assert traced.ok
    assert _pairs(traced) == sorted([("enc1", "dec1", "add"), ("stem", "dec0", "add")])


def test_6_a_broken_additive_skip_goes_to_the_same_block() -> None:
    traced = _traced(patterns.AddUNet, _meta(2, 3, 18, 18))  # 18 → 9 → 5 → 10: 10 vs 9
    first, second = traced.breaks
    assert (first.kind, first.op, _name(traced, first.layer)) == ("size", "add", "dec1")
    assert _sides(traced, first) == [("skip", "enc1", -1), ("up path", "up1", -1)]
    assert (second.kind, _name(traced, second.layer)) == ("size", "dec0")


# --- 7. residuals from another network added into the skips ------------------------------------------

CONTROLNET_CONFIG: dict[str, Any] = {
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "cross_attention_dim": 8,
    "attention_head_dim": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
}
UNET_CATS = [
    ("down_blocks.1.resnets.0", "up_blocks.0.resnets.0", "cat"),
    ("down_blocks.0.downsamplers.0.conv", "up_blocks.0.resnets.1", "cat"),
    ("down_blocks.0.attentions.0", "up_blocks.1.resnets.0", "cat"),
    ("conv_in", "up_blocks.1.resnets.1", "cat"),
]
RESIDUAL_TARGETS = [  # each down residual joins a saved tensor; the mid one joins the mid block's output
    "up_blocks.0.resnets.0",
    "up_blocks.0.resnets.1",
    "up_blocks.1.resnets.0",
    "up_blocks.1.resnets.1",
    "up_blocks.0.resnets.0",
]


def _controlnet_parts(controlnet_widths: tuple[int, ...] = (8, 16)) -> tuple[nn.Module, nn.Module]:
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            **CONTROLNET_CONFIG,
        )
        controlnet = diffusers.ControlNetModel(
            in_channels=4,
            block_out_channels=controlnet_widths,
            conditioning_embedding_out_channels=(4, 4, 4, 4),
            **CONTROLNET_CONFIG,
        )
    return unet, controlnet


class ControlledUNet(nn.Module):
    """A pipeline's two networks in one module: the ControlNet's residuals feed the UNet."""

    def __init__(self, unet: nn.Module, controlnet: nn.Module) -> None:
        super().__init__()
        self.controlnet = controlnet
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, condition: torch.Tensor) -> Any:
        down, mid = self.controlnet(x, t, context, controlnet_cond=condition, return_dict=False)
        return self.unet(x, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)


def _controlnet_inputs() -> tuple[torch.Tensor, ...]:
    return _meta(2, 4, 16, 16), _meta(2, dtype=torch.long), _meta(2, 3, 8), _meta(2, 3, 128, 128)


def test_7_residuals_given_as_inputs_are_skips_from_the_input() -> None:
    unet, _ = _controlnet_parts()
    x, t, context, _ = _controlnet_inputs()
    residuals = tuple(_meta(*shape) for shape in [(2, 8, 16, 16), (2, 8, 16, 16), (2, 8, 8, 8), (2, 16, 8, 8)])
    traced = trace(
        unet, x, t, context, down_block_additional_residuals=residuals, mid_block_additional_residual=_meta(2, 16, 8, 8)
    )
    assert traced.ok
    assert _pairs(traced) == sorted(UNET_CATS + [("input", target, "add") for target in RESIDUAL_TARGETS])


def test_7_residuals_from_a_controlnet_in_the_same_model_are_skips_from_it() -> None:
    traced = trace(ControlledUNet(*_controlnet_parts()), *_controlnet_inputs())
    assert traced.ok
    # The ControlNet scales its residuals in its own forward: it is the call that returned them.
    expected = [(f"unet.{source}", f"unet.{target}", op) for source, target, op in UNET_CATS]
    expected += [("controlnet", f"unet.{target}", "add") for target in RESIDUAL_TARGETS]
    assert _pairs(traced) == sorted(expected)


def test_7_a_controlnet_for_another_base_gives_channel_breaks_at_the_consuming_blocks() -> None:
    traced = trace(ControlledUNet(*_controlnet_parts(controlnet_widths=(16, 32))), *_controlnet_inputs())
    assert sorted(_name(traced, brk.layer) for brk in traced.breaks) == sorted(f"unet.{t}" for t in RESIDUAL_TARGETS)
    for brk in traced.breaks:
        assert (brk.kind, brk.op, brk.dim) == ("channels", "add", 1)
        (main,) = [side for side in brk.sides if side.role == "up path"]
        (skip,) = [side for side in brk.sides if side.role == "skip"]
        assert _name(traced, main.producer).startswith("unet.")
        assert _name(traced, skip.producer) == "controlnet"
        assert skip.channels == 2 * main.channels
        assert brk.expected == (main.channels,)
        assert f"+ joins {main.channels} channels from unet." in brk.message
        assert f"and {skip.channels} from controlnet" in brk.message


# --- 8. encoder branches computed after the bottleneck -----------------------------------------------


def test_8_branches_computed_after_the_transformer_are_skips() -> None:
    traced = _traced(patterns.TinyUNETR, _meta(2, 3, 16, 16))
    assert traced.ok
    assert _pairs(traced) == sorted(
        [
            ("encoder2.conv", "decoder2.conv", "cat"),
            ("encoder1.conv", "decoder1.conv", "cat"),
            ("encoder0", "decoder0.conv", "cat"),
        ]
    )


def test_8_a_size_break_names_the_branch_as_the_skip() -> None:
    traced = _traced(patterns.TinyUNETR, _meta(2, 3, 20, 20))  # 20 → 2×2 tokens → 16 against encoder0's 20
    (brk,) = traced.breaks
    assert (brk.kind, brk.op, _name(traced, brk.layer)) == ("size", "cat", "decoder0.conv")
    assert _sides(traced, brk) == [("skip", "encoder0", -1), ("up path", "decoder0.transp_conv", -1)]


# --- 9. additive skip of a level's own input, merged in a small module --------------------------------


def test_9_nested_levels_merged_in_a_small_module() -> None:
    traced = _traced(patterns.NestedUNet, _meta(2, 3, 16, 16))
    assert traced.ok
    assert _pairs(traced) == sorted([("level.down", "level.up", "add"), ("stem", "head", "add")])


def test_9_at_an_invalid_size_each_side_has_its_own_producer() -> None:
    traced = _traced(patterns.NestedUNet, _meta(2, 3, 18, 18))  # 18 → 9 → 5 → 10: 10 vs 9
    first, second = traced.breaks
    assert (first.kind, first.op, _name(traced, first.leaf)) == ("size", "add", "level.inner.merge")
    assert _name(traced, first.layer) == "level.up"
    assert _sides(traced, first) == [("skip", "level.down", -1), ("up path", "level.inner.up", -1)]
    assert _sides(traced, second) == [("skip", "stem", -1), ("up path", "level.up", -1)]
    # Both producers sit in the block `level`: the message names them in full.
    assert "from level.inner.up" in first.message and "from level.down" in first.message


# --- 10. a module registered under two parents ----------------------------------------------------------


def test_10_names_are_the_first_path_named_modules_yields() -> None:
    with torch.device("meta"):
        model = patterns.SharedNamesUNet()
    traced = trace(model, _meta(2, 3, 16, 16))
    assert traced.ok
    canonical = {id(module): name for name, module in model.named_modules()}
    assert [layer.name for layer in traced.layers] == [
        canonical[id(module)] for module in _called_modules(model, _meta(2, 3, 16, 16))
    ]
    assert not any("decoder.encoder" in layer.name for layer in traced.layers)
    expected = [("encoder.stages.1", "decoder.convs.0", "cat"), ("encoder.stages.0", "blocks.0", "cat")]
    assert _pairs(traced) == sorted(expected)


def _called_modules(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    called: list[nn.Module] = []
    handles = [module.register_forward_pre_hook(lambda m, _: called.append(m)) for module in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return called


# --- 11. channel mismatches inside custom layers -----------------------------------------------------------


def test_11_a_per_channel_scale_that_disagrees_is_a_channel_break_with_both_counts() -> None:
    traced = _traced(lambda: patterns.ScaledDecoderUNet(norm_channels=12), _meta(2, 3, 16, 16))
    (brk,) = traced.breaks
    assert (brk.kind, brk.op, brk.dim, brk.expected) == ("channels", "mul", 1, (12,))
    assert (_name(traced, brk.layer), _name(traced, brk.leaf)) == ("dec1", "dec1.0")
    assert _sides(traced, brk) == [("skip", "enc1", 4), ("up path", "up1", 4)]
    assert "12" in brk.message and "8" in brk.message


def test_11_the_same_layer_at_the_right_width_pairs_as_usual() -> None:
    traced = _traced(patterns.ScaledDecoderUNet, _meta(2, 3, 16, 16))
    assert traced.ok
    assert _pairs(traced) == sorted(TWO_LEVEL_CATS)


# --- 12. size failures away from a merge -----------------------------------------------------------------


SIZE_FAILURES = [
    # (model, size, the layer that fails, the multiple the model needs, the smallest size it takes, nearest valid)
    (patterns.PixelUnshuffleNet, 15, "shuffle", 2, 2, [(14, 14), (16, 16)]),
    (patterns.PoolTooSmallNet, 6, "pools.2", 1, 8, [(8, 8)]),
    (patterns.InstanceNormNet, 4, "norm", 1, 5, [(5, 5)]),
    # The model's own `raise ValueError` is no shape mismatch torch knows: its kind comes from
    # probing (16 and 24 run, 20 does not), never from its message.
    (patterns.DivisibleCheckNet, 20, "", 8, 8, [(16, 16), (24, 24)]),
]


@pytest.mark.parametrize(("build", "size", "layer", "multiple", "minimum", "nearest"), SIZE_FAILURES)
def test_12_size_failures_away_from_a_merge_are_size_breaks_with_a_size_rule(
    build: Callable[[], nn.Module], size: int, layer: str, multiple: int, minimum: int, nearest: list[Shape]
) -> None:
    with torch.device("meta"):
        model = build()
    traced = trace_sizes(model, [(1, 3, size, size)])
    (brk,) = traced.breaks
    assert brk.kind == "size"
    assert _name(traced, brk.leaf) == layer
    assert traced.size_rule is not None
    rules = {(rule.modulus, rule.residues, rule.minimum, rule.maximum) for rule in traced.size_rule.axes}
    assert rules == {(multiple, (0,), minimum, None)}
    assert list(traced.size_rule.nearest) == nearest


@pytest.mark.parametrize(("build", "size", "layer", "multiple", "minimum", "nearest"), SIZE_FAILURES)
def test_12_the_size_hint_is_the_fix_verified_by_a_trace(
    build: Callable[[], nn.Module], size: int, layer: str, multiple: int, minimum: int, nearest: list[Shape]
) -> None:
    with torch.device("meta"):
        model = build()
    traced = trace_sizes(model, [(1, 3, size, size)])
    (cause,) = traced.causes
    assert cause.kind == ("too small" if "too small" in traced.breaks[0].message else "input size")
    fix = cause.fixes[0]
    assert fix.verified
    assert fix.action == tuple(f"size:{height},{width}" for height, width in nearest)
    assert "see the shapes recorded before this layer" not in traced.breaks[0].fix
    assert f"at least {minimum}" in fix.text
    assert (f"multiple of {multiple}" in fix.text) == (multiple > 1)


def test_12_a_fixed_size_parameter_takes_only_the_size_it_was_built_for() -> None:
    with torch.device("meta"):
        model = patterns.PositionalNet()
    traced = trace_sizes(model, [(2, 3, 18, 18)])  # 18 → 9 against the 8×8 map; 15 and 16 give 8
    assert traced.size_rule is not None
    assert {(rule.minimum, rule.maximum) for rule in traced.size_rule.axes} == {(15, 16)}
    assert traced.size_rule.nearest == ((16, 16),)
    assert [traced.size_rule.accepts((size, size)) for size in (14, 15, 16, 17, 32)] == [
        False,
        True,
        True,
        False,
        False,
    ]
    (cause,) = traced.causes
    assert cause.kind == "input size"  # no skip, so no wrong level
    assert cause.fixes[0].verified and cause.fixes[0].action == ("size:16,16",)
    assert "from 15 to 16" in cause.fixes[0].text and "pad" not in cause.fixes[0].text
    assert Trace.from_json(traced.to_json()).size_rule == traced.size_rule  # the largest size is saved too


def test_12_a_fixed_size_parameter_is_a_size_break_with_both_shapes() -> None:
    traced = _traced(patterns.PositionalNet, _meta(2, 3, 18, 18))  # 18 → 9 against the 8×8 map
    (brk,) = traced.breaks
    assert brk.kind == "size"
    assert sorted(side.shape for side in brk.sides) == [(1, 4, 8, 8), (2, 4, 9, 9)]
    assert "stem" in [_name(traced, side.producer) for side in brk.sides]
    assert "9×9" in brk.message and "8×8" in brk.message


# --- 13. wrapped models and patched torch ---------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_13_a_compiled_model_traces_with_its_own_names() -> None:
    with torch.device("meta"):
        model = patterns.MergeModuleUNet("bare")
    compiled = torch.compile(model)
    traced = trace(compiled, _meta(2, 3, 16, 16))  # type: ignore[arg-type]  # an OptimizedModule is an nn.Module
    assert traced.ok
    assert not any("_orig_mod" in layer.name for layer in traced.layers)
    assert traced.layers[0].type == "MergeModuleUNet"
    assert _pairs(traced) == sorted(TWO_LEVEL_CATS)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_13_a_compiled_submodule_keeps_its_name() -> None:
    with torch.device("meta"):
        model = patterns.MergeModuleUNet("bare")
    model.dec1 = torch.compile(model.dec1)  # type: ignore[assignment]
    traced = trace(model, _meta(2, 3, 16, 16))
    assert traced.ok, [brk.message for brk in traced.breaks]
    assert not any("_orig_mod" in layer.name for layer in traced.layers)
    assert [layer.name for layer in traced.layers].count("dec1") == 1
    assert _pairs(traced) == sorted(TWO_LEVEL_CATS)


@pytest.fixture
def wrapped_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """What torchlens does: torch functions replaced by functools.wraps wrappers, after import."""
    for owner, name in [(F, "linear"), (F, "conv2d"), (F, "group_norm"), (torch, "cat"), (torch.Tensor, "__add__")]:
        original = getattr(owner, name)
        monkeypatch.setattr(owner, name, _wrapper(original))


def _wrapper(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.usefixtures("wrapped_torch")
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_13_wrapped_torch_functions_change_nothing(device: str) -> None:
    from shapetrace import UNet

    with torch.device(device):
        model = UNet(3, 8, (1, 2))
    traced = trace(model, torch.zeros(1, 3, 16, 16, device=device), torch.zeros(1, dtype=torch.long, device=device))
    assert traced.ok, [brk.message for brk in traced.breaks]
    assert len(traced.skips) == 4


@pytest.mark.usefixtures("wrapped_torch")
@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: patterns.MergeModuleUNet("scaled"), TWO_LEVEL_CATS),
        (patterns.AddUNet, [("enc1", "dec1", "add"), ("stem", "dec0", "add")]),
    ],
)
def test_13_wrapped_torch_functions_pair_as_unwrapped(build: Callable[[], nn.Module], expected: list[Pair]) -> None:
    traced = _traced(build, _meta(2, 3, 16, 16))
    assert traced.ok, [brk.message for brk in traced.breaks]
    assert _pairs(traced) == sorted(expected)


# --- the sweep's light pass decides as the full trace --------------------------------------------------------


LIGHT_PASS_MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    # name: (model, spatial dims)
    "a residual that widens the channels": (patterns.WideResidual, 2),
    "an additive skip of other channels": (patterns.WideAddedSkip, 2),
    "the same in 1-D": (patterns.WideAddedSkip1d, 1),
    "a per-channel scale of other width": (lambda: patterns.ScaledDecoderUNet(norm_channels=12), 2),
    "a fixed-size positional parameter": (patterns.PositionalNet, 2),
    "a pixel-unshuffle": (patterns.PixelUnshuffleNet, 2),
    "a pool on a map too small": (patterns.PoolTooSmallNet, 2),
    "InstanceNorm on 1×1": (patterns.InstanceNormNet, 2),
    "a scaled additive skip in a small module": (patterns.NestedUNet, 2),
    "an attention-gated skip": (patterns.GatedUNet, 2),
    "additive skips": (patterns.AddUNet, 2),
}


@pytest.mark.parametrize("name", list(LIGHT_PASS_MODELS))
def test_the_light_pass_breaks_where_and_as_the_full_trace_does(name: str) -> None:
    from shapetrace.analysis.placement import block_name
    from shapetrace.tracing.light_sweep import sweep

    build, dims = LIGHT_PASS_MODELS[name]
    with torch.device("meta"):
        model = build()
    sizes = [(size, size) for size in range(3, 20)]
    outcomes = sweep(model, sizes, lambda h, w: ((_meta(1, 3, *(h, w)[:dims]),), {}), workers=1)
    kinds = set()
    for outcome in outcomes:
        traced = run_trace(model, (_meta(1, 3, *outcome.size[:dims]),), verify=False)
        first = traced.breaks[0] if traced.breaks else None
        expected = (None, "") if first is None else (first.kind, block_name(traced, first.layer))
        assert (outcome.kind, outcome.place) == expected, outcome.size
        kinds.add(outcome.kind)
    assert kinds - {None}, "no size broke: the comparison would prove nothing"


def test_the_sweep_calls_the_models_own_size_check_a_size_break_as_a_trace_does() -> None:
    from shapetrace.sweep import sweep_model
    from shapetrace.tracing.inputs import SizedInputs
    from shapetrace.tracing.light_sweep import sweep

    with torch.device("meta"):
        model = patterns.DivisibleCheckNet()
    sizes = [(size, size) for size in range(12, 26)]
    outcomes = sweep(model, sizes, lambda h, w: ((_meta(1, 3, h, w),), {}), workers=1)
    for outcome in outcomes:
        traced = trace_sizes(model, [(1, 3, *outcome.size)])
        expected = (None, "") if traced.ok else (traced.breaks[0].kind, traced.model)
        assert (outcome.kind, outcome.place) == expected, outcome.size
    assert [outcome.size[0] for outcome in outcomes if outcome.kind is None] == [16, 24]
    targeted = sweep_model(model, SizedInputs([((1, 3, 16, 16), torch.float32)]), [(n,) for n, _ in sizes])
    assert [(outcome.kind, outcome.place) for outcome in targeted.outcomes] == [
        (outcome.kind, outcome.place) for outcome in outcomes
    ]


def _same(arguments: tuple[tuple[torch.Tensor, ...], dict[str, Any]], *_size: int) -> Any:
    return arguments


def test_the_light_pass_calls_a_channel_mismatch_at_an_add_a_channel_break() -> None:
    from shapetrace.records import BreakKind
    from shapetrace.tracing.light_sweep import sweep

    kinds = {}
    for name in ("a residual that widens the channels", "an additive skip of other channels", "the same in 1-D"):
        build, dims = LIGHT_PASS_MODELS[name]
        with torch.device("meta"):
            model = build()
        arguments: tuple[tuple[torch.Tensor, ...], dict[str, Any]] = ((_meta(*(1, 3, 16, 16)[: 2 + dims]),), {})
        (outcome,) = sweep(model, [(16, 16)], functools.partial(_same, arguments), workers=1)
        kinds[name] = (outcome.kind, outcome.place)
    assert kinds == {
        "a residual that widens the channels": (BreakKind.CHANNELS, "out"),
        "an additive skip of other channels": (BreakKind.CHANNELS, "out"),
        # In a model of 1-D signals a 3-D tensor is a map (B, C, L): dim 1 counts channels there too.
        "the same in 1-D": (BreakKind.CHANNELS, "out"),
    }


class TokenSum(nn.Module):
    """A 2-D model whose transformer adds positional tokens (B, N, C) of a fixed count to its patches."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 8, 4, stride=4)
        self.position = nn.Parameter(torch.zeros(1, 16, 8))  # 16 tokens: a 16×16 input only
        self.head = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        output: torch.Tensor = self.head(tokens + self.position)
        return output


def test_dim_1_of_tokens_in_a_2d_model_is_no_channel_count() -> None:
    """(B, N, C) tokens whose count differs break on size: 36 tokens against 16 is not '36 channels'."""
    traced = _traced(TokenSum, _meta(1, 3, 24, 24))
    (brk,) = traced.breaks
    assert brk.kind == "size"
    assert "channels" not in brk.message
