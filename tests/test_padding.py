"""Pad and crop: `pad_to_valid` pads to the smallest valid extents, `wrap` makes every size run.

Real CPU forwards of small 1-D, 2-D and 3-D UNets at every size in a range.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy
import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.padding import PaddedModel, valid_extents
from shapetrace.records import AxisRule, SizeRule
from tests.fixtures.tiny_unets import HalfOutputUNet, NeverAligned, TinyUNet

SIZES = {1: range(1, 18), 2: range(1, 14), 3: range(1, 10)}


def smallest_accepted(extent: int, accepts: object) -> int:
    """By brute force: the first extent at or above `extent` that the predicate takes."""
    assert callable(accepts)
    return next(e for e in range(extent, extent + 1000) if accepts(e))


@contextmanager
def seen_sizes(model: nn.Module) -> Iterator[list[tuple[int, ...]]]:
    """The spatial size of every input the model's forward receives, while the block runs."""
    seen: list[tuple[int, ...]] = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[2:])))
    try:
        yield seen
    finally:
        handle.remove()


def fails_plain(model: nn.Module, x: torch.Tensor) -> bool:
    try:
        model(x)
    except RuntimeError:
        return True
    return False


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_wrap_makes_every_size_run_and_returns_the_inputs_size(dims: int) -> None:
    torch.manual_seed(0)
    model = TinyUNet(dims).eval()
    wrapped = shapetrace.wrap(model, torch.randn(1, 1, *[8] * dims))
    broke = []
    with torch.no_grad():
        for extent in SIZES[dims]:
            x = torch.randn(2, 1, *[extent] * dims)
            broke.append(fails_plain(model, x))
            with seen_sizes(model) as seen:
                y = wrapped(x)
            assert y.shape == x.shape, extent
            # The model ran once, at the smallest multiple of 4 (its two halvings) at or above the size.
            assert seen == [(smallest_accepted(max(extent, 4), lambda e: e % 4 == 0),) * dims], extent
    assert any(broke) and not all(broke)  # not vacuous: the bare model breaks at some of these sizes


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_wrap_calls_the_model_unchanged_at_a_valid_size(dims: int) -> None:
    torch.manual_seed(0)
    model = TinyUNet(dims).eval()
    wrapped = shapetrace.wrap(model, torch.randn(1, 1, *[5] * dims))  # the example may be any size
    x = torch.randn(2, 1, *[12] * dims)
    received: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda module, args: received.append(args[0]))
    try:
        with torch.no_grad():
            y = wrapped(x)
    finally:
        handle.remove()
    assert received[0] is x
    with torch.no_grad():
        assert torch.equal(y, model(x))


def test_wrap_pads_the_image_only_and_crops_the_centre_of_the_padded_output() -> None:
    torch.manual_seed(0)
    model = TinyUNet(2).eval()
    t = torch.tensor([3, 7])
    wrapped = shapetrace.wrap(model, torch.randn(2, 1, 16, 16), t)
    x = torch.randn(2, 1, 13, 10)  # pads to 16×12: 1 row before and 2 after, 1 column each side
    received: list[tuple[torch.Tensor, ...]] = []
    handle = model.register_forward_pre_hook(lambda module, args: received.append(args))
    try:
        with torch.no_grad():
            y = wrapped(x, t)
            expected = model(torch.nn.functional.pad(x, (1, 1, 1, 2), mode="reflect"), t)[:, :, 1:14, 1:11]
    finally:
        handle.remove()
    assert received[0][1] is t  # the timestep passes unchanged
    assert tuple(received[0][0].shape) == (2, 1, 16, 12)
    assert torch.equal(received[0][0][:, :, 1:14, 1:11], x)  # the input sits in the middle of the padding
    assert torch.equal(y, expected)


def test_wrap_crops_an_output_at_a_scale_of_the_input() -> None:
    model = HalfOutputUNet(2).eval()
    wrapped = shapetrace.wrap(model, torch.randn(1, 1, 8, 8))
    with torch.no_grad():
        for extent in range(3, 14):
            y = wrapped(torch.randn(1, 1, extent, extent))
            assert tuple(y.shape[2:]) == (math.ceil(extent / 2),) * 2, extent


def test_wrap_is_a_module_around_the_model_and_leaves_it_as_found() -> None:
    model = TinyUNet(2)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    wrapped = shapetrace.wrap(model, torch.randn(1, 1, 9, 9))
    assert isinstance(wrapped, PaddedModel) and wrapped.model is model
    assert list(wrapped.state_dict()) == [f"model.{name}" for name in model.state_dict()]
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    # Finding the rule ran a meta copy: the model keeps its weights, its device, and no hooks.
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    wrapped.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    with torch.no_grad():
        assert wrapped(torch.randn(1, 1, 9, 9, dtype=torch.float64)).shape == (1, 1, 9, 9)


def test_wrap_refuses_a_model_that_runs_at_no_size() -> None:
    with pytest.raises(ValueError, match="NeverAligned runs at no size near the example's"):
        shapetrace.wrap(NeverAligned(), torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="no example input has spatial axes"):
        shapetrace.wrap(nn.Linear(4, 4), torch.randn(2, 4))


RULES: list[SizeRule | int] = [
    4,
    8,
    SizeRule((AxisRule(2, 8, (0,), 8),)),
    SizeRule((AxisRule(2, 4, (1, 2), 5),)),  # valid convs: 5, 6, 9, 10, ...
]


@pytest.mark.parametrize("rule", RULES)
def test_pad_to_valid_pads_to_the_smallest_valid_extent(rule: SizeRule | int) -> None:
    def accepts(extent: int) -> bool:
        if isinstance(rule, int):
            return extent % rule == 0
        return rule.accepts((extent,))

    for extent in range(1, 30):
        x = torch.randn(1, 2, extent)
        for mode in ("reflect", "replicate", "constant"):
            padded, crop = shapetrace.pad_to_valid(x, rule, mode)
            assert padded.shape[-1] == smallest_accepted(extent, accepts), (extent, mode)
            assert torch.equal(crop(padded), x), (extent, mode)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_pad_to_valid_with_a_traced_rule_per_axis(dims: int) -> None:
    size = (5, 9, 3)[:dims]
    x = torch.randn(1, 1, *size)
    rule = shapetrace.size_rule(TinyUNet(dims), x)
    assert rule is not None
    padded, crop = shapetrace.pad_to_valid(x, rule)
    assert tuple(padded.shape[2:]) == tuple(smallest_accepted(max(e, 4), lambda e: e % 4 == 0) for e in size)
    assert torch.equal(crop(padded), x)


def test_reflect_pads_further_than_the_extent_by_mirroring_again() -> None:
    for extent in range(2, 7):
        x = torch.arange(float(extent)).view(1, 1, extent)  # padded to 32: up to 15 on each side
        padded, crop = shapetrace.pad_to_valid(x, 32)
        pad = 32 - extent
        # numpy's "reflect" mirrors again where the pad outgrows the array
        assert (
            padded.flatten().tolist() == numpy.pad(x.flatten().numpy(), (pad // 2, pad - pad // 2), "reflect").tolist()
        )
        assert torch.equal(crop(padded), x)
    single, _ = shapetrace.pad_to_valid(torch.full((1, 1, 1, 3), 5.0), 4)  # height 1: replicated
    assert single.shape == (1, 1, 4, 4) and bool((single == 5).all())


def test_constant_pads_with_zeros() -> None:
    padded, _ = shapetrace.pad_to_valid(torch.ones(1, 1, 2, 3), 4, mode="constant")
    assert padded.sum().item() == 6 and padded.shape == (1, 1, 4, 4)


def test_pad_to_valid_says_what_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="the size rule has 1 spatial axes, but the input has 2"):
        shapetrace.pad_to_valid(torch.randn(1, 1, 5, 5), RULES[2])
    with pytest.raises(ValueError, match="mode 'wrap' is not a padding mode"):
        shapetrace.pad_to_valid(torch.randn(1, 1, 5), 4, mode="wrap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"input of shape \[2, 5\] has no spatial axes"):
        shapetrace.pad_to_valid(torch.randn(2, 5), 4)
    with pytest.raises(ValueError, match="multiple 0 is not a valid size multiple"):
        valid_extents((5,), 0)
    _, crop = shapetrace.pad_to_valid(torch.randn(1, 1, 5, 6), 4)
    with pytest.raises(ValueError, match=r"output of spatial size \[8, 4\] is no fixed scale of the padded size"):
        crop(torch.randn(1, 1, 8, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_wrap_and_assert_aligned_on_cuda() -> None:
    from shapetrace.testing import assert_aligned

    model = TinyUNet(2).cuda().eval()
    wrapped = shapetrace.wrap(model, torch.randn(1, 1, 8, 8, device="cuda"))
    with torch.no_grad():
        y = wrapped(torch.randn(2, 1, 13, 10, device="cuda"))
    assert y.shape == (2, 1, 13, 10) and y.device.type == "cuda"
    assert assert_aligned(model, torch.randn(1, 1, 8, 8, device="cuda"), sizes="8:16:4").ok
    assert all(p.device.type == "cuda" for p in model.parameters())


def test_an_empty_spatial_axis_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="empty spatial axis"):
        shapetrace.pad_to_valid(torch.zeros(1, 1, 0, 3), 4)
