"""Pairing on real third-party UNets: skips found against the skips each model's forward makes.

    python -m bench.third_party            every model whose package is installed
    python -m bench.third_party monai      only models whose name contains "monai"

(from the repository root: `-m` traces with this checkout's shapetrace, not an installed one.)

Optional, not part of the test suite, and not a dependency of shapetrace: it uses diffusers,
MONAI and the packages bench/third_party_more.py names, where they are installed (MONAI
without its dependencies: `pip install --no-deps monai einops`; it must not pull another
torch). Models are built small, on the meta device where their constructor allows it
(SwinUNETR calls .item() while building, the video UNet of Stable Video Diffusion builds a CPU
tensor in its forward: those are built and traced on the CPU). Each line says how many skips
were found against how many the forward makes (counted by reading it: the comment by each
model says where they are), then the pairs and any break; a second trace at a size the model
cannot take shows the breaks it reports.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shapetrace import Trace, trace


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int], tuple[tuple[Any, ...], dict[str, Any]]]
    """The forward's (args, kwargs) at a spatial size."""
    size: int
    expected: int
    """Skips the forward makes."""
    invalid: int | None = None
    """A size the model cannot take, traced to show its breaks."""
    also_valid: int | None = None
    """An odd size the model takes too: diffusers' conditional UNets and pytorch-3dunet hand the
    skip's size to their upsamplers, Demucs and CleanUNet pad the input to a length they take
    and crop back, so no size breaks them."""
    device: str = "meta"
    aligned: bool = True
    """Whether the trace at `size` has no break."""
    notes: list[str] = field(default_factory=list)


def _empty(device: str) -> Callable[..., torch.Tensor]:
    def make(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.zeros(*shape, dtype=dtype, device=device)

    return make


META = _empty("meta")
CPU = _empty("cpu")


def monai_cases() -> list[Case]:
    from monai.networks import nets

    volume: Callable[[int], tuple[tuple[Any, ...], dict[str, Any]]] = lambda n: ((META(1, 1, n, n, n),), {})  # noqa: E731
    return [
        # UpCat: cat(upsampled, encoder feature) at each of 4 levels.
        Case(
            "monai BasicUNet (3-D)",
            lambda: nets.BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 16, 32, 4)),
            volume,
            32,
            4,
            invalid=30,
        ),
        # SkipConnection: cat(x, submodule(x)) at each of 3 levels, nested.
        Case(
            "monai UNet (3-D, nested SkipConnection)",
            lambda: nets.UNet(3, 1, 2, channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=1),
            volume,
            32,
            3,
            invalid=30,
        ),
        # ViT hidden states 3, 6, 9 turned into skips by encoder branches run after the ViT, plus encoder1(x).
        Case(
            "monai UNETR (3-D, branches after the transformer)",
            lambda: nets.UNETR(1, 2, img_size=(32, 32, 32), feature_size=4, hidden_size=48, mlp_dim=96, num_heads=4),
            volume,
            32,
            4,
            invalid=48,
        ),
        # encoder1(x), encoder2..4(hidden 0..2), hidden 3 directly, joined by decoders 5..1.
        Case(
            "monai SwinUNETR (3-D, windows)",
            lambda: nets.SwinUNETR(
                in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1), num_heads=(1,) * 4
            ),
            volume,
            64,
            5,
            invalid=32,
            notes=["built on cpu (its constructor calls .item()), then moved to meta"],
        ),
        # AttentionLayer: merge(cat(attention(g=up, x=skip), up)) at each of 3 levels.
        Case(
            "monai AttentionUnet (3-D, attention gates)",
            lambda: nets.AttentionUnet(3, 1, 2, channels=(4, 8, 16, 32), strides=(2, 2, 2)),
            volume,
            32,
            3,
            invalid=30,
        ),
    ]


def diffusers_cases() -> list[Case]:
    import diffusers

    timestep = {"dtype": torch.long}
    return [
        # Dance Diffusion's layout: one cat per up block.
        Case(
            "diffusers UNet1DModel (1-D audio)",
            lambda: diffusers.UNet1DModel(
                sample_size=256,
                in_channels=2,
                out_channels=2,
                extra_in_channels=64,
                block_out_channels=(32, 32, 64),
                use_timestep_embedding=False,
                flip_sin_to_cos=True,
                time_embedding_type="fourier",
                down_block_types=("DownBlock1DNoSkip", "DownBlock1D", "AttnDownBlock1D"),
                up_block_types=("AttnUpBlock1D", "UpBlock1D", "UpBlock1DNoSkip"),
                mid_block_type="UNetMidBlock1D",
                act_fn=None,
                out_block_type=None,
            ),
            lambda n: ((META(1, 2, n),), {"timestep": META(1)}),
            256,
            3,
            invalid=250,
        ),
        # One cat per up resnet: (layers_per_block + 1) per up block.
        Case(
            "diffusers UNet2DModel (skip blocks)",
            lambda: diffusers.UNet2DModel(
                sample_size=32,
                block_out_channels=(32, 64, 64),
                layers_per_block=1,
                norm_num_groups=8,
                down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"),
                up_block_types=("SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"),
            ),
            lambda n: ((META(2, 3, n, n),), {"timestep": META(2, **timestep)}),
            32,
            6,
            invalid=30,
        ),
        Case(
            "diffusers UNet3DConditionModel (video)",
            lambda: diffusers.UNet3DConditionModel(
                sample_size=16,
                block_out_channels=(32, 64),
                layers_per_block=1,
                norm_num_groups=8,
                cross_attention_dim=16,
                attention_head_dim=8,
                down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            ),
            lambda n: ((META(1, 4, 3, n, n), META(1, **timestep), META(1, 5, 16)), {}),
            16,
            4,
            also_valid=17,
        ),
        Case(
            "diffusers UNetSpatioTemporalConditionModel (video)",
            _spatio_temporal,
            lambda n: ((CPU(1, 3, 8, n, n), CPU(1), CPU(1, 1, 16)), {"added_time_ids": CPU(1, 3)}),
            16,
            4,
            also_valid=17,
            device="cpu",
            notes=["traced on cpu: its AlphaBlender makes a cpu tensor in the forward"],
        ),
        # 4 cats in the UNet, and 5 ControlNet residuals (4 down, 1 mid) added into its skips.
        Case(
            "diffusers ControlNetModel + UNet2DConditionModel",
            lambda: _controlled_unet((8, 16)),
            _controlnet_inputs,
            16,
            9,
            notes=["a ControlNet built for another base (widths 16, 32) below"],
        ),
        Case(
            "diffusers ControlNetModel for another base + UNet2DConditionModel",
            lambda: _controlled_unet((16, 32)),
            _controlnet_inputs,
            16,
            9,
            aligned=False,
        ),
    ]


def _spatio_temporal() -> nn.Module:
    import diffusers

    model: nn.Module = diffusers.UNetSpatioTemporalConditionModel(
        sample_size=16,
        in_channels=8,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=16,
        num_attention_heads=(2, 4),
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    )
    return model


class ControlledUNet(nn.Module):
    """A pipeline's two networks in one module: the ControlNet's residuals feed the UNet."""

    def __init__(self, unet: nn.Module, controlnet: nn.Module) -> None:
        super().__init__()
        self.controlnet = controlnet
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, condition: torch.Tensor) -> Any:
        down, mid = self.controlnet(x, t, context, controlnet_cond=condition, return_dict=False)
        return self.unet(x, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)


def _controlled_unet(controlnet_widths: tuple[int, int]) -> nn.Module:
    import diffusers

    shared: dict[str, Any] = {
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "cross_attention_dim": 8,
        "attention_head_dim": 4,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    }
    unet = diffusers.UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        **shared,
    )
    controlnet = diffusers.ControlNetModel(
        in_channels=4,
        block_out_channels=controlnet_widths,
        conditioning_embedding_out_channels=(4, 4, 4, 4),
        **shared,
    )
    return ControlledUNet(unet, controlnet)


def _controlnet_inputs(n: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (META(2, 4, n, n), META(2, dtype=torch.long), META(2, 3, 8), META(2, 3, 8 * n, 8 * n)), {}


def _name(traced: Trace, index: int) -> str:
    return "input" if index < 0 else traced.layers[index].name or traced.model


def _build(case: Case) -> nn.Module:
    if case.device == "cpu" or "SwinUNETR" in case.name:
        model = case.build()
        return model if case.device == "cpu" else model.to("meta")
    with torch.device("meta"):
        return case.build()


def run(case: Case) -> bool:
    model = _build(case)
    args, kwargs = case.inputs(case.size)
    started = time.perf_counter()
    traced = trace(model, *args, **kwargs)
    seconds = time.perf_counter() - started
    verdict = "ok" if len(traced.skips) == case.expected and traced.ok == case.aligned else "CHECK"
    print(
        f"\n{case.name} at {case.size}: {len(traced.skips)} skips found, {case.expected} expected, "
        f"{len(traced.breaks)} breaks, traced in {seconds:.2f} s [{verdict}]"
    )
    for note in case.notes:
        print(f"  ({note})")
    for skip in traced.skips:
        print(f"  {skip.op:4} {_name(traced, skip.source)} → {_name(traced, skip.target)}  {list(skip.shape)}")
    for brk in traced.breaks:
        print(f"  break ({brk.kind}): {brk.message}")
    if case.invalid is not None:
        args, kwargs = case.inputs(case.invalid)
        broken = trace(model, *args, **kwargs)
        refused = "ok" if broken.breaks else "CHECK: a size it cannot take traced clean"
        print(f"  at {case.invalid}: {len(broken.breaks)} breaks [{refused}]")
        for brk in broken.breaks[:3]:
            print(f"    {brk.kind}: {brk.message}")
        verdict = verdict if broken.breaks else "CHECK"
    if case.also_valid is not None:
        args, kwargs = case.inputs(case.also_valid)
        odd = trace(model, *args, **kwargs)
        taken = "ok" if odd.ok and len(odd.skips) == case.expected else "CHECK"
        print(f"  at {case.also_valid}: {len(odd.skips)} skips, {len(odd.breaks)} breaks (no size breaks it) [{taken}]")
        verdict = verdict if taken == "ok" else "CHECK"
    return verdict == "ok"


def installed_cases(selection: str = "") -> list[Case]:
    """The cases of every package installed here whose name contains `selection`; the others are named as skipped."""
    from bench.third_party_more import SOURCES

    cases: list[Case] = []
    for source in (monai_cases, diffusers_cases, *SOURCES):
        try:
            cases += source()
        except ImportError as error:
            print(f"skipped {source.__name__}: {error}")
    return [case for case in cases if selection.lower() in case.name.lower()]


def main(selection: str = "") -> int:
    warnings.simplefilter("ignore")  # deprecation notices of the third-party packages
    results = [run(case) for case in installed_cases(selection)]
    print(f"\n{sum(results)} of {len(results)} models paired as expected")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
