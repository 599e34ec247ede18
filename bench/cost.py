"""B7 cost: what `--cost` adds to a meta trace (target: at most 20%), and what a budget search costs.

In-process, alternated: `shapetrace.trace` against `run_trace(..., cost=CostOptions())` on the
same model and inputs, for the reference UNet at 224² batch 2 and for SD-1.5's UNet (when
diffusers is installed). Then whole processes: `shapetrace unet` with and without `--cost`,
and with `--budget 24GB`, which traces a few more times on meta.
"""

from __future__ import annotations

import importlib.util

from measure import compare_calls, compare_processes
from report import Row, ratio_row, seconds_row
from scale import SD15_CONFIG
from startup import PROCESS_TIMEOUT_SECONDS, shapetrace_command

COST_LIMIT = 1.2
"""`--cost` may add at most 20% to a meta trace."""


def cost(rounds: int) -> list[Row]:
    import workloads

    from shapetrace.models.unet import UNet

    model = workloads.reference_model(UNet, "meta")
    rows = _in_process("reference UNet, 224×224 b2", model, workloads.reference_inputs(224, 2, "meta"), {}, rounds)
    if importlib.util.find_spec("diffusers") is not None:
        args, keywords = workloads.sd15_inputs()
        rows += _in_process("SD-1.5 UNet, 64×64 latents b1", workloads.sd15_model(SD15_CONFIG), args, keywords, rounds)
    return rows + _whole_process(rounds)


def _in_process(
    where: str, model: object, args: tuple[object, ...], keywords: dict[str, object], rounds: int
) -> list[Row]:
    import workloads

    from shapetrace.api import run_trace
    from shapetrace.records import CostOptions

    samples = compare_calls(
        {
            "trace": workloads.shapetrace_call(model, args, keywords),  # type: ignore[arg-type]
            "cost": lambda: run_trace(model, args, keywords, cost=CostOptions()),  # type: ignore[arg-type]
        },
        rounds,
    )
    return [
        seconds_row("B7", f"shapetrace.trace, meta ({where})", samples["trace"]),
        seconds_row("B7", f"run_trace(cost=CostOptions()), meta ({where})", samples["cost"]),
        ratio_row("B7", f"cost / trace ({where})", samples["cost"], samples["trace"], COST_LIMIT, "≤ 1.2×"),
    ]


def _whole_process(rounds: int) -> list[Row]:
    base = shapetrace_command("unet", "--size", "224", "--chs", "1,2,4,8")
    samples = compare_processes(
        {"plain": base, "cost": [*base, "--cost"], "budget": [*base, "--cost", "--budget", "24GB"]},
        rounds,
        PROCESS_TIMEOUT_SECONDS,
    )
    return [
        seconds_row("B7", "shapetrace unet --size 224, whole process", samples["plain"]),
        seconds_row("B7", "shapetrace unet --size 224 --cost, whole process", samples["cost"]),
        seconds_row("B7", "shapetrace unet --size 224 --cost --budget 24GB, whole process", samples["budget"]),
        ratio_row("B7", "--cost / plain, whole process", samples["cost"], samples["plain"], None),
    ]
