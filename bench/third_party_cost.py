"""`--cost` on real third-party UNets against torch's own measurements.

    python -m bench.third_party_cost            every model of bench/third_party*.py that is installed
    python -m bench.third_party_cost monai      only models whose name contains "monai"

(from the repository root). For each model of `bench.third_party` that aligns, the meta trace
with cost is compared with:

- FLOPs: torch.utils.flop_counter.FlopCounterMode on the same model on meta;
- saved bytes: what saved_tensors_hooks records in a real CPU forward with grad, in eval mode
  (the trace's mode), each storage once, parameters left out (tests/fixtures/cost_oracles.py),
  with oneDNN off: its float32 LSTM, torch's CPU default, keeps a workspace of its own layout
  where the estimate counts what ATen's own cells keep (docs/guide.md says so);
- inference peak: the CPU allocator's live bytes at op boundaries under no_grad, from
  torch.profiler (the same fixture).

A model built on meta gets random CPU weights (its floating buffers set to 1); one built on the
CPU is copied as it is. Each line gives the three pairs and says which differ.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.third_party import Case, installed_cases
from shapetrace import run_trace
from shapetrace.records import CostOptions
from shapetrace.tracing.closures import deep_copy
from tests.fixtures.cost_oracles import profiled_peak, saved_bytes


def _like(value: Any, device: str) -> Any:
    """`value` with each tensor replaced by one of its shape and dtype on `device` (random floats on the CPU)."""
    if isinstance(value, torch.Tensor):
        if device == "meta":
            return torch.empty_like(value, device="meta")
        if value.is_floating_point():
            return torch.randn(value.shape).to(value.dtype)
        return torch.zeros_like(value, device="cpu")
    if isinstance(value, (list, tuple)):
        return type(value)(_like(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _like(item, device) for key, item in value.items()}
    return value


def _models(case: Case) -> tuple[nn.Module, nn.Module]:
    """The model on meta and a CPU copy with weights, both in eval mode."""
    torch.manual_seed(0)
    model = case.build()
    on_cpu = next(model.parameters()).device.type == "cpu"
    # closures.deep_copy: a forward that closes over its layers calls the copy's (a-unet).
    meta_model = deep_copy(model).to("meta") if on_cpu else model
    cpu_model = deep_copy(model) if on_cpu else deep_copy(meta_model).to_empty(device="cpu")
    if not on_cpu:
        with torch.no_grad():
            for parameter in cpu_model.parameters():
                parameter.normal_(0, 0.02)
            for buffer in cpu_model.buffers():
                if buffer.is_floating_point():
                    buffer.fill_(1.0)
    return meta_model.eval(), cpu_model.eval()


def check(case: Case) -> bool:
    meta_model, cpu_model = _models(case)
    args, kwargs = case.inputs(case.size)
    meta_args, meta_kwargs = _like(args, "meta"), _like(kwargs, "meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model(*meta_args, **meta_kwargs)
    cost = run_trace(meta_model, meta_args, meta_kwargs, cost=CostOptions()).cost
    assert cost is not None
    cpu_args, cpu_kwargs = _like(args, "cpu"), _like(kwargs, "cpu")
    with warnings.catch_warnings(), torch.backends.mkldnn.flags(enabled=False):
        saved = saved_bytes(cpu_model, cpu_args, cpu_kwargs)
    peak, _ = profiled_peak(cpu_model, cpu_args, cpu_kwargs)
    pairs = {
        "FLOPs": (cost.flops, counter.get_total_flops()),
        "saved": (cost.saved_bytes, saved),
        "peak": (cost.activation_peak_bytes, peak),
    }
    differ = [name for name, (estimate, measured) in pairs.items() if estimate != measured]
    figures = " · ".join(f"{name} {estimate:,} / {measured:,}" for name, (estimate, measured) in pairs.items())
    print(f"{case.name}: {figures} (estimate / torch) [{'differ: ' + ', '.join(differ) if differ else 'equal'}]")
    return not differ


def main(selection: str = "") -> int:
    warnings.simplefilter("ignore")  # deprecation notices of the third-party packages
    chosen = [case for case in installed_cases(selection) if case.aligned]
    results = []
    for case in chosen:
        try:
            results.append(check(case))
        except Exception as error:  # noqa: BLE001 - one model's failure is reported, the others still run
            print(f"{case.name}: could not be measured: {type(error).__name__}: {str(error).splitlines()[0][:150]}")
            results.append(False)
    print(f"\n{sum(results)} of {len(results)} models: estimates equal torch's measurements")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
