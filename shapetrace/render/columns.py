"""The table's columns by name, as `--columns` chooses them (like torchinfo's `col_names`).

The `#` and `layer` columns always show; the rest are listed by name, in order:

- shapes: `type`, `input`, `output`, `change`, `skip`, `params`;
- cost (a `--cost` trace): `flops`, `other_flops`, `macs`, `output_bytes`, `saved_bytes`,
  `trainable`, `frozen`, `param_bytes`, `kernel`, `dtype`, `attention`.

A cost column of a trace without cost shows "—".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shapetrace.analysis.placement import main_input
from shapetrace.formatting import compact_shape, describe_change, format_bytes, format_count, format_extents
from shapetrace.records import LayerCost, LayerRecord, Shape, Trace
from shapetrace.render.fast_table import Justify, Overflow

Cell = Callable[[Trace, LayerRecord, Sequence[str]], str]
"""(trace, row, the row's skip notes) -> the cell's text."""


@dataclass(frozen=True, slots=True)
class TableColumn:
    header: str
    cell: Cell
    footer: Callable[[Trace], str] = lambda trace: ""
    justify: Justify = "left"
    overflow: Overflow = "ellipsis"
    no_wrap: bool = False


def _first(shapes: tuple[Shape, ...]) -> Shape:
    return shapes[0] if shapes else ()


def _change(trace: Trace, row: LayerRecord, notes: Sequence[str]) -> str:
    change = describe_change(main_input(row), _first(row.outputs))
    return change.replace("channels ", "ch ").replace("size ", "")


def _cost(value: Callable[[LayerCost], str]) -> Cell:
    """A cell read from the row's LayerCost; "—" in a trace without cost."""

    def cell(trace: Trace, row: LayerRecord, notes: Sequence[str]) -> str:
        if trace.cost is None or row.index >= len(trace.cost.layers):
            return "—"
        return value(trace.cost.layers[row.index])

    return cell


def _total(value: Callable[[LayerCost], int], formatter: Callable[[int], str]) -> Callable[[Trace], str]:
    """The footer: the model's own value (its call includes every other)."""
    return lambda trace: formatter(value(trace.cost.layers[0])) if trace.cost and trace.cost.layers else ""


def _count_column(header: str, value: Callable[[LayerCost], int], formatter: Callable[[int], str]) -> TableColumn:
    return TableColumn(
        header,
        _cost(lambda cost: formatter(value(cost)) if value(cost) else "—"),
        footer=_total(value, formatter),
        justify="right",
        no_wrap=True,
    )


def _attention(cost: LayerCost) -> str:
    if not cost.attention_tokens:
        return ""
    return f"{cost.attention_tokens:,} tok · {format_count(cost.attention_flops)}"


COLUMNS: dict[str, TableColumn] = {
    "type": TableColumn("type", lambda trace, row, notes: row.type, overflow="fold"),
    "input": TableColumn(
        "input",
        lambda trace, row, notes: compact_shape(main_input(row)),
        footer=lambda trace: compact_shape(_first(trace.inputs)),
        no_wrap=True,
    ),
    "output": TableColumn(
        "output",
        lambda trace, row, notes: compact_shape(_first(row.outputs)) if row.outputs else "—",
        footer=lambda trace: compact_shape(_first(trace.outputs)),
        no_wrap=True,
    ),
    "change": TableColumn("change", _change),
    "skip": TableColumn("skip", lambda trace, row, notes: "\n".join(notes)),
    "params": TableColumn(
        "params",
        lambda trace, row, notes: f"{row.params:,}",
        footer=lambda trace: f"{trace.total_params:,}",
        justify="right",
        no_wrap=True,
    ),
    "flops": _count_column("FLOPs", lambda cost: cost.flops, format_count),
    "other_flops": _count_column("other FLOPs", lambda cost: cost.other_flops, format_count),
    "macs": _count_column("MACs", lambda cost: cost.macs, format_count),
    "output_bytes": TableColumn(
        "out bytes", _cost(lambda cost: format_bytes(cost.output_bytes)), justify="right", no_wrap=True
    ),
    "saved_bytes": _count_column("saved", lambda cost: cost.saved_bytes, format_bytes),
    "trainable": _count_column("trainable", lambda cost: cost.trainable_params, lambda count: f"{count:,}"),
    "frozen": _count_column("frozen", lambda cost: cost.frozen_params, lambda count: f"{count:,}"),
    "param_bytes": _count_column("param bytes", lambda cost: cost.param_bytes, format_bytes),
    "kernel": TableColumn("kernel", _cost(lambda cost: format_extents(cost.kernel)), no_wrap=True),
    "dtype": TableColumn("dtype", _cost(lambda cost: cost.dtype), no_wrap=True),
    "attention": TableColumn("attention", _cost(_attention), justify="right", no_wrap=True),
}
DEFAULT_COLUMNS = ("type", "input", "output", "change", "skip", "params")
COST_COLUMNS = ("type", "output", "skip", "params", "flops", "output_bytes", "saved_bytes")
"""The columns of a `--cost` trace when `--columns` chooses none."""


def chosen_columns(trace: Trace, columns: Sequence[str] | None) -> list[TableColumn]:
    """The columns to show: `columns` by name, else the defaults for this trace.

    Raises:
        ValueError: naming an unknown column and the known ones.
    """
    names = columns if columns is not None else (COST_COLUMNS if trace.cost is not None else DEFAULT_COLUMNS)
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown column {unknown[0]!r}: expected some of {', '.join(COLUMNS)}")
    return [COLUMNS[name] for name in names]
