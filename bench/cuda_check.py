"""One short CUDA run: trace vs plain forward of the reference UNet, and side-effect checks.

Run by hand on a machine with a GPU: `python bench/cuda_check.py`. Prints one table; the
figures go to bench/RESULTS.md with the card's name.
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import time

import torch

from shapetrace import UNet, trace

CASES = [(224, 8), (512, 4)]
REPEATS = 15
ROUNDS = 3


def _timed(function: object) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    function()  # type: ignore[operator]
    torch.cuda.synchronize()
    return time.perf_counter() - start


def _compare(model: UNet, x: torch.Tensor, t: torch.Tensor) -> tuple[float, float]:
    """Median seconds of a plain no_grad forward and of trace(), alternated to cancel drift."""

    def plain() -> None:
        with torch.no_grad():
            model(x, t)

    def traced() -> None:
        trace(model, x, t)

    for _ in range(3):
        plain()
        traced()
    plain_times, trace_times = [], []
    for _ in range(REPEATS):
        plain_times.append(_timed(plain))
        trace_times.append(_timed(traced))
    return statistics.median(plain_times), statistics.median(trace_times)


def _profile(model: UNet, device: torch.device) -> None:
    """Where a trace spends its Python time on this card (top functions by own time)."""
    import cProfile
    import pstats

    x = torch.randn(8, 3, 224, 224, device=device)
    t = torch.randint(0, 1000, (8,), device=device)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        trace(model, x, t)
    torch.cuda.synchronize()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    device = torch.device("cuda")
    print(f"card: {torch.cuda.get_device_name(0)} · torch {torch.__version__}")
    model = UNet().to(device).eval()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    print(f"{'input':>14} {'plain ms':>9} {'trace ms':>9} {'ratio':>6}")
    for size, batch in CASES:
        x = torch.randn(batch, 3, size, size, device=device)
        t = torch.randint(0, 1000, (batch,), device=device)
        for _ in range(ROUNDS):  # the card's run-to-run noise is large: each case three times
            plain, traced = _compare(model, x, t)
            print(f"{size:>5}x{size:<4} b{batch:<2} {plain * 1e3:9.2f} {traced * 1e3:9.2f} {traced / plain:6.3f}")
    result = trace(model, torch.randn(2, 3, 64, 64, device=device), torch.tensor([1, 2], device=device))
    with torch.device("meta"):
        twin = UNet().eval()
    on_meta = trace(twin, torch.empty(2, 3, 64, 64, device="meta"), torch.empty(2, dtype=torch.long, device="meta"))
    print(f"cuda records equal meta records: {dataclasses.replace(result, device='meta') == on_meta}")
    print(f"function modes left: {torch._C._len_torch_function_stack()}")
    same = all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    print(f"trace ok={result.ok} device={result.device} skips={len(result.skips)} state identical={same} hooks={hooks}")
    with torch.no_grad():
        t_a = model(torch.ones(1, 3, 32, 32, device=device), torch.tensor([1], device=device))
        t_b = model(torch.ones(1, 3, 32, 32, device=device), torch.tensor([900], device=device))
    print(f"changing t changes the output: {not torch.allclose(t_a, t_b)}")
    _profile(model, device)
    command = [sys.executable, "-m", "shapetrace", "unet", "--device", "cuda", "--size", "64", "--format", "json"]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    print(f"shapetrace unet --device cuda: exit {completed.returncode} {completed.stderr.strip()[:200]}")


if __name__ == "__main__":
    main()
