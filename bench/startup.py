"""B1 cold start and B5 sweep: the `shapetrace` command as a whole process, as a user runs it."""

from __future__ import annotations

from measure import Samples, compare_processes, python_command
from report import Row, ratio_row, seconds_row

COLD_START_LIMIT = 1.25
"""B1: shapetrace unet at most 1.25× the time of `python -c "import torch"`, the floor of any torch tool."""
SWEEP_LIMIT_SECONDS = 10.0
SWEEP_TIMEOUT_SECONDS = 60.0
"""A sweep run past 6× its target is stopped: the figure is then '> 60 s' and the other rounds are skipped."""
PROCESS_TIMEOUT_SECONDS = 120.0
BREAK_EXIT_CODE = 1
"""shapetrace exits 1 when it found a break, which the sweep does for sizes not divisible by 8."""


def shapetrace_command(*arguments: str) -> list[str]:
    """The installed package through the current interpreter, exactly what the entry point runs."""
    return python_command("-m", "shapetrace", *arguments)


def cold_start(rounds: int) -> list[Row]:
    """B1: `shapetrace unet --size 224 --chs 1,2,4,8` against `python -c "import torch"`."""
    tool, floor = "shapetrace unet --size 224 --chs 1,2,4,8", 'python -c "import torch"'
    samples = compare_processes(
        {
            tool: shapetrace_command("unet", "--size", "224", "--chs", "1,2,4,8"),
            floor: python_command("-c", "import torch"),
        },
        rounds,
        PROCESS_TIMEOUT_SECONDS,
    )
    return [
        seconds_row("B1", tool, samples[tool]),
        seconds_row("B1", floor, samples[floor]),
        ratio_row("B1", "cold start / import torch", samples[tool], samples[floor], COLD_START_LIMIT, "≤ 1.25×"),
    ]


def sweep(rounds: int) -> list[Row]:
    """B5: the 993 sizes 32..1024 of the reference UNet, one whole process.

    A first run past twice the target settles the verdict: the other rounds are skipped to keep
    the benchmark's own run short while the sweep is slow.
    """
    name = "shapetrace sweep --sizes 32:1024 --chs 1,2,4,8"
    commands = {name: shapetrace_command("sweep", "--sizes", "32:1024", "--chs", "1,2,4,8")}
    ok_exit_codes = (0, BREAK_EXIT_CODE)
    samples = compare_processes(commands, 1, SWEEP_TIMEOUT_SECONDS, ok_exit_codes)[name]
    measure = f"{name} (993 sizes)"
    if samples.ok and samples.median > 2 * SWEEP_LIMIT_SECONDS:
        measure += ", 1 run: over twice the target"
    elif samples.ok and rounds > 1:
        rest = compare_processes(commands, rounds - 1, SWEEP_TIMEOUT_SECONDS, ok_exit_codes)[name]
        samples = Samples(samples.values + rest.values, rest.failure)
    return [seconds_row("B5", measure, samples, "< 10 s", SWEEP_LIMIT_SECONDS)]
