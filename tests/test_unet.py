"""The reference UNet: the tutorial's shapes, the timestep really used, the as-written variant."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shapetrace import UNet
from shapetrace.models.unet import AS_WRITTEN_LINE, Downsample, ResBlock


def test_the_tutorials_own_test_returns_the_input_shape() -> None:
    with torch.device("meta"):
        model = UNet()
        x = torch.randn(2, 3, 224, 224)
        t = torch.randint(0, 100, (2,))
        with torch.no_grad():
            assert model(x, t).shape == (2, 3, 224, 224)


def test_down_path_channels_and_sizes_follow_the_tutorial() -> None:
    with torch.device("meta"):
        model = UNet()
    channels = [model.conv_in.out_channels]
    for block in model.downs:
        if isinstance(block, Downsample):
            channels.append(block.conv.out_channels)
        elif isinstance(block, nn.Conv2d):
            channels.append(block.out_channels)
    assert channels == [64, 64, 128, 256, 512]


@pytest.mark.parametrize(
    ("chs", "n_channels", "size"), [((1,), 1, (5, 7)), ((1, 2, 2, 4), 3, (24, 40)), ((2, 2, 2), 32, (8, 12))]
)
def test_any_config_returns_the_input_shape_on_cpu(
    chs: tuple[int, ...], n_channels: int, size: tuple[int, int]
) -> None:
    model = UNet(img_channels=2, n_channels=n_channels, chs=chs).eval()
    x = torch.randn(1, 2, *size)
    with torch.no_grad():
        assert model(x, torch.tensor([10])).shape == x.shape


def test_changing_t_changes_the_output() -> None:
    torch.manual_seed(0)
    model = UNet(n_channels=8, chs=(1, 2)).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        early, late = model(x, torch.tensor([1])), model(x, torch.tensor([900]))
    assert not torch.allclose(early, late)


def test_the_as_written_variant_misaligns_its_first_up_block() -> None:
    with torch.device("meta"):
        model = UNet(variant="as-written")
    # The tutorial's loop takes chs[-1] at the first up level: 512 + 512 input channels.
    first_up = model.ups[0]
    assert isinstance(first_up, ResBlock)
    assert first_up.conv1.in_channels == 1024
    assert "chs[ch_ind - 1]" in AS_WRITTEN_LINE
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"channels|Expected"):
        UNet(n_channels=8, chs=(1, 2), variant="as-written")(torch.randn(1, 3, 8, 8), torch.tensor([1]))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_channels": 0}, "n_channels must be at least 1: n_channels=0"),
        ({"chs": ()}, r"chs must be a non-empty sequence of positive ints: chs=\(\)"),
        ({"chs": (1, 0)}, r"chs=\(1, 0\)"),
        ({"img_channels": 0}, "img_channels must be at least 1"),
        ({"variant": "nope"}, "variant must be one of"),
    ],
)
def test_bad_configs_say_what_was_expected(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UNet(**arguments)  # type: ignore[arg-type]
