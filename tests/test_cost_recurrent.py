"""The cost of nn.RNN, nn.GRU and nn.LSTM (shapetrace/tracing/cost/recurrent.py) against torch.

FLOPs equal FlopCounterMode's on meta, where the layers run on ATen's own cells. Saved bytes
equal what saved_tensors_hooks records on a real CPU forward on those cells (oneDNN's LSTM,
the CPU default for float32, keeps a workspace of its own layout instead: the estimate is
ATen's). Each kind is checked batched and batch_first, deep, bidirectional and projected.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from shapetrace import run_trace
from shapetrace.records import CostOptions
from tests.fixtures.cost_oracles import saved_bytes

LAYOUTS = [
    pytest.param({"num_layers": 1}, id="one layer"),
    pytest.param({"num_layers": 2, "batch_first": True}, id="two layers, batch_first"),
    pytest.param({"num_layers": 2, "bidirectional": True}, id="bidirectional"),
    pytest.param({"num_layers": 2, "bidirectional": True, "batch_first": True}, id="bidirectional, batch_first"),
]
KINDS = [nn.RNN, nn.GRU, nn.LSTM]


class _Sequence(nn.Module):
    """A recurrent layer over a feature sequence, as a 1-D UNet's bottleneck runs one."""

    def __init__(self, kind: Callable[..., nn.Module], options: dict[str, Any]) -> None:
        super().__init__()
        self.recurrent = kind(6, 10, **options)
        self.head = nn.Linear(10 * (2 if options.get("bidirectional") else 1), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.recurrent(x)
        result: torch.Tensor = self.head(output)
        return result


@contextlib.contextmanager
def _atens_cells() -> Iterator[None]:
    """oneDNN off, so that the CPU runs ATen's own cells as meta does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the flags' note on TF32 for Intel GPUs
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _model(kind: Callable[..., nn.Module], options: dict[str, Any], device: str) -> nn.Module:
    torch.manual_seed(0)
    with torch.device(device):
        return _Sequence(kind, options).eval()


def _input(options: dict[str, Any], device: str) -> torch.Tensor:
    steps, batch = 7, 3
    shape = (batch, steps, 6) if options.get("batch_first") else (steps, batch, 6)
    return torch.randn(shape) if device == "cpu" else torch.empty(shape, device=device)


@pytest.mark.parametrize("options", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_flops_equal_flop_counter_modes(kind: Callable[..., nn.Module], options: dict[str, Any]) -> None:
    model, x = _model(kind, options, "meta"), _input(options, "meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    cost = run_trace(model, (x,), cost=CostOptions()).cost
    assert cost is not None
    assert cost.flops == counter.get_total_flops() > 0
    assert cost.other_flops > 0  # the gates


@pytest.mark.parametrize("options", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_saved_bytes_equal_what_atens_cells_save(
    kind: Callable[..., nn.Module], options: dict[str, Any]
) -> None:
    model = _model(kind, options, "cpu")
    with _atens_cells():
        expected = saved_bytes(model, (_input(options, "cpu"),))
    cost = run_trace(_model(kind, options, "meta"), (_input(options, "meta"),), cost=CostOptions()).cost
    assert cost is not None
    assert cost.saved_bytes == expected


def test_a_projected_lstm_saves_its_unprojected_states() -> None:
    options = {"num_layers": 2, "bidirectional": True, "batch_first": True, "proj_size": 4}
    model = _model(nn.LSTM, options, "cpu")
    model.head = nn.Linear(8, 3)  # proj_size 4, two directions
    with _atens_cells():
        expected = saved_bytes(model, (_input(options, "cpu"),))
    meta = _model(nn.LSTM, options, "meta")
    meta.head = nn.Linear(8, 3, device="meta")
    cost = run_trace(meta, (_input(options, "meta"),), cost=CostOptions()).cost
    assert cost is not None
    assert cost.saved_bytes == expected


class _Permuted(nn.Module):
    """Demucs's BLSTM: the (B, C, T) map permuted to (T, B, C) for the LSTM, which then flattens
    its rows for the input projection: a view of the map for one sequence, a copy per direction
    for more."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 8, 1)
        self.lstm = nn.LSTM(8, 8, num_layers=2, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.lstm(self.conv(x).permute(2, 0, 1))[0]
        return output


@pytest.mark.parametrize("batch", [1, 3])
def test_a_permuted_sequence_is_kept_as_atens_cells_keep_it(batch: int) -> None:
    torch.manual_seed(0)
    model = _Permuted().eval()
    with _atens_cells():
        expected = saved_bytes(model, (torch.randn(batch, 2, 6),))
    cost = run_trace(model.to("meta"), (torch.empty(batch, 2, 6, device="meta"),), cost=CostOptions()).cost
    assert cost is not None
    assert cost.saved_bytes == expected
