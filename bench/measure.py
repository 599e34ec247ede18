"""Timing and memory primitives: alternated rounds, whole processes, medians, paired ratios.

Every contender of a comparison runs once per round, in the same order (A B A B ...), so a
drift of the machine (another job starting, the CPU clocking down) hits all of them alike.
Ratios are the median of the per-round ratios, which cancels drift better than a ratio of
medians taken minutes apart.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

TIME_COMMAND = "/usr/bin/time"
"""GNU time, which reads a child's peak RSS without counting this process's."""
MIN_SAMPLE_SECONDS = 0.3
"""An in-process sample repeats a fast call until it lasts this long: perf_counter noise stays < 1 %."""


class MeasurementError(Exception):
    """A contender could not be measured: it raised, exited with an error or ran past its time limit."""


@dataclass
class Samples:
    """What one contender gave over the rounds: seconds (or bytes) per round, or why it stopped."""

    values: list[float] = field(default_factory=list)
    failure: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.values)


@dataclass(frozen=True)
class ProcessRun:
    seconds: float
    peak_rss_bytes: int | None


def alternate(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, Samples]:
    """Run every contender once per round, in order; a contender that fails is dropped from later rounds."""
    results = {name: Samples() for name in contenders}
    for _ in range(rounds):
        for name, measure_once in contenders.items():
            samples = results[name]
            if samples.failure is not None:
                continue
            try:
                samples.values.append(measure_once())
            except MeasurementError as failure:
                samples.failure = str(failure)
    return results


def paired_ratio(numerator: Samples, denominator: Samples) -> float:
    """Median of the per-round ratios of two contenders measured in the same alternated rounds."""
    return statistics.median(a / b for a, b in zip(numerator.values, denominator.values, strict=False))


def run_process(
    argv: Sequence[str], timeout_seconds: float, ok_exit_codes: Sequence[int] = (0,), *, memory: bool = False
) -> ProcessRun:
    """Run a whole process with stdout discarded: its wall time, and its peak RSS when `memory`.

    The peak RSS is read by GNU time, not from os.wait4: Linux keeps a process's peak across
    exec, so a child forked from this benchmark (hundreds of MB once B3 has run) would report
    at least the benchmark's own size. GNU time is small, and so is what it forks.
    """
    with tempfile.TemporaryFile() as error_file, tempfile.NamedTemporaryFile("r") as memory_file:
        command = [TIME_COMMAND, "-f", "%M", "-o", memory_file.name, *argv] if memory else list(argv)
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=error_file, env=_child_environment())
        try:
            exit_code = process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise MeasurementError(f"> {timeout_seconds:.0f} s (stopped)") from None
        seconds = time.perf_counter() - started
        if exit_code not in ok_exit_codes:
            raise MeasurementError(f"exit {exit_code}: {_last_line(error_file)}")
        # GNU time writes the KiB last, after "Command exited with non-zero status 1" if any.
        peak = int(memory_file.read().split()[-1]) * 1024 if memory else None
    return ProcessRun(seconds, peak)


def _child_environment() -> dict[str, str]:
    # Output goes to /dev/null, so rich draws no colours, unless FORCE_COLOR overrides that.
    environment = dict(os.environ)
    environment.pop("FORCE_COLOR", None)
    return environment


def _last_line(error_file: IO[bytes]) -> str:
    error_file.seek(0)
    lines = error_file.read().decode(errors="replace").strip().splitlines()
    return lines[-1][:160] if lines else "no message"


def process_seconds(argv: Sequence[str], timeout_seconds: float, ok_exit_codes: Sequence[int] = (0,)) -> float:
    return run_process(argv, timeout_seconds, ok_exit_codes).seconds


def process_peak_rss(argv: Sequence[str], timeout_seconds: float, ok_exit_codes: Sequence[int] = (0,)) -> float:
    peak = run_process(argv, timeout_seconds, ok_exit_codes, memory=True).peak_rss_bytes
    assert peak is not None  # memory=True always reads it
    return float(peak)


def memory_measurable() -> bool:
    return Path(TIME_COMMAND).exists()


def python_command(*arguments: str) -> list[str]:
    """The current interpreter, so children see the same installed packages."""
    return [sys.executable, *arguments]


def seconds_per_call(function: Callable[[], object], repeats: int) -> float:
    """Mean seconds of `repeats` back-to-back calls; a raised exception becomes MeasurementError."""
    try:
        started = time.perf_counter()
        for _ in range(repeats):
            function()
        return (time.perf_counter() - started) / repeats
    except Exception as error:  # a peer that fails is reported, not fatal to the benchmark
        raise MeasurementError(f"{type(error).__name__}: {str(error)[:120]}") from error


def warm_up(function: Callable[[], object]) -> float:
    """Pay the first-call costs (lazy imports, kernel registration); the seconds of a warm call.

    A call slower than a second is not repeated: its first-call costs are lost in the noise.
    """
    elapsed = seconds_per_call(function, 1)
    return elapsed if elapsed > 1 else seconds_per_call(function, 1)


def repeats_for(call_seconds: float) -> int:
    """How many calls make one sample last at least MIN_SAMPLE_SECONDS."""
    return max(1, math.ceil(MIN_SAMPLE_SECONDS / max(call_seconds, 1e-6)))


def compare_processes(
    commands: dict[str, Sequence[str]],
    rounds: int,
    timeout_seconds: float,
    ok_exit_codes: Sequence[int] = (0,),
    measure: Callable[..., float] = process_seconds,
) -> dict[str, Samples]:
    """Alternated whole-process runs: seconds by default, or `measure=process_peak_rss` for bytes."""
    contenders = {
        name: functools.partial(measure, command, timeout_seconds, ok_exit_codes) for name, command in commands.items()
    }
    return alternate(contenders, rounds)


def compare_calls(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, Samples]:
    """Alternated in-process calls after a warm-up; a fast call is repeated within its sample."""
    repeated: dict[str, Callable[[], float]] = {}
    failures: dict[str, Samples] = {}
    for name, function in contenders.items():
        try:
            repeats = repeats_for(warm_up(function))
        except MeasurementError as failure:
            failures[name] = Samples(failure=str(failure))
            continue
        repeated[name] = functools.partial(seconds_per_call, function, repeats)
    measured = alternate(repeated, rounds)
    return {name: measured.get(name) or failures[name] for name in contenders}
