"""Issue 14, item 7: the cost estimates against torch.cuda.max_memory_allocated, on a lent GPU.

    python bench/cuda_cost_check.py             on CUDA: both models; prints the table for RESULTS.md
    python bench/cuda_cost_check.py --dry-run   on the CPU, tiny: the same steps, no memory read

For each model the estimates come from a meta trace with `--cost` (the model's dtype, the
inputs' shapes). The measurements are one real step on the device, each after
`reset_peak_memory_stats`, with the model and its inputs already there:

- inference: eval, no_grad, one forward; its peak is `max_memory_allocated`, which holds the
  weights, the inputs and the activations, as `inference_peak_bytes` does;
- train: the same layers (eval mode, as the trace), grad on, one forward, `mean().backward()`
  and one Adam step, whose first step makes its two moments; its peak against
  `train_peak_bytes` (weights, gradients, Adam's state, saved activations, a transient).

Within 10% is the target. Models: the reference UNet at 256² batch 8 (float32), and SD-1.5's
UNet (diffusers, random weights) in float16 at 64² latents batch 2 with 77 text tokens.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shapetrace import run_trace
from shapetrace.records import CostMode, CostOptions, Optimizer

LIMIT = 0.10


@dataclass(frozen=True)
class Model:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[str], tuple[tuple[Any, ...], dict[str, Any]]]
    """(args, kwargs) on a device; floats of the model's dtype."""


def _reference(size: int, batch: int) -> Model:
    from shapetrace import UNet

    def inputs(device: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        x = torch.randn(batch, 3, size, size) if device != "meta" else torch.empty(batch, 3, size, size)
        return (x.to(device), torch.zeros(batch, dtype=torch.long, device=device)), {}

    return Model(f"reference UNet {size}² batch {batch} float32", lambda: UNet(3, 64, (1, 2, 4, 8)), inputs)


def _sd15(size: int, batch: int, tiny: bool) -> Model:
    from diffusers import UNet2DConditionModel

    config: dict[str, Any] = {"block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768}
    if tiny:
        config = {
            "block_out_channels": (32, 64),
            "cross_attention_dim": 32,
            "norm_num_groups": 8,
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "attention_head_dim": 4,
        }
    width = int(config["cross_attention_dim"])

    def inputs(device: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        def floats(*shape: int) -> torch.Tensor:
            made = torch.empty(shape) if device == "meta" else torch.randn(shape)
            return made.to(device=device, dtype=torch.float16)

        timestep = torch.zeros(batch, dtype=torch.long, device=device)
        return (floats(batch, 4, size, size), timestep), {"encoder_hidden_states": floats(batch, 77, width)}

    name = f"SD-1.5 UNet2DConditionModel {size}² latents batch {batch} float16" + (" (tiny)" if tiny else "")
    return Model(name, lambda: UNet2DConditionModel(**config).to(torch.float16), inputs)


def _estimates(model: Model) -> tuple[int, int]:
    """(inference peak, train peak) of a meta trace with cost, Adam as the optimizer."""
    with torch.device("meta"):
        meta = model.build().eval()
    args, kwargs = model.inputs("meta")
    options = CostOptions(mode=CostMode.TRAIN, optimizer=Optimizer.ADAM)
    cost = run_trace(meta, args, kwargs, cost=options).cost
    assert cost is not None
    return cost.inference_peak_bytes, cost.train_peak_bytes


def _measured(model: Model, device: str) -> tuple[int, int]:
    """(inference peak, train peak) of one real forward, and of one forward, backward and Adam step."""
    torch.manual_seed(0)
    network = model.build().to(device).eval()
    args, kwargs = model.inputs(device)
    peaks = []
    for train in (False, True):
        optimizer = torch.optim.Adam(network.parameters()) if train else None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with torch.set_grad_enabled(train):
            output = network(*args, **kwargs)
            output = output.sample if hasattr(output, "sample") else output
            if optimizer is not None:
                output.float().mean().backward()
                optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated())
        else:
            peaks.append(0)  # the dry run reads no memory
        del output, optimizer
        network.zero_grad(set_to_none=True)
    return peaks[0], peaks[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at tiny sizes")
    dry = parser.parse_args().dry_run
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to check the steps on the CPU")
        return 2
    device = "cpu" if dry else "cuda"
    models = [_reference(32, 2), _sd15(16, 2, tiny=True)] if dry else [_reference(256, 8), _sd15(64, 2, tiny=False)]
    card = "CPU dry run" if dry else torch.cuda.get_device_name()
    print(
        f"| model ({card}, torch {torch.__version__}) | mode | estimate | measured | estimate / measured | within 10% |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    passed = True
    for model in models:
        estimates = _estimates(model)
        measured = _measured(model, device)
        for mode, estimate, actual in zip(("inference", "train"), estimates, measured, strict=True):
            ratio = estimate / actual if actual else float("nan")
            within = bool(actual) and abs(ratio - 1) <= LIMIT
            passed = passed and (within or dry)
            verdict = "yes" if within else ("n/a" if dry else "no")
            figures = f"{estimate / 1e6:,.1f} MB | {actual / 1e6:,.1f} MB | {ratio:.3f}"
            print(f"| {model.name} | {mode} | {figures} | {verdict} |")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
