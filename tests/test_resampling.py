"""The tracer records each op that changed a spatial size, with its geometry per axis.

Expected geometries are the arguments each small model passes, read off its code; the
output extents are torch's own (a real forward on the CPU), so the records cannot agree
with themselves by accident.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shapetrace.records import Resampling, ResamplingKind, Trace
from shapetrace.tracing.tracer import observe


class _Mixed(nn.Module):
    """One of each: module and functional, pooling, strided conv, transposed conv, interpolation."""

    def __init__(self) -> None:
        super().__init__()
        self.strided = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.keep = nn.Conv2d(2, 2, 3, padding=1)  # changes no size: no record
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.up = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1)
        self.upsample = nn.Upsample(scale_factor=2)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.keep(self.strided(x))
        h = F.avg_pool2d(h, (2, 3), stride=(2, 1))
        h = self.pool(h)
        h = self.upsample(self.up(h))
        h = F.interpolate(h, scale_factor=0.5)
        h = F.interpolate(h, size=(5, 6))
        shuffled: torch.Tensor = self.shuffle(torch.cat([h, h], dim=1))
        return shuffled


def _records(device: str, size: tuple[int, int] = (33, 30)) -> tuple[Trace, torch.Tensor]:
    with torch.device(device):
        model = _Mixed()
    x = torch.zeros(1, 1, *size, device=device)
    return observe(model, (x,)), x


def _geometry(record: Resampling) -> tuple[object, ...]:
    return (record.kind, record.op, record.kernel, record.stride, record.padding, record.dilation, record.ceil_mode)


EXPECTED = [
    (ResamplingKind.CONV, "Conv2d", (3, 3), (2, 2), (1, 1), (1, 1), False),
    (ResamplingKind.POOL, "avg_pool2d", (2, 3), (2, 1), (0, 0), (1, 1), False),
    (ResamplingKind.POOL, "MaxPool2d", (2, 2), (2, 2), (0, 0), (1, 1), True),
    (ResamplingKind.CONV_TRANSPOSE, "ConvTranspose2d", (3, 3), (2, 2), (1, 1), (1, 1), False),
    (ResamplingKind.INTERPOLATE, "Upsample", (), (), (), (), False),
    (ResamplingKind.INTERPOLATE, "interpolate", (), (), (), (), False),
    (ResamplingKind.RESIZE, "interpolate", (), (), (), (), False),
    (ResamplingKind.PIXEL_SHUFFLE, "PixelShuffle", (), (2, 2), (), (), False),
]


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_every_size_change_is_recorded_once_with_its_geometry(device: str) -> None:
    trace, _ = _records(device)
    assert [_geometry(record) for record in trace.resamplings] == EXPECTED
    scales = [record.scale for record in trace.resamplings if record.kind == ResamplingKind.INTERPOLATE]
    assert scales == [((2, 1), (2, 1)), ((1, 2), (1, 2))]
    transpose = trace.resamplings[3]
    assert transpose.output_padding == (0, 0)


def test_recorded_extents_are_torch_s_and_chain_from_one_op_to_the_next() -> None:
    trace, x = _records("cpu")
    sizes = [(record.input_size, record.output_size) for record in trace.resamplings]
    assert sizes[0][0] == tuple(x.shape[2:])
    for (_, made), (received, _) in itertools.pairwise(sizes):
        assert received == made  # each op here feeds the next
    # torch's own numbers: 33 → 17 (stride 2, padding 1); the last op doubles 5×6.
    assert sizes[0][1] == (17, 15)
    assert sizes[-1] == ((5, 6), (10, 12))


def test_a_functional_op_inside_a_resampling_module_is_not_recorded_twice() -> None:
    trace, _ = _records("meta")
    assert sum(record.op == "Upsample" for record in trace.resamplings) == 1
    assert all(record.op != "max_pool2d" for record in trace.resamplings)  # MaxPool2d's own call


def test_positions_order_the_records_as_they_ran() -> None:
    trace, _ = _records("meta")
    positions = [record.position for record in trace.resamplings]
    assert positions == sorted(positions)
    # A module's record names its own call; a function's, the call whose forward called it.
    names = [trace.layers[record.layer].name for record in trace.resamplings]
    assert names == ["strided", "", "pool", "up", "upsample", "", "", "shuffle"]


@pytest.mark.parametrize("dims", [1, 3])
def test_one_and_three_spatial_axes(dims: int) -> None:
    pool = F.max_pool1d if dims == 1 else F.max_pool3d
    conv = nn.Conv1d if dims == 1 else nn.Conv3d

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = conv(1, 1, 3, stride=2, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return pool(self.down(x), 2)

    x = torch.zeros(1, 1, *([9] * dims), device="meta")
    with torch.device("meta"):
        trace = observe(Net(), (x,))
    down, pooled = trace.resamplings
    assert down.input_size == (9,) * dims and down.output_size == (5,) * dims
    assert down.stride == (2,) * dims and down.padding == (1,) * dims
    assert pooled.op == f"max_pool{dims}d" and pooled.output_size == (2,) * dims


def test_records_round_trip_through_json() -> None:
    trace, _ = _records("meta")
    assert Trace.from_json(trace.to_json()).resamplings == trace.resamplings
