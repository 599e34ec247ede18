"""The tracer's records: shapes (checked against torchinfo and torch), skip pairing, no side effects."""

from __future__ import annotations

import gc

import pytest
import torch
import torchinfo
from torch import nn

from shapetrace import Trace, UNet, trace
from shapetrace.analysis.placement import ancestor_at
from tests.conftest import meta_unet, trace_unet, unet_inputs

CONFIGS = [
    ((1, 2, 4, 8), 64, (224, 224)),
    ((1, 2, 2, 4), 32, (64, 96)),
    ((1,), 32, (16, 16)),
    ((1, 1, 1, 1, 1), 64, (32, 48)),
    ((1, 2, 4, 8), 32, (40, 24)),
]


def _block(trace: Trace, index: int) -> str:
    return trace.layers[ancestor_at(trace.layers, index, 1)].name


@pytest.mark.parametrize(("chs", "n_channels", "size"), CONFIGS)
def test_shapes_match_torchinfo(chs: tuple[int, ...], n_channels: int, size: tuple[int, int]) -> None:
    model = meta_unet(chs, n_channels)
    x, t = unet_inputs(*size)
    summary = torchinfo.summary(model, input_data=[x, t], device="meta", depth=20, verbose=0)
    # Every executed leaf module, in call order, with its input and output shape.
    expected = [
        (info.class_name, tuple(info.input_size), tuple(info.output_size))
        for info in summary.summary_list
        if info.executed and info.is_leaf_layer
    ]
    traced = trace(model, x, t)
    parents = {layer.parent for layer in traced.layers}
    got = [(layer.type, layer.inputs[0], layer.outputs[0]) for layer in traced.layers if layer.index not in parents]
    assert got == expected
    assert traced.total_params == summary.total_params


@pytest.mark.parametrize(("chs", "n_channels", "size"), CONFIGS)
def test_every_up_resblock_takes_one_skip_from_its_mirror(
    chs: tuple[int, ...], n_channels: int, size: tuple[int, int]
) -> None:
    traced = trace_unet(size, chs, n_channels)
    down_blocks = [layer for layer in traced.layers if layer.depth == 1 and layer.type == "ResBlock"]
    down_blocks = [layer for layer in down_blocks if layer.name.startswith("downs.")]
    up_blocks = [layer for layer in traced.layers if layer.depth == 1 and layer.name.startswith("ups.")]
    up_resblocks = [layer for layer in up_blocks if layer.type == "ResBlock"]
    assert traced.ok
    assert len(traced.skips) == len(up_resblocks) == len(down_blocks)
    assert [_block(traced, skip.target) for skip in traced.skips] == [layer.name for layer in up_resblocks]
    # Last in, first out: the first up block takes the last down block's output.
    assert [_block(traced, skip.source) for skip in traced.skips] == [layer.name for layer in reversed(down_blocks)]
    for skip in traced.skips:
        source = traced.layers[ancestor_at(traced.layers, skip.source, 1)]
        target = traced.layers[skip.target]
        assert skip.shape == source.outputs[0]
        assert skip.op == "cat" and skip.dim == 1
        assert target.inputs[0][1] == skip.shape[1] + skip.main_shape[1]
        assert target.inputs[0][2:] == skip.shape[2:]


def test_last_output_equals_a_real_forward() -> None:
    model = UNet(3, 8, (1, 2))
    x, t = torch.randn(1, 3, 16, 20), torch.tensor([7])
    with torch.no_grad():
        expected = model(x, t).shape
    traced = trace(model, x, t)
    assert traced.outputs == (tuple(expected),)
    assert traced.layers[-1].outputs == (tuple(expected),)
    assert traced.device == "cpu"


def test_records_every_tensor_argument_and_parameters() -> None:
    traced = trace_unet(64, (1, 2))
    root = traced.layers[0]
    assert root.inputs == ((2, 3, 64, 64), (2,))
    resblock = next(layer for layer in traced.layers if layer.name == "downs.0")
    assert resblock.inputs == ((2, 64, 64, 64), (2, 256))  # x and the timestep embedding
    assert resblock.parent == 0 and resblock.depth == 1
    conv1 = next(layer for layer in traced.layers if layer.name == "downs.0.conv1")
    assert conv1.parent == resblock.index and conv1.depth == 2
    assert conv1.params == 64 * 64 * 9 + 64


class _SharedBlock(nn.Module):
    """One conv called at two places, an Identity pass-through, and a tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.identity = nn.Identity()
        self.pool = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv(x)
        skip = self.identity(skip)  # must not become the skip's producer
        h = self.up(self.conv(self.pool(skip)))
        return self.out(torch.cat([h, skip], dim=1)), h


def test_shared_module_calls_get_their_own_records_and_identity_keeps_the_producer() -> None:
    traced = trace(_SharedBlock(), torch.empty(1, 4, 8, 8, device="meta"))
    conv_calls = [layer for layer in traced.layers if layer.name == "conv"]
    assert [layer.inputs[0] for layer in conv_calls] == [(1, 4, 8, 8), (1, 4, 4, 4)]
    assert len({layer.index for layer in conv_calls}) == 2
    (skip,) = traced.skips
    assert traced.layers[skip.source].name == "conv"
    assert skip.source == conv_calls[0].index
    assert traced.layers[skip.target].name == "out"
    assert traced.outputs == ((1, 4, 8, 8), (1, 4, 8, 8))


def _hook_counts(model: nn.Module) -> list[int]:
    return [
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._forward_hooks_with_kwargs) for m in model.modules()
    ]


def _global_hooks() -> int:
    from torch.nn.modules import module as module_module

    return len(module_module._global_forward_hooks) + len(module_module._global_forward_pre_hooks)


class _Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        raise ValueError("the forward gave up")


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("model_factory", [lambda: UNet(3, 8, (1, 2)), _Raises])
def test_leaves_no_trace_in_the_model(model_factory: type[nn.Module], train: bool, device: str) -> None:
    model = model_factory()
    model.train(train)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    hooks_before = _hook_counts(model)
    grad_enabled = torch.is_grad_enabled()
    x = torch.randn(1, 3, 8, 8, device=device)
    args = (x, torch.tensor([3], device=device)) if isinstance(model, UNet) else (x,)
    trace(model, *args)
    assert _hook_counts(model) == hooks_before
    assert _global_hooks() == 0
    assert torch._C._is_torch_function_mode_enabled() is False
    assert all(module.training is train for module in model.modules())
    assert torch.is_grad_enabled() is grad_enabled
    assert gc.isenabled()  # paused during a meta trace only
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


class _SeesTheCollector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.collecting: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.collecting.append(gc.isenabled())
        return x + 1


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_pauses_for_a_meta_trace_and_is_left_as_found(enabled: bool) -> None:
    model = _SeesTheCollector()
    (gc.enable if enabled else gc.disable)()
    try:
        trace(model, torch.empty(1, 3, 4, 4, device="meta"))
        trace(model, torch.zeros(1, 3, 4, 4))
        after = gc.isenabled()
    finally:
        gc.enable()
    assert model.collecting == [False, enabled]  # meta: paused; a real forward keeps it
    assert after is enabled


def test_a_raising_forward_becomes_a_break_at_the_innermost_call() -> None:
    traced = trace(_Raises(), torch.empty(1, 3, 8, 8, device="meta"))
    assert not traced.ok
    (brk,) = traced.breaks
    assert brk.kind == "error"
    assert "the forward gave up" in brk.message
    assert traced.layers[brk.leaf].name == ""


def test_json_round_trip_is_lossless() -> None:
    for traced in (trace_unet(64, (1, 2)), trace_unet(66, (1, 2, 4)), trace_unet(32, (1, 2), variant="as-written")):
        text = traced.to_json()
        assert Trace.from_json(text) == traced
        assert Trace.from_json(text).to_json() == text


def test_a_lazy_layer_that_never_ran_counts_no_parameters() -> None:
    model = nn.Sequential(_Raises(), nn.LazyLinear(4))
    traced = trace(model, torch.zeros(1, 3, 8, 8))
    (brk,) = traced.breaks
    assert brk.kind == "error" and "the forward gave up" in brk.message
    assert traced.total_params == 3 * 3 + 3  # the conv's; the lazy layer's weights have no shape yet
