"""The cost summary printed under the table of a `--cost` trace: totals, levels, memory, budget.

Pure functions from a Trace to rich renderables; nothing here computes a cost.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from shapetrace.formatting import format_bytes, format_count, format_size
from shapetrace.records import Budget, CostMode, CostSummary, LevelCost, Trace

SIDE_STYLES = {"down": "cyan", "mid": "magenta", "up": "green"}


def cost_blocks(trace: Trace) -> list[RenderableType]:
    """The totals line, the table of levels, the memory estimates and the budget verdict."""
    cost = trace.cost
    if cost is None:
        return []
    blocks: list[RenderableType] = [totals_line(cost)]
    if cost.levels:
        blocks.append(level_table(cost.levels))
    blocks += [memory_lines(cost)]
    if cost.budget is not None:
        blocks.append(budget_line(cost.budget, trace))
    return blocks


def totals_line(cost: CostSummary) -> Text:
    """FLOPs (the estimated rest apart), MACs and the parameters with their bytes by dtype."""
    dtypes = ", ".join(f"{format_bytes(nbytes)} {dtype}" for dtype, nbytes in cost.param_bytes_by_dtype)
    frozen = f", {cost.frozen_params:,} frozen" if cost.frozen_params else ""
    text = Text()
    text.append("cost  ", style="bold")
    text.append(f"{format_count(cost.flops)}FLOPs")
    text.append(f" (+{format_count(cost.other_flops)} other, estimated) · {format_count(cost.macs)} MACs · ")
    text.append(f"params {cost.params:,} ({dtypes or '0 B'}){frozen}")
    return text


def level_table(levels: tuple[LevelCost, ...]) -> Table:
    """One row per level of the U: its size, FLOPs, bytes, parameters, held skips and attention."""
    # rich's own Table: a dozen rows at most, and no footer.
    table = Table(title="cost per level of the U")
    for header in ("level", "size", "FLOPs", "activations", "saved", "params", "skips held", "attention"):
        table.add_column(header, justify="left" if header == "level" else "right", no_wrap=True)
    for level in levels:
        attention = ""
        if level.attention_tokens:
            attention = f"{level.attention_tokens:,} tok · {format_count(level.attention_flops)}"
        name = level.side if level.side == "mid" else f"{level.side} {level.level}"
        table.add_row(
            Text(name, style=SIDE_STYLES.get(level.side, "")),
            format_size(level.size),
            format_count(level.flops),
            format_bytes(level.activation_bytes),
            format_bytes(level.saved_bytes),
            f"{level.params:,}",
            format_bytes(level.skip_bytes) if level.skip_bytes else "",
            attention,
        )
    return table


def memory_lines(cost: CostSummary) -> Text:
    """Both peaks with what each adds up."""
    state = cost.param_bytes + cost.buffer_bytes
    options = cost.options
    text = Text()
    marks = {CostMode.INFERENCE: "", CostMode.TRAIN: ""}
    marks[options.mode] = " ◂"
    text.append("inference peak ", style="bold")
    text.append(
        f"{format_bytes(cost.inference_peak_bytes)} = parameters and buffers {format_bytes(state)}"
        f" + live activations {format_bytes(cost.activation_peak_bytes)} (eval, no_grad){marks[CostMode.INFERENCE]}\n"
    )
    text.append("train peak     ", style="bold")
    checkpointing = ", checkpointed per block" if options.checkpointing else ""
    text.append(
        f"{format_bytes(cost.train_peak_bytes)} = parameters and buffers {format_bytes(state)}"
        f" + gradients {format_bytes(cost.gradient_bytes)} + {options.optimizer.value} state"
        f" {format_bytes(cost.optimizer_bytes)} + saved activations {format_bytes(cost.saved_bytes)}{checkpointing}"
        f" + largest transient {format_bytes(cost.transient_bytes)}{marks[CostMode.TRAIN]}"
    )
    return text


def budget_line(budget: Budget, trace: Trace) -> Text:
    """The verdict, with the largest batch at this size and the largest size at this batch."""
    size = next((shape[2:] for shape in trace.inputs if len(shape) >= 3), ())
    batch = next((shape[0] for shape in trace.inputs if len(shape) >= 3), None)
    text = Text()
    verdict = "✓ fits" if budget.fits else "✗ does not fit"
    text.append(
        f"budget {format_bytes(budget.bytes)} ({budget.mode.value}): {verdict}",
        style="bold green" if budget.fits else "bold red",
    )
    at_size = f" at {format_size(size)}" if size else ""
    at_batch = f" at batch {batch}" if batch is not None else ""
    largest_batch = f"{budget.max_batch:,}" if budget.max_batch else "none"
    largest_size = f"{budget.max_size:,}" if budget.max_size else "none"
    text.append(f" · largest batch {largest_batch}{at_size} · largest size {largest_size}{at_batch}")
    return text
