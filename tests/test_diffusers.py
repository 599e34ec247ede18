"""diffusers UNets on the meta device: skips gathered in down blocks, concatenated in up blocks.

diffusers keeps `down_block_res_samples`: conv_in's output, then every down block's
`output_states` (each resnet's or attention's output, and the downsampler's). Each up block
takes the last `layers_per_block + 1` of them and, before each of its resnets, runs
`torch.cat([hidden_states, res_hidden_states_tuple[-1]], dim=1)` (`UpBlock2D`). So the k-th
skip joins the k-th up resnet, the saved tensors are used last in, first out, and the expected
producers can be read off an ordinary forward, which `_oracle` does without shapetrace.
No weights are downloaded: every model is built from a config on meta.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from shapetrace import Trace, trace
from shapetrace.records import Shape

diffusers = pytest.importorskip("diffusers")

_CONCATENATIONS = {torch.cat, torch.concat, torch.concatenate}


def _unet2d() -> nn.Module:
    with torch.device("meta"):
        model: nn.Module = diffusers.UNet2DModel(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        )
    return model


def _unet2d_condition() -> nn.Module:
    with torch.device("meta"):
        model: nn.Module = diffusers.UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            cross_attention_dim=32,
            attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        )
    return model


def _stable_diffusion_15() -> nn.Module:
    """The SD-1.5 UNet's config (the defaults of UNet2DConditionModel are SD-1.x's blocks)."""
    with torch.device("meta"):
        model: nn.Module = diffusers.UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        )
    return model


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="meta")


def _unet2d_inputs() -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    return (_meta(2, 3, 32, 32),), {"timestep": _meta(2, dtype=torch.long)}


def _unet2d_condition_inputs() -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    return (_meta(2, 4, 32, 32),), {"timestep": _meta(2, dtype=torch.long), "encoder_hidden_states": _meta(2, 8, 32)}


def _stable_diffusion_inputs() -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    return (_meta(1, 4, 64, 64),), {"timestep": _meta(1, dtype=torch.long), "encoder_hidden_states": _meta(1, 77, 768)}


# --- an independent oracle: hooks and a function mode of our own, no shapetrace ----------------


@dataclass
class Oracle:
    """What an ordinary forward shows: the saved tensors' producers and the up path's concatenations."""

    sources: list[str] = field(default_factory=list)
    """Innermost module that returned each down_block_res_sample, in the order they are used."""
    targets: list[str] = field(default_factory=list)
    """The module that received each up-path concatenation, in call order."""
    concatenations: int = 0
    """torch.cat calls made while an up block runs."""


class _CountConcatenations(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.up_blocks_running = 0
        self.outputs: list[torch.Tensor] = []

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        output = func(*args, **(kwargs or {}))
        if func in _CONCATENATIONS and self.up_blocks_running:
            self.outputs.append(output)
        return output


def _oracle(model: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor]) -> Oracle:
    names = {id(module): name for name, module in model.named_modules()}
    returned_by: dict[int, str] = {}  # id(tensor) -> the first (innermost) module that returned it
    alive: list[torch.Tensor] = []  # every tensor seen stays alive, so no id is reused
    saved: list[torch.Tensor] = []
    received: dict[int, str] = {}
    counter = _CountConcatenations()
    conv_in = model.get_submodule("conv_in")
    down_blocks = list(model.get_submodule("down_blocks").children())
    up_blocks = list(model.get_submodule("up_blocks").children())

    def after(module: nn.Module, inputs: Any, output: Any) -> None:
        for tensor in _flat(output):
            returned_by.setdefault(id(tensor), names[id(module)])
            alive.append(tensor)
        if module is conv_in:
            saved.append(output)
        elif any(module is block for block in down_blocks):
            saved.extend(output[1])  # (hidden_states, output_states)

    def before(module: nn.Module, inputs: Any) -> None:
        for tensor in _flat(inputs):
            received.setdefault(id(tensor), names[id(module)])
            alive.append(tensor)

    def enter_up(module: nn.Module, inputs: Any) -> None:
        counter.up_blocks_running += 1

    def leave_up(module: nn.Module, inputs: Any, output: Any) -> None:
        counter.up_blocks_running -= 1

    handles = [m.register_forward_hook(after) for m in model.modules()]
    handles += [m.register_forward_pre_hook(before) for m in model.modules()]
    handles += [m.register_forward_pre_hook(enter_up) for m in up_blocks]
    handles += [m.register_forward_hook(leave_up) for m in up_blocks]
    try:
        with torch.no_grad(), counter:
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return Oracle(
        sources=[returned_by[id(tensor)] for tensor in reversed(saved)],
        targets=[received[id(tensor)] for tensor in counter.outputs],
        concatenations=len(counter.outputs),
    )


def _flat(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _flat(item)]
    return []


# --- tests --------------------------------------------------------------------------------------

Pair = tuple[str, str, Shape, Shape]
"""(source name, target name, skipped shape, main-path shape); every diffusers skip is a channel cat."""

UNET2D_PAIRS: list[Pair] = [
    ("down_blocks.1.attentions.0", "up_blocks.0.resnets.0", (2, 64, 16, 16), (2, 64, 16, 16)),
    ("down_blocks.0.downsamplers.0.conv", "up_blocks.0.resnets.1", (2, 32, 16, 16), (2, 64, 16, 16)),
    ("down_blocks.0.resnets.0", "up_blocks.1.resnets.0", (2, 32, 32, 32), (2, 64, 32, 32)),
    ("conv_in", "up_blocks.1.resnets.1", (2, 32, 32, 32), (2, 32, 32, 32)),
]
UNET2D_CONDITION_PAIRS: list[Pair] = [
    ("down_blocks.1.resnets.0", "up_blocks.0.resnets.0", (2, 64, 16, 16), (2, 64, 16, 16)),
    ("down_blocks.0.downsamplers.0.conv", "up_blocks.0.resnets.1", (2, 32, 16, 16), (2, 64, 16, 16)),
    ("down_blocks.0.attentions.0", "up_blocks.1.resnets.0", (2, 32, 32, 32), (2, 64, 32, 32)),
    ("conv_in", "up_blocks.1.resnets.1", (2, 32, 32, 32), (2, 32, 32, 32)),
]


def _pairs(traced: Trace, op: str | None = None) -> list[Pair]:
    return [
        (traced.layers[skip.source].name, traced.layers[skip.target].name, skip.shape, skip.main_shape)
        for skip in traced.skips
        if op is None or skip.op == op
    ]


def _assert_diffusers_skips(traced: Trace, oracle: Oracle, op: str | None) -> None:
    """Each skip: a down-side output of the target's resolution into an up resnet, in mirror order."""
    skips = [skip for skip in traced.skips if op is None or skip.op == op]
    assert len(skips) == oracle.concatenations
    assert [traced.layers[skip.source].name for skip in skips] == oracle.sources
    assert [traced.layers[skip.target].name for skip in skips] == oracle.targets
    sources = [skip.source for skip in skips]
    assert sources == sorted(sources, reverse=True)
    for skip in skips:
        source, target = traced.layers[skip.source], traced.layers[skip.target]
        assert source.name == "conv_in" or source.name.startswith("down_blocks.")
        assert target.name.startswith("up_blocks.") and ".resnets." in target.name
        assert target.name.count(".") == 3  # up_blocks.M.resnets.K, not a leaf inside it
        assert skip.op == "cat" and skip.dim == 1
        assert skip.shape in source.outputs
        assert target.inputs[0] == (skip.main_shape[0], skip.main_shape[1] + skip.shape[1], *skip.shape[2:])


def test_unet2d_output_dataclass_is_recorded() -> None:
    model = _unet2d()
    args, kwargs = _unet2d_inputs()
    traced = trace(model, *args, **kwargs)
    assert traced.ok, traced.breaks
    assert traced.outputs == ((2, 3, 32, 32),)  # UNet2DOutput(sample=...)
    assert traced.layers[0].outputs == ((2, 3, 32, 32),)
    assert traced.inputs == ((2, 3, 32, 32), (2,))


def test_unet2d_pairs_each_down_output_with_its_mirror_up_resnet() -> None:
    model = _unet2d()
    args, kwargs = _unet2d_inputs()
    traced = trace(model, *args, **kwargs)
    assert _pairs(traced) == UNET2D_PAIRS
    _assert_diffusers_skips(traced, _oracle(model, args, kwargs), op=None)


def test_unet2d_condition_output_dataclass_is_recorded() -> None:
    model = _unet2d_condition()
    args, kwargs = _unet2d_condition_inputs()
    traced = trace(model, *args, **kwargs)
    assert traced.ok, traced.breaks
    assert traced.outputs == ((2, 4, 32, 32),)  # UNet2DConditionOutput(sample=...)
    assert traced.inputs == ((2, 4, 32, 32), (2,), (2, 8, 32))


def test_unet2d_condition_concatenations_pair_down_outputs_with_mirror_up_resnets() -> None:
    model = _unet2d_condition()
    args, kwargs = _unet2d_condition_inputs()
    traced = trace(model, *args, **kwargs)
    assert _pairs(traced, op="cat") == UNET2D_CONDITION_PAIRS
    _assert_diffusers_skips(traced, _oracle(model, args, kwargs), op="cat")


def test_unet2d_condition_has_no_skips_but_the_concatenations() -> None:
    model = _unet2d_condition()
    args, kwargs = _unet2d_condition_inputs()
    traced = trace(model, *args, **kwargs)
    assert _pairs(traced) == UNET2D_CONDITION_PAIRS
    _assert_diffusers_skips(traced, _oracle(model, args, kwargs), op=None)


def test_stable_diffusion_15_traces_with_twelve_skips() -> None:
    model = _stable_diffusion_15()
    args, kwargs = _stable_diffusion_inputs()
    traced = trace(model, *args, **kwargs)
    assert traced.ok, traced.breaks
    assert traced.outputs == ((1, 4, 64, 64),)
    oracle = _oracle(model, args, kwargs)
    assert oracle.concatenations == 12  # 4 up blocks × (layers_per_block + 1) resnets
    _assert_diffusers_skips(traced, oracle, op="cat")
    cat_pairs = _pairs(traced, op="cat")
    assert cat_pairs[0] == ("down_blocks.3.resnets.1", "up_blocks.0.resnets.0", (1, 1280, 8, 8), (1, 1280, 8, 8))
    assert cat_pairs[-1] == ("conv_in", "up_blocks.3.resnets.2", (1, 320, 64, 64), (1, 320, 64, 64))


def test_stable_diffusion_15_skip_count_equals_up_path_concatenations() -> None:
    model = _stable_diffusion_15()
    args, kwargs = _stable_diffusion_inputs()
    traced = trace(model, *args, **kwargs)
    assert len(traced.skips) == 12
