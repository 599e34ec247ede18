"""B4 scale: an SD-1.5-sized UNet traced on meta, and memory that stays flat in the input size."""

from __future__ import annotations

import importlib
import importlib.util
import json
import time

from measure import (
    TIME_COMMAND,
    Samples,
    alternate,
    compare_calls,
    compare_processes,
    memory_measurable,
    process_peak_rss,
    run_process,
)
from report import FAIL, Row, bytes_text, ratio_row, seconds_row, seconds_text, unavailable, verdict
from startup import PROCESS_TIMEOUT_SECONDS, shapetrace_command

SD15_CONFIG: dict[str, object] = {
    "block_out_channels": (320, 640, 1280, 1280),
    "cross_attention_dim": 768,
    "sample_size": 64,
}
"""Stable Diffusion 1.5's UNet: about 860 M parameters, text embeddings of width 768, 64×64 latents."""
SD15_TRACE_LIMIT_SECONDS = 2.0
SD15_RSS_LIMIT_BYTES = 1e9
FLAT_MEMORY_LIMIT = 1.05
"""'The same peak RSS' at 4096² and 64², within 5 % for the allocator's and the import order's noise."""
MEMORY_ROUNDS = 3
"""Peak RSS hardly varies between runs; three rounds keep the whole benchmark under ten minutes."""


def scale(rounds: int) -> list[Row]:
    memory_rounds = min(rounds, MEMORY_ROUNDS)
    if importlib.util.find_spec("diffusers") is None:
        rows = [unavailable("B4", "SD-1.5 UNet2DConditionModel", "diffusers not installed")]
    else:
        rows = _sd15_in_process(rounds)
        rows += _sd15_whole_process(memory_rounds) if memory_measurable() else []
    if not memory_measurable():
        return [*rows, unavailable("B4", "whole-process peak RSS", f"{TIME_COMMAND} not installed")]
    return [*rows, *_flat_memory(memory_rounds)]


def _sd15_in_process(rounds: int) -> list[Row]:
    import workloads

    started = time.perf_counter()
    importlib.import_module("diffusers.models.unets.unet_2d_condition")
    imported = time.perf_counter()
    model = workloads.sd15_model(SD15_CONFIG)
    built = time.perf_counter()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    args, keywords = workloads.sd15_inputs()
    trace = workloads.shapetrace_call(model, args, keywords)
    calls = len(trace().layers)
    samples = compare_calls({"trace": trace}, rounds)
    where = f"SD-1.5 UNet2DConditionModel ({parameters / 1e6:.0f} M parameters, {calls} calls)"
    return [
        Row("B4", "import diffusers' UNet2DConditionModel, once in this process", seconds_text(imported - started)),
        Row("B4", f"{where}: build on meta, once", seconds_text(built - imported)),
        seconds_row(
            "B4", f"{where}: shapetrace.trace, in-process", samples["trace"], "< 2 s", SD15_TRACE_LIMIT_SECONDS
        ),
    ]


def _sd15_command() -> list[str]:
    return shapetrace_command(
        "trace",
        "diffusers:UNet2DConditionModel",
        "--init",
        json.dumps(SD15_CONFIG),
        "--input",
        "1,4,64,64",
        "--timestep",
        "--kw",
        "encoder_hidden_states=1,77,768",
    )


def _sd15_whole_process(rounds: int) -> list[Row]:
    """Peak RSS and seconds of `shapetrace trace diffusers:UNet2DConditionModel ...`, the command a user runs."""
    command = _sd15_command()
    seconds = Samples()

    def peak_rss() -> float:
        run = run_process(command, PROCESS_TIMEOUT_SECONDS, memory=True)
        seconds.values.append(run.seconds)
        return float(run.peak_rss_bytes or 0)

    memory = alternate({"sd15": peak_rss}, rounds)["sd15"]
    seconds.failure = memory.failure
    where = "SD-1.5: shapetrace trace diffusers:UNet2DConditionModel, whole process"
    return [
        seconds_row("B4", f"{where}: seconds (import, build, trace, print)", seconds),
        _memory_row(f"{where}: peak RSS", memory, SD15_RSS_LIMIT_BYTES),
    ]


def _flat_memory(rounds: int) -> list[Row]:
    """Peak RSS of the reference UNet at 4096×4096 and at 64×64, batch 64, alternated."""
    commands = {size: shapetrace_command("unet", "--size", str(size), "--batch", "64") for size in ("4096", "64")}
    memory = compare_processes(commands, rounds, PROCESS_TIMEOUT_SECONDS, measure=process_peak_rss)
    rows = [_memory_row(f"reference UNet {size}×{size} b64, whole-process peak RSS", memory[size]) for size in commands]
    ratio = ratio_row(
        "B4", "peak RSS 4096² / 64²", memory["4096"], memory["64"], FLAT_MEMORY_LIMIT, "≤ 1.05× (equal)", bytes_text
    )
    return [*rows, ratio]


def _memory_row(measure: str, memory: Samples, limit_bytes: float | None = None) -> Row:
    target = f"< {limit_bytes / 1e9:.0f} GB" if limit_bytes is not None else ""
    if not memory.ok:
        return Row("B4", measure, f"failed: {memory.failure}", target, FAIL)
    checked = verdict(memory.median, limit_bytes, strict=True) if limit_bytes is not None else ""
    return Row("B4", measure, bytes_text(memory.median), target, checked)
