"""More third-party UNets for bench/third_party.py: segmentation, medical 3-D and audio 1-D.

Each source below imports its package on call and raises ImportError where it is missing, so
`python -m bench.third_party` skips it. Install with `pip install --no-deps <package>` (none
of them may pull another torch): `unet` (fepegar), `dynamic-network-architectures` (nnU-Net),
`pytorch3dunet` (its model module imports `skimage`: `scikit-image` and `lazy_loader`, also
--no-deps), `a-unet` (audio-diffusion-pytorch's UNets; that package itself needs torchaudio),
`demucs` (with `julius`), `cleanunet`, `x-unet` (with `torch-einops-utils`), `easy-unet`. Each comment
says where the library's forward makes its skips; the count is the `expected` of the Case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from bench.third_party import Case

Inputs = Callable[[int], tuple[tuple[Any, ...], dict[str, Any]]]


def _image(channels: int, dims: int, device: str = "meta") -> Inputs:
    return lambda n: ((torch.zeros(1, channels, *[n] * dims, device=device),), {})


def fepegar_cases() -> list[Case]:
    from unet import UNet

    from bench.third_party import Case

    return [
        # Encoder.forward appends each EncodingBlock's pre-pool map (conv2's output: its ReLU);
        # Decoder.forward zips them reversed with the decoding blocks, which crop the skip and
        # cat((skip, upsampled)) before conv1. Valid convolutions: only 44 + 4k run.
        Case(
            "fepegar unet UNet (2-D, valid convolutions)",
            lambda: UNet(in_channels=1, out_classes=2, dimensions=2, num_encoding_blocks=3, out_channels_first_layer=4),
            _image(1, 2),
            44,
            2,
            invalid=46,
        ),
        Case(
            "fepegar unet UNet (3-D, trilinear upsampling)",
            lambda: UNet(
                dimensions=3,
                num_encoding_blocks=3,
                out_channels_first_layer=4,
                padding=1,
                upsampling_type="trilinear",
            ),
            _image(1, 3),
            16,
            2,
            invalid=15,
        ),
    ]


def nnunet_cases() -> list[Case]:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    from bench.third_party import Case

    norm = {
        "norm_op": nn.InstanceNorm2d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
    }
    norm3d = {**norm, "norm_op": nn.InstanceNorm3d}
    return [
        # UNetDecoder.forward: cat((transpconvs[s](x), skips[-(s + 2)])) before stages[s], for
        # every encoder stage but the bottleneck: n_stages - 1 skips.
        Case(
            "nnU-Net PlainConvUNet (2-D)",
            lambda: PlainConvUNet(1, 4, (4, 8, 16, 32), nn.Conv2d, 3, (1, 2, 2, 2), 2, 3, 2, conv_bias=True, **norm),
            _image(1, 2),
            32,
            3,
            invalid=30,
        ),
        Case(
            "nnU-Net ResidualEncoderUNet (2-D, deep supervision)",
            lambda: ResidualEncoderUNet(
                1, 4, (4, 8, 16, 32), nn.Conv2d, 3, (1, 2, 2, 2), (1, 1, 2, 2), 3, 1, deep_supervision=True, **norm
            ),
            _image(1, 2),
            32,
            3,
            invalid=30,
        ),
        Case(
            "nnU-Net PlainConvUNet (3-D, anisotropic strides)",
            lambda: PlainConvUNet(1, 3, (4, 8, 16), nn.Conv3d, 3, (1, (1, 2, 2), 2), 2, 3, 2, **norm3d),
            _image(1, 3),
            16,
            2,
            invalid=14,
        ),
    ]


def pytorch3dunet_cases() -> list[Case]:
    from pytorch3dunet.unet3d.model import ResidualUNet3D, UNet2D, UNet3D

    from bench.third_party import Case

    small = {"f_maps": 4, "num_groups": 2, "num_levels": 3, "dropout_prob": 0.0}
    return [
        # AbstractUNet._forward_logits: every encoder's output but the last is inserted at the
        # front of encoders_features; each Decoder upsamples to the feature's size (so odd sizes
        # run too) and joins cat((features, x)) before its basic_module.
        Case("pytorch-3dunet UNet3D", lambda: UNet3D(1, 2, **small), _image(1, 3), 16, 2, also_valid=15),
        # The same, joined by encoder_features + x (summation joining).
        Case(
            "pytorch-3dunet ResidualUNet3D", lambda: ResidualUNet3D(1, 2, **small), _image(1, 3), 16, 2, also_valid=15
        ),
        Case(
            "pytorch-3dunet UNet2D",
            lambda: UNet2D(1, 2, **{**small, "num_levels": 4}),
            _image(1, 2),
            32,
            3,
            also_valid=30,
        ),
    ]


def a_unet_cases() -> list[Case]:
    from a_unet.apex import ResnetItem, SkipCat, XBlock, XUNet

    from bench.third_party import Case

    def xunet() -> nn.Module:
        blocks = [XBlock(channels=width, factor=2, items=[ResnetItem]) for width in (8, 16, 32)]
        model: nn.Module = XUNet(dim=1, in_channels=2, blocks=blocks, skip_t=SkipCat, resnet_groups=4)
        return model

    # Block.forward: skip = skip_adapter(x) (an Identity: the block's input), then
    # skip(skip, block(x)): MergeCat's closure cats them for its conv. One per block: 3.
    # Traced on the CPU: the size probes and the fixes run on a meta copy, whose closures
    # must call the copy's layers.
    return [Case("a-unet XUNet (1-D audio, closures)", xunet, _image(2, 1, "cpu"), 64, 3, invalid=62, device="cpu")]


def demucs_cases() -> list[Case]:
    from demucs.demucs import Demucs

    from bench.third_party import Case

    # Demucs.forward: saved.append(encode(x)) per encoder layer; decode(x + center_trim(skip))
    # per decoder layer, the first one after the LSTM: one per layer, 3 (with lstm_layers=0,
    # its default here, the first is x + x: no skip). One GLU is shared by every encoder layer
    # (encoder.i.6). The input is padded to a valid length: every length runs.
    return [
        Case(
            "Demucs (1-D audio, LSTM)",
            lambda: Demucs(
                sources=["a", "b"], audio_channels=1, channels=4, depth=3, lstm_layers=2, resample=False, rescale=0
            ),
            _image(1, 1),
            256,
            3,
            also_valid=250,
        )
    ]


def cleanunet_cases() -> list[Case]:
    from cleanunet import CleanUNet

    from bench.third_party import Case

    # CleanUNet.forward: skip_connections from every encoder layer, reversed; x += skip_i
    # before each decoder layer: 3. The first add joins the transformer's output to the
    # deepest encoder layer's output, at the same level: that layer brought the map there.
    return [
        Case(
            "CleanUNet (1-D speech, transformer bottleneck)",
            lambda: CleanUNet(
                channels_H=4,
                max_H=16,
                encoder_n_layers=3,
                tsfm_n_layers=1,
                tsfm_n_head=2,
                tsfm_d_model=8,
                tsfm_d_inner=16,
            ),
            _image(1, 1),
            64,
            3,
            also_valid=63,
        )
    ]


def x_unet_cases() -> list[Case]:
    from x_unet import XUnet

    from bench.third_party import Case

    # XUnet.forward: down_hiddens.append(x) per down stage, cat((x, down_hiddens.pop() * skip_scale))
    # per up stage (2 of the 3 stages: the first stage's map is never popped); the consolidator
    # cats the up path's maps (mid_after, ups.0, ups.1, resized) with x; then cat((x, r)), r the
    # init_conv's output: 2 + 3 + 1 = 6. Images run as 1-frame videos (b c 1 h w).
    def xunet() -> nn.Module:
        model: nn.Module = XUnet(
            dim=8,
            channels=3,
            dim_mults=(1, 2, 4),
            num_blocks_per_stage=(1, 1, 1),
            num_self_attn_per_stage=(0, 0, 1),
            nested_unet_depths=(0, 0, 0),
            attn_heads=2,
            attn_dim_head=8,
        )
        return model

    return [Case("x-unet XUnet (2-D, consolidated up maps)", xunet, _image(3, 2), 32, 6, invalid=30)]


def easy_unet_cases() -> list[Case]:
    from easy_unet import EasyUNet

    from bench.third_party import Case

    # EasyUNet 1.0.2 appends its up stages to down_stages (`self.down_stages.append` in the
    # decoder loop), so up_stages is empty and the forward runs the up stages as down stages:
    # the cat after each up stage never happens. One skip is left, cat((skip0, z)) before
    # final_res_block, and channel breaks (all three verified fixes together make it run).
    # `z = self.mid_attn(z) + z` is a residual: lucidrains' attention with 32-wide heads at a
    # 32×32 level once looked like a map 32 times narrower there.
    return [
        Case(
            "EasyUNet (2-D, its up stages misregistered)",
            lambda: EasyUNet(dim=8, dim_mults=(1, 2, 4), channels=3, out_channels=1),
            _image(3, 2),
            32,
            1,
            aligned=False,
        )
    ]


SOURCES = (
    fepegar_cases,
    nnunet_cases,
    pytorch3dunet_cases,
    a_unet_cases,
    demucs_cases,
    cleanunet_cases,
    x_unet_cases,
    easy_unet_cases,
)
