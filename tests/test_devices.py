"""A trace on a real device records what the same trace on meta records, by a different route.

On meta every op goes through the function mode, which computes shapes; on a real device
torch's own leaves (Conv2d, GroupNorm, Linear ...) run outside it, their channel counts read
from the module before it runs. These tests hold the two routes to the same records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from shapetrace import Trace, UNet, trace
from shapetrace.tracing.observer import Observer
from tests.conftest import unet_inputs


class _Wide(nn.Module):
    """Every leaf kind whose channels the fast route reads, one of them fed the wrong count."""

    def __init__(self, wrong: str | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.group_norm = nn.GroupNorm(4, 8)
        self.batch_norm = nn.BatchNorm2d(6 if wrong in ("batch_norm", "batch_norm_no_stats") else 8)
        if wrong == "batch_norm_no_stats":  # only its affine weight says 6
            self.batch_norm = nn.BatchNorm2d(6, track_running_stats=False)
        self.up = nn.ConvTranspose2d(5 if wrong == "up" else 8, 8, 2, stride=2)
        self.act = nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.layer_norm = nn.LayerNorm(7 if wrong == "layer_norm" else 8)
        self.head = nn.Linear(9 if wrong == "head" else 8, 4)
        if wrong == "replaced weight":  # in_features still says 8; the weight wants 9
            self.head.weight = nn.Parameter(torch.zeros(4, 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.batch_norm(self.group_norm(self.conv(x))))
        h = self.up(h)
        output: torch.Tensor = self.head(self.layer_norm(self.flatten(self.pool(h))))
        return output


class _Attention(nn.Module):
    """A self-attention block over the pixels, as attention UNets have at low resolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 1)
        self.norm = nn.LayerNorm(32)
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        batch, channels, height, width = h.shape
        tokens = self.norm(h.flatten(2).transpose(1, 2))
        # need_weights=False: the attention returns (output, None)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        output: torch.Tensor = h + attended.transpose(1, 2).reshape(batch, channels, height, width)
        return output


def _attention(device: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    with torch.device(device):
        return _Attention().eval(), (torch.zeros(2, 3, 8, 8),)


def _lazy(device: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Layers whose weights the first call shapes, in a forward pre-hook of their own."""
    torch.manual_seed(0)
    with torch.device(device):
        model = nn.Sequential(nn.LazyConv2d(8, 3, padding=1), nn.LazyBatchNorm2d(), nn.SiLU(), nn.Flatten())
        return nn.Sequential(model, nn.LazyLinear(4)).eval(), (torch.zeros(2, 3, 4, 4),)


def _doubling_pre_hook(device: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A user's pre-hook on a Conv2d concatenates its input with itself: 8 channels into 4."""
    torch.manual_seed(0)
    with torch.device(device):
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 4, 3, padding=1)).eval()
    model[2].register_forward_pre_hook(lambda module, args: (torch.cat([args[0], args[0]], 1),))
    return model, (torch.zeros(2, 3, 8, 8, device=device),)


def _unet(variant: Any, size: int = 16) -> Callable[[str], tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    def build(device: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        torch.manual_seed(0)
        with torch.device(device):
            model = UNet(3, 8, (1, 2, 2), variant=variant).eval()
        x, t = unet_inputs(size, size, 2)
        return model, (torch.zeros(x.shape, device=device), torch.zeros(t.shape, dtype=t.dtype, device=device))

    return build


def _wide(wrong: str | None) -> Callable[[str], tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    def build(device: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        torch.manual_seed(0)
        with torch.device(device):
            return _Wide(wrong).eval(), (torch.zeros(2, 3, 8, 8),)

    return build


CASES = {
    "fixed UNet": _unet("fixed"),
    "as-written UNet (channel breaks)": _unet("as-written"),
    "UNet at an odd size (size breaks)": _unet("fixed", size=18),
    "every leaf kind": _wide(None),
    "self-attention (nn.MultiheadAttention)": _attention,
    "lazy layers": _lazy,
    "a pre-hook that doubles a Conv2d's input (channel break)": _doubling_pre_hook,
    "BatchNorm fed 8 of 6 channels": _wide("batch_norm"),
    "BatchNorm without running statistics fed 8 of 6 channels": _wide("batch_norm_no_stats"),
    "ConvTranspose fed 8 of 5 channels": _wide("up"),
    "LayerNorm fed 8 of 7 features": _wide("layer_norm"),
    "Linear fed 8 of 9 features": _wide("head"),
    "Linear whose weight was replaced, fed 8 of 9": _wide("replaced weight"),
}


def _traced(case: str, device: str) -> Trace:
    model, inputs = CASES[case](device)
    return trace(model, *inputs)


@pytest.mark.parametrize("case", list(CASES))
def test_a_cpu_trace_records_what_a_meta_trace_records(case: str) -> None:
    on_meta, on_cpu = _traced(case, "meta"), _traced(case, "cpu")
    assert on_cpu.device == "cpu"
    assert dataclasses.replace(on_cpu, device="meta") == on_meta
    expected_kind = "channels" if "channel" in case or "fed" in case else "size" if "size" in case else None
    assert [brk.kind for brk in on_cpu.breaks][:1] == ([expected_kind] if expected_kind else [])


def _ops_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = Observer.__torch_function__

    def counting(self: Observer, func: Any, *rest: Any) -> Any:
        seen.append(getattr(func, "__name__", str(func)))
        return original(self, func, *rest)

    monkeypatch.setattr(Observer, "__torch_function__", counting)
    return seen


def test_torch_leaves_run_outside_the_function_mode_on_a_real_device(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _ops_seen(monkeypatch)
    _traced("every leaf kind", "cpu")
    assert not {"conv2d", "group_norm", "batch_norm", "linear", "silu"} & set(seen)
    seen.clear()
    _traced("every leaf kind", "meta")  # on meta the mode computes every op's shape
    assert {"conv2d", "group_norm", "linear"} <= set(seen)


def test_a_leaf_fed_the_wrong_channels_goes_through_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _ops_seen(monkeypatch)
    traced = _traced("Linear fed 8 of 9 features", "cpu")
    assert "linear" in seen  # to be reported, and handed a stand-in
    (brk,) = traced.breaks
    assert traced.layers[brk.layer].name == "head"


class _OwnMode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops += 1
        return func(*args, **(kwargs or {}))


class _EntersAMode(nn.Module):
    """A forward that runs its conv under a function mode of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.mode = _OwnMode()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.mode:
            output: torch.Tensor = self.conv(x)
        return output


def test_a_forward_with_its_own_function_mode_keeps_it() -> None:
    model = _EntersAMode()
    traced = trace(model, torch.zeros(1, 3, 4, 4))
    assert traced.ok and traced.layers[1].outputs == ((1, 4, 4, 4),)
    assert model.mode.ops > 0  # the conv's ops still reached the forward's own mode
    assert torch._C._len_torch_function_stack() == 0


def test_the_caller_s_function_mode_is_on_top_again_after_a_trace() -> None:
    outer = _OwnMode()
    with outer:
        trace(_Wide(None), torch.zeros(2, 3, 8, 8))
        trace(_Wide("head"), torch.zeros(2, 3, 8, 8))
        assert torch._C._len_torch_function_stack() == 1
        assert torch._C._get_function_stack_at(0) is outer
    assert torch._C._len_torch_function_stack() == 0
