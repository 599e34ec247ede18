"""The reference diffusion UNet of the unet-easy tutorial, completed.

The tutorial builds `conv_in`, `downs`, `conv_mid`, `ups` and `conv_out` and leaves the
timestep and the up path "for later". `UNet` finishes it: a sinusoidal timestep embedding
with an MLP feeds every ResBlock, and the up path mirrors the down path so that every up
ResBlock concatenates the down ResBlock output of its own resolution (last in, first out).

`UNet(variant="as-written")` keeps the tutorial's up-path loop exactly as printed. That loop
takes `chs[ch_ind - 1]` (so `chs[-1]` at the first up level) and never updates
`in_channels`, so its blocks expect channel counts the concatenations do not deliver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Variant = Literal["fixed", "as-written"]
VARIANTS: tuple[str, ...] = ("fixed", "as-written")

# The tutorial's constructor line that misaligns the up path; quoted in diagnoses.
AS_WRITTEN_LINE = "out_channels = n_channels * chs[ch_ind - 1]"


def group_count(channels: int) -> int:
    """Groups for GroupNorm: 32 where it divides the channels, else the largest divisor."""
    return math.gcd(32, channels)


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of integer timesteps followed by a two-layer MLP."""

    frequencies: torch.Tensor

    def __init__(self, n_channels: int, time_channels: int) -> None:
        super().__init__()
        half = max(n_channels // 2, 1)
        # Computed in Python: torch.arange on the meta device imports sympy (over a second).
        frequencies = [math.exp(-math.log(10_000.0) * i / max(half - 1, 1)) for i in range(half)]
        self.register_buffer("frequencies", torch.tensor(frequencies), persistent=False)
        self.linear1 = nn.Linear(2 * half, time_channels)
        self.act = nn.SiLU()
        self.linear2 = nn.Linear(time_channels, time_channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.to(self.frequencies.dtype)[:, None] * self.frequencies[None, :]  # (B, half), in the weights' dtype
        embedding = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, 2 * half)
        output: torch.Tensor = self.linear2(self.act(self.linear1(embedding)))  # (B, time_channels)
        return output


class ResBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm and SiLU, the timestep added in between."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_proj = nn.Linear(time_channels, out_channels)
        self.norm2 = nn.GroupNorm(group_count(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.act = nn.SiLU()
        if in_channels != out_channels:
            self.shortcut: nn.Module = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.time_proj(t)[:, :, None, None]  # (B, C, 1, 1) broadcast over H, W
        h = self.conv2(self.act(self.norm2(h)))
        output: torch.Tensor = h + self.shortcut(x)
        return output


class Downsample(nn.Module):
    """A 3×3 convolution, then a 2×2 average pool: halves H and W (flooring odd sizes)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.pool(self.conv(x))
        return output


class Upsample(nn.Module):
    """A 2×2 transposed convolution with stride 2: doubles H and W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.conv(x)
        return output


class UNet(nn.Module):
    """The tutorial's diffusion UNet: predicts the noise in x_t at timestep t.

    Level i of the down path runs two ResBlocks at `n_channels * chs[i - 1]` channels
    (`n_channels` at level 0), then a Downsample to `n_channels * chs[i]` channels, except
    the last level, which keeps its size and uses a 3×3 convolution instead. The up path
    mirrors it, each up ResBlock concatenating one saved down ResBlock output.

    Args:
        img_channels: channels of x and of the predicted noise.
        n_channels: base width. Any value ≥ 1 works: GroupNorm uses gcd(32, channels) groups.
        chs: channel multiplier per level; any non-empty sequence of positive ints.
        variant: "fixed" (aligned) or "as-written" (the tutorial's up-path loop verbatim).

    Inputs: x `[B, img_channels, H, W]` with H and W multiples of `2 ** (len(chs) - 1)`,
    t `[B]` integer timesteps. Returns a tensor shaped like x.
    """

    def __init__(
        self,
        img_channels: int = 3,
        n_channels: int = 64,
        chs: Sequence[int] = (1, 2, 4, 8),
        variant: Variant = "fixed",
    ) -> None:
        super().__init__()
        _check_config(img_channels, n_channels, chs, variant)
        self.img_channels, self.n_channels = img_channels, n_channels
        self.chs, self.variant = tuple(chs), variant
        time_channels = 4 * n_channels
        self.time_embedding = TimestepEmbedding(n_channels, time_channels)
        self.conv_in = nn.Conv2d(img_channels, n_channels, kernel_size=3, padding=1)
        self.downs = nn.ModuleList()
        in_channels = n_channels
        for i in range(len(chs)):
            out_channels = n_channels * chs[i]
            self.downs.append(ResBlock(in_channels, in_channels, time_channels))
            self.downs.append(ResBlock(in_channels, in_channels, time_channels))
            if i < len(chs) - 1:
                self.downs.append(Downsample(in_channels, out_channels))
            else:
                self.downs.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
            in_channels = out_channels
        self.conv_mid = ResBlock(in_channels, in_channels, time_channels)
        build_ups = _ups_as_written if variant == "as-written" else _ups_fixed
        self.ups = build_ups(img_channels, n_channels, tuple(chs), in_channels, time_channels)
        self.conv_out = nn.Conv2d(n_channels, img_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_embedding = self.time_embedding(t)  # (B, 4 * n_channels)
        x = self.conv_in(x)  # (B, n_channels, H, W)
        skips: list[torch.Tensor] = []
        for down in self.downs:
            x = down(x, t_embedding) if not isinstance(down, nn.Conv2d) else down(x)
            if isinstance(down, ResBlock):
                skips.append(x)
        x = self.conv_mid(x, t_embedding)
        for up in self.ups:
            if isinstance(up, ResBlock):
                x = torch.cat((x, skips.pop()), dim=1)  # (B, C + C_skip, H, W)
                x = up(x, t_embedding)
            else:
                x = up(x, t_embedding) if isinstance(up, Upsample) else up(x)
        output: torch.Tensor = self.conv_out(x)
        return output

    def extra_repr(self) -> str:
        return (
            f"img_channels={self.img_channels}, n_channels={self.n_channels}, chs={self.chs}, variant={self.variant!r}"
        )


def _ups_fixed(
    img_channels: int, n_channels: int, chs: tuple[int, ...], in_channels: int, time_channels: int
) -> nn.ModuleList:
    """Mirror of the down path: level i takes skips of `n_channels * chs[i - 1]` channels."""
    ups = nn.ModuleList()
    for i in reversed(range(len(chs))):
        skip_channels = n_channels * chs[i - 1] if i > 0 else n_channels
        ups.append(ResBlock(in_channels + skip_channels, in_channels, time_channels))
        ups.append(ResBlock(in_channels + skip_channels, in_channels, time_channels))
        if i > 0:
            ups.append(Upsample(in_channels, skip_channels))
        else:
            # The down path's last level ends in a 3×3 conv instead of a Downsample; mirror it.
            ups.append(nn.Conv2d(in_channels, skip_channels, kernel_size=3, padding=1))
        in_channels = skip_channels
    return ups


def _ups_as_written(
    img_channels: int, n_channels: int, chs: tuple[int, ...], in_channels: int, time_channels: int
) -> nn.ModuleList:
    """The tutorial's loop, verbatim: `chs[ch_ind - 1]` and `in_channels` never updated."""
    ups = nn.ModuleList()
    for i in reversed(range(len(chs))):
        ch_ind = len(chs) - i - 1
        out_channels = n_channels * chs[ch_ind - 1]
        ups.append(ResBlock(in_channels + out_channels, in_channels, time_channels))
        ups.append(ResBlock(in_channels + out_channels, in_channels, time_channels))
        if i > 0:
            ups.append(Upsample(in_channels, out_channels))
        else:
            ups.append(nn.Conv2d(in_channels, img_channels, kernel_size=3, padding=1))
    return ups


def _check_config(img_channels: int, n_channels: int, chs: Sequence[int], variant: str) -> None:
    if img_channels < 1:
        raise ValueError(f"img_channels must be at least 1: img_channels={img_channels}")
    if n_channels < 1:
        raise ValueError(f"n_channels must be at least 1: n_channels={n_channels}")
    if len(chs) == 0 or any(c < 1 for c in chs):
        raise ValueError(f"chs must be a non-empty sequence of positive ints: chs={tuple(chs)}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}: variant={variant!r}")
