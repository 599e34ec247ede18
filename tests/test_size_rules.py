"""Size rules per axis, read from one trace's resampling records and confirmed by a few probes.

Each rule is checked against the model itself: real CPU forwards at every size in a range
run exactly where the rule accepts the size, and every size offered as valid runs.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shapetrace import Trace, run_trace, trace, trace_sizes
from shapetrace.records import AxisRule, SizeRule
from shapetrace.render.table import size_rule_text
from tests.fixtures.planted import PlantedUNet, odd_extent


def _runs(model: nn.Module, *size: int, channels: int = 1) -> bool:
    try:
        with torch.no_grad():
            model(torch.randn(1, channels, *size))
    except RuntimeError:
        return False
    return True


class CeilAddUNet(nn.Module):
    """Stride-2 convolutions with padding 1 (they round up) and an additive skip at half size.

    b = ceil(n/2), c = ceil(b/2); the skip needs 2c == b, so b even: n ≡ 0 or 3 (mod 4).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.final = nn.Upsample(scale_factor=2)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.stem(x)
        h = self.up(self.down(b)) + b
        output: torch.Tensor = self.head(self.final(h))
        return output


class TransposeUNet(nn.Module):
    """Rounding-up downsamplers and ConvTranspose(k=3, s=2, p=1): 2·ceil(n/2) - 1 == n needs n odd.

    Two levels: n odd and ceil(n/2) odd, so n ≡ 1 (mod 4).
    """

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.down1 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1)
        self.up1 = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.enc(x)
        b = self.down1(a)
        h = torch.cat([self.up2(self.down2(b)), b], dim=1)
        output: torch.Tensor = self.head(torch.cat([self.up1(h), a], dim=1))
        return output


class FlatUNet3d(nn.Module):
    """3-D, pooling H and W only: the depth takes any extent, H and W multiples of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv3d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.mid = nn.Conv3d(2, 2, 3, padding=1)
        self.up = nn.ConvTranspose3d(2, 2, (1, 4, 4), stride=(1, 4, 4))
        self.head = nn.Conv3d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        h = self.up(self.mid(F.max_pool3d(self.pool(e), (1, 2, 2))))
        output: torch.Tensor = self.head(torch.cat([h, e], dim=1))
        return output


def _axes(rule: SizeRule | None) -> list[tuple[int, int, tuple[int, ...], int]]:
    assert rule is not None
    return [(axis.axis, axis.modulus, axis.residues, axis.minimum) for axis in rule.axes]


def test_ceil_rounding_with_an_additive_skip_gives_residues_0_and_3_mod_4() -> None:
    model = CeilAddUNet()
    traced = trace(model, torch.randn(1, 1, 30, 30))
    assert not traced.ok
    assert _axes(traced.size_rule) == [(2, 4, (0, 3), 3), (3, 4, (0, 3), 3)]
    rule = traced.size_rule.axes[0]  # type: ignore[union-attr]
    # The rule is exactly the sizes torch runs (below 3 the half-size map is 1×1, and `+` broadcasts it).
    for extent in range(3, 42):
        assert _runs(model, extent, extent) == rule.accepts(extent), extent
    assert traced.size_rule.nearest == ((28, 28), (31, 31))  # type: ignore[union-attr]


def test_a_transposed_conv_model_offers_only_sizes_it_accepts() -> None:
    model = TransposeUNet()
    traced = trace(model, torch.randn(1, 1, 50, 50))
    rule = traced.size_rule
    assert _axes(rule) == [(2, 4, (1,), 1), (3, 4, (1,), 1)]
    assert rule is not None and rule.nearest == ((49, 49), (53, 53))
    for size in rule.nearest:
        assert rule.accepts(size) and _runs(model, *size)
    for extent in range(1, 30):
        assert _runs(model, extent, extent) == rule.axes[0].accepts(extent), extent
    text = " ".join(fix.text for cause in traced.causes for fix in cause.fixes)
    assert "49 or 53" in text and "≡ 1 (mod 4)" in text


def test_each_axis_has_its_own_rule_and_nearest_lists_one_extent_per_axis() -> None:
    model = FlatUNet3d()
    traced = trace(model, torch.randn(1, 1, 5, 14, 16))
    assert _axes(traced.size_rule) == [(2, 1, (0,), 1), (3, 4, (0,), 4), (4, 4, (0,), 4)]
    assert traced.size_rule is not None and traced.size_rule.nearest == ((5, 12, 16), (5, 16, 16))
    for size in traced.size_rule.nearest:
        assert _runs(model, *size)
    data = json.loads(traced.to_json())["size_rule"]
    assert data["nearest"] == [[5, 12, 16], [5, 16, 16]]
    assert data["axes"][0] == {"axis": 2, "modulus": 1, "residues": [0], "minimum": 1}
    assert "D at least 1; H multiples of 4, at least 4; W multiples of 4, at least 4" in size_rule_text(traced)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_rules_in_one_two_and_three_dimensions_offer_sizes_that_run(dims: int) -> None:
    model = PlantedUNet(dims, levels=3, width=2)
    extent = odd_extent(3, 2)  # 20: floored at the last pool
    traced = trace(model, torch.randn(1, 1, *([extent] * dims)))
    assert _axes(traced.size_rule) == [(axis, 8, (0,), 8) for axis in range(2, 2 + dims)]
    assert traced.size_rule is not None and traced.size_rule.nearest == ((16,) * dims, (24,) * dims)
    assert traced.size_rule.exact
    for size in traced.size_rule.nearest:
        assert _runs(model, *size)
    data = json.loads(traced.to_json())["size_rule"]
    assert data["nearest"] == [16, 24]  # one int where every axis agrees


def test_a_clean_model_with_a_warning_says_its_size_is_valid() -> None:
    model = PlantedUNet(2, levels=2, width=2, down="strided conv")
    traced = trace(model, torch.randn(1, 1, 15, 15))  # 15 → 8 → 4 rounds up, then 4 → 8 → 16
    assert not traced.ok  # 16 against 15
    traced = trace(model, torch.randn(1, 1, 16, 16))
    assert traced.ok and traced.warnings == () and traced.size_rule is None
    rounded = trace(PlantedUNet(2, levels=1, width=2, down="strided conv", merge="add"), torch.randn(1, 1, 7, 8))
    text = size_rule_text(rounded)
    assert not text.rstrip().endswith(":") and "nearest valid: ," not in text


class Counting(nn.Module):
    """A UNet whose forward counts its own calls, as a `print` in it would show them."""

    calls = 0

    def __init__(self) -> None:
        super().__init__()
        self.inner = PlantedUNet(2, levels=3, width=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Counting.calls += 1
        output: torch.Tensor = self.inner(x)
        return output


@pytest.mark.parametrize("how", ["trace", "trace_sizes"])
def test_finding_the_rule_runs_the_forward_a_handful_of_times(how: str) -> None:
    Counting.calls = 0
    with torch.device("meta" if how == "trace_sizes" else "cpu"):
        model = Counting()
    if how == "trace":
        traced: Trace = trace(model, torch.randn(1, 1, 20, 20))
    else:
        traced = trace_sizes(model, [(1, 1, 20, 20)])
    assert traced.size_rule is not None and traced.size_rule.exact
    # The trace, at most four probes, and one re-trace for the resize fix: never one per size.
    assert Counting.calls <= 6, Counting.calls


def test_where_the_records_cannot_tell_the_sizes_are_probed_and_say_so() -> None:
    class Cropping(nn.Module):
        """Crops the skip by slicing: no record says by how much."""

        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Conv2d(1, 2, 3, padding=1)
            self.down = nn.MaxPool2d(2)
            self.up = nn.ConvTranspose2d(2, 2, 2, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e = self.enc(x)
            h = self.up(self.down(e))
            return torch.cat([h, e[:, :, : h.shape[2], : h.shape[3]]], dim=1)

    model = Cropping()
    traced = run_trace(model, (torch.randn(1, 1, 11, 11),))  # 11 → 5 → 10: the skip is cropped to 10
    assert traced.ok and traced.warnings
    rule = traced.size_rule
    assert rule is not None and not rule.exact
    assert "probed" in size_rule_text(traced)
    assert rule.axes == tuple(AxisRule(axis, 1, (0,), 2) for axis in (2, 3))
    assert all(_runs(model, *size) for size in rule.nearest)


@pytest.mark.parametrize("down", ["pool", "functional pool", "strided conv"])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_the_rule_read_from_one_trace_is_exactly_where_torch_runs(down: str, levels: int) -> None:
    model = PlantedUNet(1, levels=levels, width=1, down=down)
    traced = trace(model, torch.randn(1, 1, odd_extent(levels, 3)))
    assert traced.size_rule is not None and traced.size_rule.exact
    (rule,) = traced.size_rule.axes
    for extent in range(1, 8 * 2**levels):
        assert _runs(model, extent) == rule.accepts(extent), extent


def test_size_rule_answers_for_a_clean_model_and_a_broken_size_alike() -> None:
    """`shapetrace.size_rule` gives the accepted sizes whatever the traced size, without running the model."""
    import shapetrace
    from shapetrace.models.unet import UNet

    model = UNet(n_channels=8)
    before = [parameter.clone() for parameter in model.parameters()]
    for size in (64, 60):
        rule = shapetrace.size_rule(model, torch.randn(1, 3, size, size), torch.tensor([10]))
        assert rule is not None
        assert [axis.modulus for axis in rule.axes] == [8, 8]
        assert rule.accepts((64, 64)) and not rule.accepts((60, 60)) and rule.accepts((56, 64))
    assert all(torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))
