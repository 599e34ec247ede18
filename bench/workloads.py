"""The models, inputs and peer calls the benchmarks time, shared by in-process runs and child processes."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from shapetrace.records import Trace

PEER_DEPTH = 16
"""Display depth for torchinfo and torchview: deeper than the reference UNet (and SD's UNet), so every call shows."""
TORCHLENS_SIZE, TORCHLENS_BATCH = 32, 1
"""torchlens refuses meta tensors, so it runs a real forward on cpu: its best mode is the smallest input."""
Inputs = tuple[torch.Tensor, ...]


def load_unet_class() -> type[nn.Module]:
    """shapetrace/unet.py loaded on its own: a peer's process should not pay for importing shapetrace."""
    package = importlib.util.find_spec("shapetrace")
    if package is None or package.origin is None:
        raise ImportError("shapetrace is not installed")
    spec = importlib.util.spec_from_file_location("reference_unet", Path(package.origin).parent / "unet.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {package.origin}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.UNet  # type: ignore[no-any-return]


def reference_model(
    unet_class: type[nn.Module], device: str, n_channels: int = 64, chs: tuple[int, ...] = (1, 2, 4, 8)
) -> nn.Module:
    torch.manual_seed(0)
    with torch.device(device):
        return unet_class(img_channels=3, n_channels=n_channels, chs=chs).eval()


def reference_inputs(size: int, batch: int, device: str) -> Inputs:
    """x (B, 3, size, size) and integer timesteps t (B,); meta tensors carry no data at all."""
    if device == "meta":
        x = torch.empty(batch, 3, size, size, device="meta")
        return x, torch.zeros(batch, dtype=torch.long, device="meta")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=generator)
    return x.to(device), torch.randint(0, 1000, (batch,), generator=generator).to(device)


def plain_forward(model: nn.Module, inputs: Inputs) -> Callable[[], object]:
    def forward() -> object:
        with torch.no_grad():
            return model(*inputs)

    return forward


def shapetrace_call(model: nn.Module, inputs: Inputs, keywords: dict[str, Any] | None = None) -> Callable[[], Trace]:
    import shapetrace

    return lambda: shapetrace.trace(model, *inputs, **(keywords or {}))


def torchinfo_call(model: nn.Module, inputs: Inputs) -> Callable[[], object]:
    import torchinfo

    # verbose=0 builds the statistics without printing; formatting happens in str().
    return lambda: torchinfo.summary(model, input_data=list(inputs), depth=PEER_DEPTH, device="meta", verbose=0)


def torchview_call(model: nn.Module, inputs: Inputs) -> Callable[[], object]:
    import torchview

    return lambda: torchview.draw_graph(
        model, input_data=list(inputs), expand_nested=True, depth=PEER_DEPTH, device="meta"
    )


def torchlens_call(model: nn.Module, inputs: Inputs) -> Callable[[], object]:
    import torchlens
    from torchlens.options import CaptureOptions

    # save=None: metadata only, its cheapest capture. unwrap_when_done: otherwise torch's
    # functions stay wrapped after the first call and every later contender would pay for it.
    options = CaptureOptions(unwrap_when_done=True)
    return lambda: torchlens.trace(model, list(inputs), save=None, capture=options)


@dataclass(frozen=True)
class Peer:
    """A peer tool: how to call it, on which device, and the text its whole process prints."""

    name: str
    module: str
    device: str
    call: Callable[[nn.Module, Inputs], Callable[[], object]]
    printed: Callable[[object], str]


PEERS = (
    Peer("torchinfo", "torchinfo", "meta", torchinfo_call, str),
    Peer("torchview", "torchview", "meta", torchview_call, lambda graph: graph.visual_graph.source),  # type: ignore[attr-defined]
    Peer("torchlens", "torchlens", "cpu", torchlens_call, lambda _: ""),
)


def peer_inputs(peer: Peer, size: int, batch: int) -> Inputs:
    if peer.device == "cpu":
        return reference_inputs(TORCHLENS_SIZE, TORCHLENS_BATCH, "cpu")
    return reference_inputs(size, batch, peer.device)


def sd15_model(config: dict[str, Any]) -> nn.Module:
    """A UNet2DConditionModel built on meta: no memory for its weights."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config).eval()


def sd15_inputs() -> tuple[Inputs, dict[str, torch.Tensor]]:
    """Latents (1, 4, 64, 64), a timestep, and text embeddings (1, 77, 768) as encoder_hidden_states."""
    latents = torch.empty(1, 4, 64, 64, device="meta")
    timestep = torch.zeros(1, dtype=torch.long, device="meta")
    text = torch.empty(1, 77, 768, device="meta")
    return (latents, timestep), {"encoder_hidden_states": text}
